"""A table of the mistakes operators make: each is one line on stderr and a documented code.

Most fail at the parser or while checking files, before anything connects or binds, so
they run in-process through ``lro_async.cli.main`` (SystemExit carries the exit code,
capsys the lines). The few that need a process of their own (a blocked import) run as
subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lro_async.cli import main

from .pki import Files

pytestmark = pytest.mark.timeout(60)

CLI = [sys.executable, "-m", "lro_async"]
GET = ["get", "operations/x", "--target", "127.0.0.1:1", "--rpc-timeout", "1"]
SERVE = ["serve", "--port", "0", "--store", "memory"]

# (arguments, exit code, a piece of the one line)
MISTAKES: list[tuple[list[str], int, str]] = [
    # ports and addresses
    (["serve", "--port", "70000"], 2, "70000 is not a port"),
    (["serve", "--port", "-5"], 2, "-5 is not a port"),
    (["serve", "--port", "http"], 2, "'http' is not a port"),
    (["serve", "--http-port", "65536"], 2, "65536 is not a port"),
    (["serve", "--port", "0", "--host", "10.255.255.1", "--store", "memory"], 4, "not an address"),
    (["get", "operations/x", "--target", "localhost"], 2, "is not HOST:PORT"),
    (["get", "operations/x", "--target", "127.0.0.1:0"], 2, "is not HOST:PORT"),
    (["get", "operations/x", "--target", "127.0.0.1:99999"], 2, "is not HOST:PORT"),
    (["list", "--target", "http://127.0.0.1:50051"], 2, "is not HOST:PORT"),
    # numbers
    (["serve", "--grace", "-1"], 2, "-1 is not a number of seconds >= 0"),
    (["serve", "--grace", "nan"], 2, "nan is not a number of seconds"),
    (["serve", "--lease", "0"], 2, "0 is not a number of seconds > 0"),
    (["list", "--rpc-timeout", "0"], 2, "0 is not a number of seconds > 0"),
    (["get", "operations/x", "--rpc-timeout", "-3"], 2, "is not a number of seconds > 0"),
    (["wait", "operations/x", "--timeout", "-1"], 2, "is not a number of seconds >= 0"),
    (["wait", "operations/x", "--timeout", "soon"], 2, "'soon' is not a number of seconds"),
    (["demo", "--operations", "0"], 2, "0 is not a count from 1 to 1000"),
    (["demo", "--operations", "1001"], 2, "1001 is not a count from 1 to 1000"),
    (["demo", "--seconds", "0"], 2, "0 is not a number of seconds from 0.1 to 600"),
    (["list", "--page-size", "0"], 2, "0 is not a page size"),
    (["list", "--page-size", "5000"], 2, "5000 is not a page size"),
    (["list", "--limit", "-1"], 2, "-1 is not a count >= 0"),
    (["start", "sleep", "--seconds", "-1"], 2, "-1 is not a number of seconds"),
    (["start", "sleep", "--steps", "0"], 2, "0 is not a count from 1 to 1000"),
    (["start", "sleep", "--fail", "0"], 2, "0 is not a google.rpc.Code"),
    (["start", "export", "--rows", "0"], 2, "0 is not a count from 1 to 10,000,000"),
    # names, parents, filters
    (["get", "not-an-operation"], 2, "is not an operation name"),
    (["get", ""], 2, "the operation name is empty"),
    (["wait", "projects/p/operations"], 2, "is not an operation name"),
    (["cancel", "operations/a b"], 2, "is not an operation name"),
    (["delete", "x" * 600], 2, "the limit is 512"),
    (["list", "--filter", "done = maybe"], 2, "invalid filter"),
    (["list", "--filter", "colour = red"], 2, "invalid filter"),
    (["list", "--parent", "projects//p"], 2, "is not a parent"),
    (["start", "sleep", "--parent", "a b"], 2, "is not a parent"),
    # commands and options
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ([], 2, "the following arguments are required: COMMAND"),
    (["get"], 2, "the following arguments are required: name"),
    (["start"], 2, "the following arguments are required: KIND"),
    (["list", "--colour"], 2, "unrecognized arguments: --colour"),
    # bulk cancel and delete, count
    (["cancel", "operations/x", "--filter", "done = true"], 2, "name or --filter, not both"),
    (["delete", "operations/x", "--filter", ""], 2, "name or --filter, not both"),
    (["cancel", "--filter", "colour = red", "--yes"], 2, "invalid filter"),
    (["count", "--filter", "done = maybe"], 2, "invalid filter"),
    (["count", "--parent", "projects//p"], 2, "is not a parent"),
    (["delete", "operations/x", "--yes"], 2, "--yes goes with --filter, not with a name"),
    (["cancel", "operations/x", "--concurrency", "4"], 2, "--concurrency goes with --filter"),
    (["cancel", "--parent", "projects/p"], 2, "give an operation name or --filter"),
    (["cancel", "--filter", "done = false", *GET[2:]], 2, "no terminal to confirm on"),
    (["delete", "--filter", "", "--concurrency", "0"], 2, "0 is not a concurrency from 1"),
    (["delete", "--filter", "", "--concurrency", "many"], 2, "'many' is not a concurrency"),
    (["cancel", "--filter", "", "--concurrency", "1001"], 2, "1001 is not a concurrency"),
    (["cancel", "--filter", "", "--yes", *GET[2:]], 4, "cannot reach the server"),
    (["count", *GET[2:]], 4, "cannot reach the server"),
    # stores
    (["serve", "--store", "mysql://db/ops"], 2, "unknown store 'mysql://db/ops'"),
    (["serve", "--store", "sqlite://ops.db"], 2, "a sqlite URL names no host"),
    (["serve", "--store", ""], 2, "the store is empty"),
    (["demo", "--store", "redis://x"], 2, "unknown store"),
    ([*SERVE[:3], "--store", "{tmp}/missing/ops.db"], 4, "{tmp}/missing/ops.db"),
    ([*SERVE[:3], "--store", "{tmp}"], 4, "{tmp}"),
    # TLS files: serve
    ([*SERVE, "--tls-cert", "{server_cert}"], 2, "TLS needs both --tls-cert and --tls-key"),
    ([*SERVE, "--tls-ca", "{ca}"], 2, "--tls-ca (mutual TLS) needs --tls-cert and --tls-key"),
    (
        [*SERVE, "--tls-cert", "{server_cert}", "--tls-key", "{client_key}"],
        2,
        "is not the private key of --tls-cert",
    ),
    (
        [*SERVE, "--tls-cert", "{server_cert}", "--tls-key", "{client_key}", "--http-port", "0"],
        2,
        "is not the private key of --tls-cert",
    ),
    ([*SERVE, "--tls-cert", "{not_pem}", "--tls-key", "{server_key}"], 2, "not a PEM file"),
    ([*SERVE, "--tls-cert", "{server_cert}", "--tls-key", "{missing}"], 2, "No such file"),
    (
        [
            *SERVE,
            "--tls-cert",
            "{server_cert}",
            "--tls-key",
            "{server_key}",
            "--tls-ca",
            "{key_only}",
        ],
        2,
        "not PEM CA certificates",
    ),
    (
        [*SERVE, "--tls-cert", "{server_cert}", "--tls-key", "{encrypted_key}"],
        2,
        "the key is encrypted",
    ),
    # TLS files: clients
    ([*GET, "--tls-cert", "{client_cert}"], 2, "needs both --tls-cert and --tls-key"),
    ([*GET, "--tls-ca", "{missing}"], 2, "No such file"),
    ([*GET, "--tls-ca", "{not_pem}"], 2, "not a PEM file"),
    ([*GET, "--tls-ca", "{key_only}"], 2, "not PEM CA certificates"),
    (
        [*GET, "--tls-ca", "{ca}", "--tls-cert", "{client_cert}", "--tls-key", "{server_key}"],
        2,
        "is not the private key of --tls-cert",
    ),
    # nothing answers
    (GET, 4, "cannot reach the server"),
    (["wait", *GET[1:]], 4, "gave up after --rpc-timeout 1s"),
]


def _ids() -> list[str]:
    seen: dict[str, int] = {}
    ids = []
    for args, _, _ in MISTAKES:
        name = "-".join(a.strip("-{}") for a in args[:4])[:40] or "nothing"
        seen[name] = seen.get(name, 0) + 1
        ids.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return ids


def test_the_table_is_long_enough() -> None:
    assert len(MISTAKES) >= 40


@pytest.mark.parametrize(("args", "code", "message"), MISTAKES, ids=_ids())
def test_a_mistake_is_one_line_and_an_exit_code(
    args: list[str],
    code: int,
    message: str,
    files: Files,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = {**files.paths(), "tmp": str(tmp_path)}
    argv = [arg.format(**paths) for arg in args]
    with pytest.raises(SystemExit) as leaving:
        main(argv)
    out, err = capsys.readouterr()
    assert leaving.value.code == code, err
    assert err.count("\n") == 1 and err.startswith("lro-async"), err
    assert message.format(**paths) in err, err
    assert "Traceback" not in err and not out


def _blocked(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command with *module* made unimportable, as if its extra were missing."""
    code = f"import sys; sys.modules[{module!r}] = None; from lro_async.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        (
            "asyncpg",
            ["serve", "--port", "0", "--store", "postgresql://postgres@127.0.0.1:5432/test"],
            "needs asyncpg: pip install 'lro-async[postgres]'",
        ),
        (
            "asyncpg",
            ["demo", "--store", "postgres://postgres@127.0.0.1/test"],
            "pip install 'lro-async[postgres]'",
        ),
        (
            "uvicorn",
            ["serve", "--port", "0", "--store", "memory", "--http-port", "0"],
            "--http-port needs the http extra: pip install 'lro-async[http]'",
        ),
    ],
)
def test_a_missing_extra_names_the_pip_line(module: str, args: list[str], message: str) -> None:
    result = _blocked(module, *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not result.stdout, "nothing started"
