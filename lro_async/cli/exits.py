"""What the command's mistakes say and the codes it exits with (``lro-async --help`` lists them).

Every error a command can meet becomes one :class:`CommandError`: a line for stderr and an
exit code; :func:`errors` is where exceptions from the library turn into them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc

from ..errors import (
    InvalidArgument,
    LroError,
    OperationNotFound,
    OperationTimeout,
    RpcError,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_PIPE",
    "EXIT_RPC",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "CommandError",
    "errors",
    "unreachable",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_RPC, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5
EXIT_PARTIAL = 6  # cancel/delete --filter: some of the operations failed
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a Unix tool stopped by `| head`


class CommandError(Exception):
    """A one-line error for the user, with the exit code to leave with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def unreachable(exc: RpcError, *, tls: bool) -> str:
    """What a failure to reach the server says, with a hint when TLS may be the cause."""
    detail = exc.message or exc.code.name
    if "Socket closed" in detail and not tls:
        detail += " (if the server uses TLS, connect with --tls-ca)"
    elif "WRONG_VERSION_NUMBER" in detail or ("handshake" in detail.lower() and tls):
        if "CERTIFICATE_VERIFY_FAILED" in detail:
            detail += " (the server's certificate is not signed by --tls-ca)"
        elif "WRONG_VERSION_NUMBER" in detail:
            detail += " (is the server plaintext? then drop the --tls-* options)"
        else:
            detail += " (does the server require a client certificate? --tls-cert, --tls-key)"
    elif tls and "Socket closed" in detail:
        detail += " (does the server require a client certificate? --tls-cert, --tls-key)"
    return f"cannot reach the server: {detail}"


@contextlib.contextmanager
def errors(*, tls: bool = False) -> Iterator[None]:
    """Turn the errors a command can meet into one-line messages and exit codes."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OperationTimeout as exc:
        raise CommandError(str(exc) or "timed out", EXIT_TIMEOUT) from exc
    except OperationNotFound as exc:
        raise CommandError(exc.message or "operation not found", EXIT_NOT_FOUND) from exc
    except (InvalidArgument, ValueError) as exc:
        raise CommandError(getattr(exc, "message", None) or str(exc), EXIT_USAGE) from exc
    except RpcError as exc:
        if exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise CommandError(unreachable(exc, tls=tls), EXIT_RPC) from exc
        raise CommandError(str(exc), EXIT_RPC) from exc
    except (LroError, OSError) as exc:
        raise CommandError(_one_line(str(exc)), EXIT_RPC) from exc


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "failed"
