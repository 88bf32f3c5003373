"""The command's parser: every option is checked here, before anything connects or binds.

A bad value is one line on stderr (``lro-async COMMAND: error: ...``) and exit 2; the
usage block is printed by ``-h`` only.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from .. import __version__
from ..errors import InvalidArgument
from ..filtering import parse_filter
from ..names import check_name, list_parent
from ..stores import from_url

__all__ = ["EXIT_CODES", "parser"]

DEFAULT_STORE = "./lro_async.db"
DEFAULT_TARGET = "127.0.0.1:50051"

EXIT_CODES = """\
exit codes:
  0    success; serve: stopped by SIGINT or SIGTERM after draining
  1    get, wait, watch: the operation finished with an error (failed or cancelled)
  2    bad usage: an invalid option or value, a malformed name or filter, TLS files
       that cannot be used, an unknown store, a missing extra; cancel, delete --filter:
       not confirmed, or no terminal to confirm on and no --yes (nothing is changed)
  3    the operation was not found
  4    client commands: the server cannot be reached (within --rpc-timeout) or an RPC
       failed; serve: the address cannot be bound or the store cannot be opened
  5    wait, watch: --timeout passed while the operation was still running
  6    cancel, delete --filter: some operations failed (the summary says which and why)
  130  interrupted (Ctrl-C)
  141  stdout was closed early (piped into head, say): the command stops quietly

stores (--store):
  memory                         operations live in the process (gone when it stops)
  PATH, e.g. ./ops.db or /var/lib/ops.db
                                 a SQLite file (created if missing; its folder must exist)
  sqlite:///ABSOLUTE/PATH        the same, read as a file: URL (sqlite:///var/lib/ops.db is
                                 /var/lib/ops.db); sqlite:RELATIVE/PATH is relative; add
                                 ?mode=ro to inspect a file another server owns
  postgresql://USER@HOST:PORT/DB[?schema=NAME]
                                 PostgreSQL (needs: pip install 'lro-async[postgres]')
"""

_TARGET = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})")
_TARGET_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (when it has one) and keeps the epilog's layout."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "%(default)" not in text
            and action.default not in (None, False, "", argparse.SUPPRESS)
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``lro-async list: error: ...``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(
    kind: Callable[[str], float], low: float, high: float, what: str
) -> Callable[[str], float]:
    def check(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    return check


def _int(low: int, high: int, what: str) -> Callable[[str], int]:
    check = _number(int, low, high, what)
    return lambda text: int(check(text))


PORT = _int(0, 65535, "a port: 0-65535 (0 picks a free one)")
SECONDS = _number(float, 0.0, 1e9, "a number of seconds >= 0")
POSITIVE_SECONDS = _number(float, 1e-3, 1e9, "a number of seconds > 0")


def _target(text: str) -> str:
    if text.startswith(_TARGET_SCHEMES):
        return text
    match = _TARGET.fullmatch(text)
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT with a port 1-65535 "
            "(or a gRPC target such as dns:///host:port or unix:/path)"
        )
    return text


def _name(text: str) -> str:
    try:
        return check_name(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _filter(text: str) -> str:
    try:
        parse_filter(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def _parent(text: str) -> str:
    try:
        list_parent(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def _store(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("the store is empty: use memory or a file path")
    if text.startswith(("postgresql://", "postgres://")):
        return text  # needs asyncpg, which only opening it may ask for
    try:
        from_url(text)  # opens nothing: checks the form and builds the store object
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _server_tls(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--tls-cert", metavar="FILE", help="serve TLS (and HTTPS) with this PEM certificate"
    )
    command.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    command.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="require client certificates signed by these PEM CA certificates (mutual TLS)",
    )


def _serve(commands: argparse._SubParsersAction[_Parser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run a gRPC server with Operations and the demo",
        description="Serve google.longrunning.Operations, the demo service, health checking\n"
        "and reflection (v1 and v1alpha) until SIGINT or SIGTERM, then drain.",
        epilog=EXIT_CODES,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.add_argument("--port", type=PORT, default=50051, help="0 picks a free port")
    serve.add_argument(
        "--store",
        type=_store,
        default=DEFAULT_STORE,
        help="memory, a SQLite file path, sqlite:///PATH or postgresql://... (see below)",
    )
    serve.add_argument(
        "--http-port",
        type=PORT,
        default=None,
        help="also serve Operations over HTTP/JSON on this port (0: a free one; "
        "HTTPS with the --tls-* files; needs the http extra)",
    )
    serve.add_argument(
        "--dashboard",
        action="store_true",
        help="with --http-port: also serve the dashboard page at / on that port",
    )
    serve.add_argument(
        "--metrics-port",
        type=PORT,
        default=None,
        help="serve the OpenTelemetry metrics in Prometheus' text format at /metrics on this "
        "port (0: a free one; needs the otel extra)",
    )
    serve.add_argument(
        "--grace", type=SECONDS, default=10.0, help="seconds running work gets on shutdown"
    )
    serve.add_argument(
        "--lease",
        type=POSITIVE_SECONDS,
        default=30.0,
        help="with PostgreSQL: seconds after which other replicas abort a dead one's work",
    )
    _server_tls(serve)


def _demo(commands: argparse._SubParsersAction[_Parser]) -> None:
    demo = commands.add_parser(
        "demo", help="start a server and await a batch of demo operations", epilog=EXIT_CODES
    )
    demo.add_argument(
        "--store", type=_store, default=None, help="default: SQLite in a temporary folder"
    )
    demo.add_argument(
        "--operations", type=_int(1, 1000, "a count from 1 to 1000"), default=8, help="how many"
    )
    demo.add_argument(
        "--seconds",
        type=_number(float, 0.1, 600, "a number of seconds from 0.1 to 600"),
        default=3.0,
        help="about how long each takes",
    )


def _client_command(
    commands: argparse._SubParsersAction[_Parser], name: str, help: str
) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help, description=help + ".", epilog=EXIT_CODES)
    _client_options(command)
    return command


def _client_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--target", type=_target, default=DEFAULT_TARGET, help="HOST:PORT of the server"
    )
    command.add_argument(
        "--json",
        action="store_true",
        help="print proto3 JSON for scripts (one object per line for streams)",
    )
    command.add_argument(
        "--rpc-timeout",
        type=POSITIVE_SECONDS,
        default=10.0,
        help="seconds per RPC; wait and watch give up on a server not reached within it",
    )
    command.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="connect with TLS, trusting these PEM CA certificates (default: the system's)",
    )
    command.add_argument(
        "--tls-cert", metavar="FILE", help="connect with TLS, as this PEM client certificate"
    )
    command.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")


def _start(commands: argparse._SubParsersAction[_Parser]) -> None:
    start = commands.add_parser(
        "start",
        help="start a demo operation on a server that serve runs; print its name",
        description="Start an operation of the demo service (lro_async.demo.v1.Demo) that\n"
        "lro-async serve runs, and print its name, e.g.\n"
        "  lro-async wait $(lro-async start sleep --seconds 20)",
        epilog=EXIT_CODES,
    )
    kinds = start.add_subparsers(dest="kind", required=True, metavar="KIND")
    sleep = kinds.add_parser(
        "sleep", help="Demo.Sleep: sleeps, reporting progress", epilog=EXIT_CODES
    )
    sleep.add_argument(
        "--seconds",
        type=_number(float, 0.0, 3600, "a number of seconds from 0 to 3600"),
        default=20.0,
        help="how long in all",
    )
    sleep.add_argument(
        "--steps", type=_int(1, 1000, "a count from 1 to 1000"), default=10, help="progress steps"
    )
    export = kinds.add_parser(
        "export", help="Demo.Export: pretends to export rows", epilog=EXIT_CODES
    )
    export.add_argument(
        "--rows",
        type=_int(1, 10_000_000, "a count from 1 to 10,000,000"),
        default=100_000,
        help="how many rows",
    )
    export.add_argument(
        "--rows-per-second",
        type=_int(1, 10_000_000, "a rate from 1 to 10,000,000"),
        default=10_000,
        help="how fast",
    )
    for kind in (sleep, export):
        _client_options(kind)
        kind.add_argument("--parent", type=_parent, default="projects/demo", help="its parent")
        kind.add_argument(
            "--fail",
            type=_int(1, 16, "a google.rpc.Code from 1 to 16"),
            default=None,
            metavar="CODE",
            help="fail part-way with this code (e.g. 9: FAILED_PRECONDITION)",
        )
        kind.add_argument(
            "--fail-at",
            type=_int(0, 100, "a percentage from 0 to 100"),
            default=50,
            metavar="PERCENT",
            help="with --fail: how far it gets",
        )


def parser() -> argparse.ArgumentParser:
    """The whole command line."""
    top = _Parser(
        prog="lro-async",
        description="Serve, inspect, wait on and cancel Google-style long-running operations.",
        epilog=EXIT_CODES,
        formatter_class=_Formatter,
    )
    top.add_argument("--version", action="version", version=f"lro-async {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve(commands)
    _demo(commands)
    _start(commands)
    get = _client_command(commands, "get", "print an operation")
    get.add_argument("name", type=_name)
    listing = _client_command(commands, "list", "list operations, page by page")
    listing.add_argument("--parent", type=_parent, default="", help="e.g. projects/p (all)")
    listing.add_argument("--filter", type=_filter, default="", help='AIP-160, e.g. "done = false"')
    listing.add_argument(
        "--page-size",
        type=_int(1, 1000, "a page size from 1 to 1000"),
        default=50,
        help="operations per RPC",
    )
    listing.add_argument(
        "--limit",
        type=_int(0, sys.maxsize, "a count >= 0"),
        default=0,
        help="stop after this many (0: all)",
    )
    for name, help in (
        ("wait", "wait for an operation, with a progress bar on a terminal"),
        ("watch", "print each change of an operation until it is done"),
    ):
        command = _client_command(commands, name, help)
        command.add_argument("name", type=_name, nargs="?" if name == "watch" else None)
        command.add_argument(
            "--timeout", type=SECONDS, default=None, help="give up after this many seconds"
        )
        if name == "watch":  # or a collection, over lro_async's Watch extension
            command.add_argument(
                "--parent", type=_parent, help="watch every operation under this parent instead"
            )
            command.add_argument(
                "--filter", type=_filter, default="", help="with --parent: AIP-160"
            )
    count = _client_command(commands, "count", "count the operations a filter matches")
    count.add_argument("--parent", type=_parent, default="", help="e.g. projects/p (all)")
    count.add_argument("--filter", type=_filter, default="", help='AIP-160, e.g. "done = false"')
    for name, help in (
        ("cancel", "cancel an operation, or every one --filter matches"),
        ("delete", "delete an operation's record, or that of every one --filter matches"),
    ):
        _bulk(_client_command(commands, name, help))
    return top


def _bulk(command: argparse.ArgumentParser) -> None:
    """``cancel NAME`` or ``cancel --filter F [--parent P] [--yes] [--concurrency N]``."""
    command.add_argument("name", type=_name, nargs="?", help="the operation (or use --filter)")
    command.add_argument(
        "--filter",
        type=_filter,
        default=None,
        help='instead of a name: every operation this AIP-160 filter matches ("" for all)',
    )
    command.add_argument(
        "--parent", type=_parent, default=None, help="with --filter: e.g. projects/p (all)"
    )
    command.add_argument(
        "--yes", action="store_true", help="with --filter: act without asking for confirmation"
    )
    command.add_argument(
        "--concurrency",
        type=_int(1, 1000, "a concurrency from 1 to 1000"),
        default=None,
        help="with --filter: most RPCs in flight at once (default: 16)",
    )
