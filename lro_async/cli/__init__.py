"""lro-async: serve, demo, inspect, wait on and cancel long-running operations.

Exit codes: 0 success; 1 the operation finished with an error (``wait``, ``watch``);
2 bad usage or an invalid argument (a malformed name or filter); 3 operation not found;
4 the target is unreachable or an RPC failed otherwise; 5 ``--timeout`` passed first;
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import NoReturn

import grpc

from .. import __version__
from ..errors import (
    InvalidArgument,
    LroError,
    OperationNotFound,
    OperationTimeout,
    RpcError,
)

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_RPC, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130
DEFAULT_STORE = "sqlite:///lro_async.db"


class CommandError(Exception):
    """A one-line error for the user, with the exit code to leave with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lro-async",
        description="Serve, inspect, wait on and cancel Google-style long-running operations.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("--version", action="version", version=f"lro-async {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run a gRPC server with Operations and the demo")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument(
        "--port", type=int, default=50051, help="0 picks a free port (default %(default)s)"
    )
    serve.add_argument(
        "--store",
        default=DEFAULT_STORE,
        help="memory, sqlite:///PATH or postgresql://... (default %(default)s)",
    )
    serve.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="also serve Operations over HTTP/JSON on this port (0: a free one; "
        "HTTPS with the --tls-* files; needs the http extra)",
    )
    serve.add_argument("--grace", type=float, default=10.0, help="seconds to drain on shutdown")
    serve.add_argument(
        "--lease",
        type=float,
        default=30.0,
        help="with PostgreSQL: seconds after which other replicas abort a dead one's work",
    )
    serve.add_argument(
        "--tls-cert", metavar="FILE", help="serve TLS (and HTTPS) with this PEM certificate"
    )
    serve.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    serve.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="require client certificates signed by these PEM CA certificates (mutual TLS)",
    )

    demo = commands.add_parser("demo", help="start a server and await a batch of demo operations")
    demo.add_argument("--store", default=None, help="default: SQLite in a temporary folder")
    demo.add_argument("--operations", type=int, default=8, help="how many (default %(default)s)")
    demo.add_argument("--seconds", type=float, default=3.0, help="about how long each takes")

    def client_command(name: str, help: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help)
        command.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of the server")
        command.add_argument("--json", action="store_true", help="print proto3 JSON for scripts")
        command.add_argument("--rpc-timeout", type=float, default=10.0, help="seconds per RPC")
        command.add_argument(
            "--tls-ca",
            metavar="FILE",
            help="connect with TLS, trusting these PEM CA certificates (default: the system's)",
        )
        command.add_argument(
            "--tls-cert", metavar="FILE", help="connect with TLS, as this PEM client certificate"
        )
        command.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
        return command

    get = client_command("get", "print an operation")
    get.add_argument("name")
    listing = client_command("list", "list operations, page by page")
    listing.add_argument("--parent", default="", help="e.g. projects/p (default: all)")
    listing.add_argument("--filter", default="", help='AIP-160, e.g. "done = false"')
    listing.add_argument("--page-size", type=int, default=50)
    listing.add_argument("--limit", type=int, default=0, help="stop after this many (0: all)")
    for name, help in (
        ("wait", "wait for an operation, with a progress bar"),
        ("watch", "print each change of an operation until it is done"),
    ):
        command = client_command(name, help)
        command.add_argument("name", nargs="?" if name == "watch" else None)
        command.add_argument("--timeout", type=float, default=None, help="give up after seconds")
        if name == "watch":  # or a collection, over lro_async's Watch extension
            command.add_argument("--parent", help="watch every operation under this parent")
            command.add_argument("--filter", default="", help="with --parent: AIP-160")
    cancel = client_command("cancel", "cancel an operation")
    cancel.add_argument("name")
    delete = client_command("delete", "delete an operation's record")
    delete.add_argument("name")
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line; exits with the status documented in the module docstring."""
    args = _parser().parse_args(argv)
    try:
        code = asyncio.run(_dispatch(args))
    except CommandError as exc:
        print(f"lro-async {args.command}: {exc}", file=sys.stderr)
        code = exc.code
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code)


async def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from .serve import serve_forever, server_credentials, server_ssl_context

        credentials = server_credentials(args.tls_cert, args.tls_key, args.tls_ca)
        http_ssl = (
            server_ssl_context(args.tls_cert, args.tls_key, args.tls_ca)
            if credentials is not None and args.http_port is not None
            else None
        )
        with _errors():
            await serve_forever(
                args.host,
                args.port,
                args.store,
                grace=args.grace,
                lease=args.lease,
                credentials=credentials,
                http_port=args.http_port,
                http_ssl=http_ssl,
            )
        return EXIT_OK
    if args.command == "demo":
        from ..demo.run import run_demo

        return await run_demo(store_url=args.store, count=args.operations, seconds=args.seconds)
    from . import ops

    handlers: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
        "get": ops.get,
        "list": ops.list_,
        "wait": ops.wait,
        "watch": ops.watch,
        "cancel": ops.cancel,
        "delete": ops.delete,
    }
    with _errors():
        return await handlers[args.command](args)


def read_pem(path: str, flag: str) -> bytes:
    """The contents of a PEM file named on the command line.

    :raises CommandError: (bad usage) if it cannot be read or holds no PEM block.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise CommandError(f"{flag} {path}: {exc.strerror or exc}", EXIT_USAGE) from exc
    if b"-----BEGIN " not in data:
        raise CommandError(f"{flag} {path}: not a PEM file", EXIT_USAGE)
    return data


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn the errors a command can meet into one-line messages and exit codes."""
    try:
        yield
    except OperationTimeout as exc:
        raise CommandError(str(exc) or "timed out", EXIT_TIMEOUT) from exc
    except OperationNotFound as exc:
        raise CommandError(exc.message or "operation not found", EXIT_NOT_FOUND) from exc
    except (InvalidArgument, ValueError) as exc:
        raise CommandError(getattr(exc, "message", None) or str(exc), EXIT_USAGE) from exc
    except RpcError as exc:
        if exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise CommandError(f"cannot reach the server: {exc}", EXIT_RPC) from exc
        raise CommandError(str(exc), EXIT_RPC) from exc
    except (LroError, OSError) as exc:
        raise CommandError(str(exc), EXIT_RPC) from exc
