"""What both transports answer alike: gRPC's servicer and the HTTP/JSON app call these.

Access checks, WaitOperation bounds and limits, and how an exception becomes a status
code, a message and ``google.rpc`` details live here once, so the two transports cannot
drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2

from ..errors import InvalidArgument, PermissionDenied, ResourceExhausted, RpcError, StoreError
from ..protobuf import duration_seconds, pack, seconds_duration
from ..wire import ERROR_DOMAIN, OPERATION_NOT_FOUND
from .auth import Access, Authorizer, Caller, Rpc, is_allowed

if TYPE_CHECKING:
    from google.protobuf import duration_pb2

__all__ = [
    "check_access",
    "error_parts",
    "listed",
    "refuse_partial_success",
    "reserve_wait",
    "wait_bound",
]

logger = logging.getLogger("lro_async")

"""The ``google.rpc.ErrorInfo.domain`` of every error status lro_async's servers send."""

_MAX_DURATION_SECONDS = 315_576_000_000  # the range google.protobuf.Duration allows


async def check_access(
    authorize: Authorizer | None, rpc: Rpc, resource: str, caller: Callable[[], Caller]
) -> None:
    """Ask *authorize* (if any) about *rpc* on *resource*; an authorizer that raises denies.

    :param caller: makes the :class:`Caller`, only when there is an authorizer to ask.
    :raises PermissionDenied: with the same message whether or not *resource* exists.
    """
    if authorize is None:
        return
    try:
        allowed = await is_allowed(authorize, Access(rpc, resource, caller()))
    except Exception:
        logger.exception("the authorizer failed on %s(%r); denying", rpc, resource)
        allowed = False
    if not allowed:
        raise PermissionDenied(f"permission denied: {rpc} on {resource!r}")


def listed(parent: str | None) -> str:
    """The resource ListOperations reads: ``""`` for everything, else the parent."""
    if parent is None:
        return ""
    return parent or "operations"


def refuse_partial_success(requested: bool) -> None:
    """:raises RpcError: UNIMPLEMENTED if the request asks for partial success."""
    if requested:
        raise RpcError(
            "return_partial_success is not supported: every listing is complete",
            code=grpc.StatusCode.UNIMPLEMENTED,
        )


def timeout_seconds(timeout: duration_pb2.Duration) -> float:
    """A WaitOperation timeout in seconds.

    :raises InvalidArgument: if it is not a valid Duration, or is negative.
    """
    seconds, nanos = timeout.seconds, timeout.nanos
    if (
        abs(seconds) > _MAX_DURATION_SECONDS
        or abs(nanos) >= 1_000_000_000
        or (seconds > 0 > nanos)
        or (seconds < 0 < nanos)
    ):
        raise InvalidArgument(f"timeout is not a valid Duration: {seconds}s {nanos}ns")
    value = duration_seconds(timeout)
    if value < 0:
        raise InvalidArgument(f"timeout must not be negative, not {value}s")
    return value


def wait_bound(
    max_wait: float,
    timeout: duration_pb2.Duration | None,
    remaining: float | None,
    margin: float,
) -> float:
    """How long a wait may last: min(request timeout, deadline - margin, server cap).

    :param timeout: the request's timeout, if it set one.
    :param remaining: seconds to the caller's deadline, if it has one.
    """
    bound = max_wait if timeout is None else min(max_wait, timeout_seconds(timeout))
    if remaining is not None:
        bound = max(0.0, min(bound, remaining - margin))
    return bound


def reserve_wait(waiting: int, limit: int, what: str) -> None:
    """:raises ResourceExhausted: with a RetryInfo hint when *limit* waits are open."""
    if waiting >= limit:
        raise ResourceExhausted(
            f"this server holds {limit} {what} already; retry later",
            details=[pack(error_details_pb2.RetryInfo(retry_delay=seconds_duration(1.0)))],
        )


def _reason(code: grpc.StatusCode, exc: Exception) -> str:
    if isinstance(exc, StoreError):
        return "STORE_UNAVAILABLE"
    return {
        grpc.StatusCode.NOT_FOUND: OPERATION_NOT_FOUND,
        grpc.StatusCode.UNAVAILABLE: "SERVER_UNAVAILABLE",
    }.get(code, code.name)


def error_parts(
    exc: Exception, what: str, name: str, *, reason: str | None = None
) -> tuple[grpc.StatusCode, str, list[any_pb2.Any]]:
    """The status code, message and details (an ErrorInfo first) that answer *exc*.

    :class:`RpcError` keeps its code and message; :class:`StoreError` is UNAVAILABLE;
    anything else is INTERNAL, logged with its traceback and not sent.

    :param what: what failed, for the log (e.g. the RPC).
    :param name: the operation or parent the request named, for the ErrorInfo.
    :param reason: the ErrorInfo reason, when the caller knows better than the code.
    """
    if isinstance(exc, RpcError):
        code, message = exc.code, exc.message
    elif isinstance(exc, StoreError):
        code, message = grpc.StatusCode.UNAVAILABLE, f"the operation store failed: {exc}"
    else:
        logger.error("%s(%r) failed with an unexpected exception", what, name, exc_info=exc)
        code, message = grpc.StatusCode.INTERNAL, "internal error; see the server log"
    info = error_details_pb2.ErrorInfo(reason=reason or _reason(code, exc), domain=ERROR_DOMAIN)
    if name:
        info.metadata["name"] = name[:256]
    details = [pack(info), *(exc.details if isinstance(exc, RpcError) else ())]
    return code, message, details
