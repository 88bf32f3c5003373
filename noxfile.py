"""Developer sessions: `nox` runs lint, typecheck and tests; bench, demo, examples on demand."""

from __future__ import annotations

import nox

nox.needs_version = ">=2025.2.9"
nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
EXTRAS = ".[sqlite,postgres,cli]"


def _group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (PostgreSQL tests skip unless a server answers)."""
    session.install("-e", EXTRAS, *_group("test"))
    session.run("pytest", *session.posargs)


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
