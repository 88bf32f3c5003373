"""lro-async: serve, demo, start, inspect, wait on and cancel long-running operations.

Every mistake is one line on stderr and an exit code; the codes are listed in
:data:`lro_async.cli.args.EXIT_CODES` (``lro-async --help`` prints them) and the README.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

from .exits import EXIT_INTERRUPTED, EXIT_PIPE, CommandError, errors

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    """The command's parser (tests of other rooms build it this way)."""
    from .args import parser

    return parser()


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line; exits with the status documented in ``lro-async --help``.

    :param argv: the arguments; None: ``sys.argv[1:]``, run as the program (then gRPC's
        own log lines, which it writes straight to file descriptor 2, are hidden unless
        ``GRPC_VERBOSITY`` or ``GRPC_TRACE`` is set: the command says what went wrong).
    """
    if argv is None:
        _hide_grpc_logs()
    args = _parser().parse_args(argv)
    try:
        code = asyncio.run(_dispatch(args))
    except CommandError as exc:
        print(f"lro-async {args.command}: {exc}", file=sys.stderr)
        code = exc.code
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's final flush of
        # stdout from complaining about the same pipe at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_PIPE
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code)


def _hide_grpc_logs() -> None:
    """Point file descriptor 2 at /dev/null, and sys.stderr at a copy of the real one.

    gRPC's C core reads ``GRPC_VERBOSITY`` once, when ``grpc`` is imported (which
    importing lro_async has done by now), and writes ``E1202 ...`` lines to descriptor 2
    (a failed bind, each failed TLS handshake). Python's own writes keep going to the
    terminal or file the user gave.
    """
    if "GRPC_VERBOSITY" in os.environ or "GRPC_TRACE" in os.environ:
        return
    try:
        sys.stderr.flush()
        kept = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):
        return
    os.dup2(devnull, 2)
    os.close(devnull)
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr = open(  # noqa: SIM115 - the process's stderr, open until it exits
        kept, "w", buffering=1, encoding=encoding, errors="backslashreplace"
    )


async def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from .serve import serve_command

        return await serve_command(args)
    if args.command == "demo":
        from .serve import demo_command

        with errors():
            return await demo_command(args)
    from . import ops

    handlers: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
        "get": ops.get,
        "list": ops.list_,
        "count": ops.count,
        "wait": ops.wait,
        "watch": ops.watch,
        "cancel": ops.cancel,
        "delete": ops.delete,
        "start": ops.start,
    }
    with errors(tls=ops.uses_tls(args)):
        return await handlers[args.command](args)
