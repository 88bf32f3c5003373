"""Developer sessions: `nox` runs lint, typecheck and tests; bench, demo, examples on demand."""

from __future__ import annotations

import os

import nox

nox.needs_version = ">=2025.2.9"
nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
EXTRAS = ".[postgres,cli,http,otel]"


def _group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (PostgreSQL tests skip unless a server answers)."""
    session.install("-e", EXTRAS, *_group("test"))
    session.run("pytest", *session.posargs)


@nox.session(python=["3.12", "3.13"], default=False)
def compat(session: nox.Session) -> None:
    """The test suite on the newer Pythons pyproject.toml promises (CI runs it too).

    Without the fault suite (tests/faults): it runs once, under ``tests``.
    """
    session.install("-e", EXTRAS, *_group("test"))
    session.run("pytest", "-m", "not faults", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*_group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, tests, examples and benchmarks."""
    session.install("-e", EXTRAS, *_group("test"), *_group("typecheck"))
    session.run("mypy", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job end to end: a server on SQLite and a batch of operations awaited."""
    session.install("-e", ".[cli]")
    session.run("lro-async", "demo", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: print tables and write JSON to benchmarks/results/."""
    session.install("-e", EXTRAS, *_group("test"), *_group("bench"))
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(default=False)
def examples(session: nox.Session) -> None:
    """Run every example once."""
    session.install("-e", EXTRAS, *_group("test"))
    session.run("pytest", "tests/test_examples.py", *session.posargs)


@nox.session(default=False)
def proto(session: nox.Session) -> None:
    """Regenerate the modules and stubs of demo.proto (lro_async/demo) and watch.proto (v1).

    grpcio-tools 1.71 makes gencode for protobuf 5.29+, so lro_async keeps working with
    protobuf 5, 6 and 7 runtimes; newer tools would raise that floor.
    """
    session.install("grpcio-tools==1.71.*", "mypy-protobuf==3.6.*", "googleapis-common-protos")
    site = session.run(
        "python",
        "-c",
        "import google.longrunning, os; print(os.path.dirname(google.longrunning.__path__[0]))",
        silent=True,
    )
    assert isinstance(site, str)
    google = site.strip().splitlines()[-1]
    include = session.create_tmp()
    # googleapis-common-protos ships google/longrunning/operations.proto as operations_proto.proto
    # (its descriptor is still registered as operations.proto): give protoc the canonical path.
    session.run(
        "python",
        "-c",
        "import os, shutil, sys; d = os.path.join(sys.argv[2], 'google', 'longrunning');"
        "os.makedirs(d, exist_ok=True);"
        "shutil.copy(os.path.join(sys.argv[1], 'longrunning', 'operations_proto.proto'),"
        " os.path.join(d, 'operations.proto'))",
        google,
        include,
    )
    session.run(
        "python",
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={include}",
        f"--proto_path={os.path.dirname(google)}",
        "--proto_path=.",
        "--python_out=.",
        "--grpc_python_out=.",
        "--mypy_out=.",
        "--mypy_grpc_out=.",
        "lro_async/demo/demo.proto",
        "lro_async/v1/watch.proto",
    )
