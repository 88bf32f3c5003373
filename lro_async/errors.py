"""The exception tree of lro_async, and its mapping to and from gRPC status codes.

::

    LroError
     +-- OperationFailed            the operation finished with an error (.code, .message, .details)
     |    +-- OperationCancelled    ... with CANCELLED
     +-- OperationTimeout           a local wait ran out of time (also a TimeoutError)
     +-- UnexpectedOperationState   done without a result, or a result of an unexpected type
     +-- RpcError                   an RPC failed (.code, .message, .details)
     |    +-- OperationNotFound     the operation does not exist (NOT_FOUND)
     |    +-- InvalidArgument       a malformed name, filter, page token, ... (INVALID_ARGUMENT)
     |    +-- PermissionDenied      the caller may not touch the operation (PERMISSION_DENIED)
     |    +-- ResourceExhausted     a server limit was reached (RESOURCE_EXHAUSTED)
     +-- StoreError                 the operation store failed (UNAVAILABLE to clients)

``asyncio.CancelledError`` is never wrapped. Status codes are accepted as ``grpc.StatusCode``
or as ``google.rpc.Code`` ints wherever one is passed in; errors raised to users carry
``grpc.StatusCode``.

Conversion from ``grpc.aio.AioRpcError`` happens only in :func:`rpc_call`, which awaits
a call and raises ``from`` the gRPC error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2

if TYPE_CHECKING:
    from google.longrunning import operations_pb2

__all__ = [
    "InvalidArgument",
    "LroError",
    "OperationCancelled",
    "OperationFailed",
    "OperationNotFound",
    "OperationTimeout",
    "PermissionDenied",
    "ResourceExhausted",
    "RpcError",
    "StoreError",
    "UnexpectedOperationState",
    "rpc_call",
    "status_code",
]

R = TypeVar("R")

_BY_INT: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def status_code(code: grpc.StatusCode | int) -> grpc.StatusCode:
    """Return *code* as a ``grpc.StatusCode``.

    :param code: a ``grpc.StatusCode`` or a ``google.rpc.Code`` int.
    :raises ValueError: if the int is not a known status code.
    """
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"a status code must be a grpc.StatusCode or an int, not {code!r}")
    try:
        return _BY_INT[code]
    except KeyError:
        raise ValueError(f"{code} is not a google.rpc.Code") from None


def code_number(code: grpc.StatusCode) -> int:
    """Return the ``google.rpc.Code`` int of *code*."""
    number: int = code.value[0]
    return number


class LroError(Exception):
    """Base class of every error lro_async raises."""


class _StatusError(LroError):
    """An error that carries a status code, a message and ``google.rpc`` details."""

    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str = "",
        *,
        code: grpc.StatusCode | int | None = None,
        details: Sequence[any_pb2.Any] = (),
    ) -> None:
        self.code = status_code(code) if code is not None else self.default_code
        self.message = message
        self.details = tuple(details)
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}" if self.message else self.code.name

    def to_status(self) -> status_pb2.Status:
        """Return this error as a ``google.rpc.Status``."""
        return status_pb2.Status(
            code=code_number(self.code), message=self.message, details=list(self.details)
        )


class OperationFailed(_StatusError):
    """The operation finished with an error.

    Raise it from a coroutine run by ``OperationManager.start`` to fail the operation with
    that code; the client raises it when an awaited operation failed.

    :param code: the status code (``grpc.StatusCode`` or ``google.rpc.Code`` int); never OK.
    :param message: a developer-facing message.
    :param details: ``google.protobuf.Any`` details, as in ``google.rpc.Status.details``.
    """

    default_code = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        code: grpc.StatusCode | int,
        message: str = "",
        details: Sequence[any_pb2.Any] = (),
        *,
        operation: operations_pb2.Operation | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        if self.code is grpc.StatusCode.OK:
            raise ValueError("an operation cannot fail with status OK")
        self.operation = operation

    @classmethod
    def from_status(
        cls, status: status_pb2.Status, operation: operations_pb2.Operation | None = None
    ) -> OperationFailed:
        """Build the error for a failed operation's ``google.rpc.Status``.

        Returns :class:`OperationCancelled` for CANCELLED. A status with an unknown or OK
        code becomes UNKNOWN, so the error is always a failure.
        """
        code = _BY_INT.get(status.code, grpc.StatusCode.UNKNOWN)
        if code is grpc.StatusCode.OK:
            code = grpc.StatusCode.UNKNOWN
        kind = OperationCancelled if code is grpc.StatusCode.CANCELLED else OperationFailed
        return kind(code, status.message, list(status.details), operation=operation)


class OperationCancelled(OperationFailed):
    """The operation was cancelled (it finished with CANCELLED)."""

    def __init__(
        self,
        code: grpc.StatusCode | int = grpc.StatusCode.CANCELLED,
        message: str = "operation cancelled",
        details: Sequence[any_pb2.Any] = (),
        *,
        operation: operations_pb2.Operation | None = None,
    ) -> None:
        super().__init__(code, message, details, operation=operation)


class OperationTimeout(LroError, TimeoutError):
    """A local wait for an operation ran out of time; the remote operation keeps running."""


class UnexpectedOperationState(LroError):
    """The operation is in a state the protocol does not allow or the caller did not expect.

    For example done with neither a response nor an error, or a response whose type URL
    is not the type the caller asked for.
    """


class RpcError(_StatusError):
    """An RPC failed with a status other than OK.

    :param message: the status message.
    :param code: the status code.
    :param details: the ``google.rpc.Status`` details the server sent, if any.
    """


class OperationNotFound(RpcError):
    """The operation does not exist, has expired or was deleted (NOT_FOUND)."""

    default_code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(RpcError, ValueError):
    """A request carried a malformed value (INVALID_ARGUMENT); nothing was changed."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class PermissionDenied(RpcError):
    """The caller may not act on the operation (PERMISSION_DENIED)."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(RpcError):
    """A server limit was reached (RESOURCE_EXHAUSTED); retry later."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class StoreError(LroError):
    """The operation store failed; clients see UNAVAILABLE and may retry."""


_RPC_ERRORS: dict[grpc.StatusCode, type[RpcError]] = {
    grpc.StatusCode.NOT_FOUND: OperationNotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def rpc_error(code: grpc.StatusCode, message: str, details: Sequence[any_pb2.Any] = ()) -> RpcError:
    """Return the most specific :class:`RpcError` for *code*."""
    return _RPC_ERRORS.get(code, RpcError)(message, code=code, details=details)


def _status_details(trailing: grpc.aio.Metadata | None) -> tuple[any_pb2.Any, ...]:
    if trailing is None:
        return ()
    for key, value in trailing:
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # a peer's garbage must not hide the real error
                return ()
            return tuple(status.details)
    return ()


async def rpc_call(call: Awaitable[R]) -> R:
    """Await one grpc.aio call, raising an :class:`RpcError` for a failed one.

    The original error is chained as ``__cause__``; ``google.rpc.Status`` details sent in
    the ``grpc-status-details-bin`` trailer are kept on ``.details``. grpc.aio raises
    ``asyncio.CancelledError`` in the task awaiting a call cancelled locally, e.g. by
    ``channel.close()``; unless the task itself is being cancelled, that is a failed call
    (CANCELLED), not a cancellation of the caller.

    A coroutine rather than a context manager (httpcore's ``map_exceptions``): a client
    holds thousands of calls open, and every object each one keeps is walked by every
    full garbage collection.
    """
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        details = _status_details(exc.trailing_metadata())
        raise rpc_error(exc.code(), exc.details() or "", details) from exc
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        raise RpcError(
            "the call was cancelled locally (is the channel closed?)",
            code=grpc.StatusCode.CANCELLED,
        ) from exc
