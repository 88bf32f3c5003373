"""AsyncOperationsServicer: google.longrunning.Operations for grpc.aio, over an OperationManager."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

from ..errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    RpcError,
    StoreError,
    code_number,
)
from ..protobuf import (
    WAIT_MODE_HEADER,
    duration_seconds,
    pack,
    parse_progress_header,
    seconds_duration,
)
from .auth import Access, Authorizer, Rpc, caller_of, is_allowed
from .names import check_name, list_parent

if TYPE_CHECKING:
    from google.protobuf import duration_pb2

    from .manager import OperationManager

__all__ = ["ERROR_DOMAIN", "AsyncOperationsServicer", "rpc_method", "server_options"]

logger = logging.getLogger("lro_async")

ERROR_DOMAIN = "lro-async"
"""The ``google.rpc.ErrorInfo.domain`` of every error status this servicer sends."""

_MAX_DURATION_SECONDS = 315_576_000_000  # the range google.protobuf.Duration allows
# An error's message travels twice in its trailers (grpc-message, percent-encoded, and the
# google.rpc.Status in grpc-status-details-bin); clients refuse trailers over 8 KiB by
# default, and messages quote the request (a filter can be 4096 characters), so cap them.
_MAX_MESSAGE_BYTES = 1024

Service = TypeVar("Service")
Request = TypeVar("Request")
Reply = TypeVar("Reply")
M = TypeVar("M", bound=Message)
Context = grpc.aio.ServicerContext[Any, Any]


def server_options(*, max_pending_requests: int = 50_000) -> list[tuple[str, int]]:
    """The grpc.aio server options lro_async recommends for serving many waiters.

    ``grpc.aio.server(options=lro_async.server_options())``. It raises the queue of calls
    the Python side has not picked up yet (default 1,000: past it, new calls fail with
    CANCELLED, so 10,000 waits opened at once would lose thousands), and keeps idle
    long-poll connections alive through NATs and proxies with keepalive pings.

    :param max_pending_requests: calls that may queue before the server refuses them.
    """
    return [
        ("grpc.server.max_pending_requests", max_pending_requests),
        ("grpc.server.max_pending_requests_hard_limit", max_pending_requests * 2),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
    ]


def _reason(code: grpc.StatusCode, exc: Exception) -> str:
    if isinstance(exc, StoreError):
        return "STORE_UNAVAILABLE"
    return {
        grpc.StatusCode.NOT_FOUND: "OPERATION_NOT_FOUND",
        grpc.StatusCode.UNAVAILABLE: "SERVER_UNAVAILABLE",
    }.get(code, code.name)


async def _abort(context: Context, exc: Exception, rpc: str, name: str) -> NoReturn:
    if isinstance(exc, RpcError):
        code, message = exc.code, exc.message
    elif isinstance(exc, StoreError):
        code, message = grpc.StatusCode.UNAVAILABLE, f"the operation store failed: {exc}"
    else:
        logger.error("%s(%r) failed with an unexpected exception", rpc, name, exc_info=exc)
        code, message = grpc.StatusCode.INTERNAL, "internal error; see the server log"
    message = _bounded(message)
    info = error_details_pb2.ErrorInfo(reason=_reason(code, exc), domain=ERROR_DOMAIN)
    if name:
        info.metadata["name"] = name[:256]
    details = [pack(info), *(exc.details if isinstance(exc, RpcError) else ())]
    status = status_pb2.Status(code=code_number(code), message=message, details=details)
    await context.abort(
        code, message, trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),)
    )
    raise AssertionError("context.abort returned")  # pragma: no cover


def _bounded(message: str) -> str:
    encoded = message.encode("utf-8", "replace")
    if len(encoded) <= _MAX_MESSAGE_BYTES:
        return message
    return encoded[: _MAX_MESSAGE_BYTES - 3].decode("utf-8", "ignore") + "..."


@dataclasses.dataclass(frozen=True, slots=True)
class _Malformed:
    """A request body that does not parse as its message type, handed to the handler."""

    message_type: str
    name: str = ""


def _parser(message_type: type[M]) -> Callable[[bytes], M | _Malformed]:
    """A request deserializer that never raises: grpc.aio would answer UNKNOWN with the
    exception's text; :func:`rpc_method` turns a malformed body into INVALID_ARGUMENT."""

    def parse(data: bytes) -> M | _Malformed:
        try:
            return message_type.FromString(data)
        except DecodeError:
            return _Malformed(message_type.DESCRIPTOR.full_name)

    return parse


def rpc_method(
    handler: Callable[[Service, Request, Context], Coroutine[Any, Any, Reply]],
) -> Callable[[Service, Request, Context], Coroutine[Any, Any, Reply]]:
    """Decorate a grpc.aio handler so lro_async errors become statuses with ErrorInfo.

    :class:`~lro_async.RpcError` subclasses keep their code and message,
    :class:`~lro_async.StoreError` becomes UNAVAILABLE, anything else INTERNAL (logged).
    """

    @functools.wraps(handler)
    async def wrapper(self: Service, request: Request, context: Context) -> Reply:
        try:
            if isinstance(request, _Malformed):
                raise InvalidArgument(f"the request is not a valid {request.message_type}")
            return await handler(self, request, context)
        except Exception as exc:
            await _abort(context, exc, handler.__name__, getattr(request, "name", ""))

    return wrapper


class AsyncOperationsServicer(operations_pb2_grpc.OperationsServicer):
    """The ``google.longrunning.Operations`` service for a grpc.aio server.

    WaitOperation is served by the manager's per-operation events: a waiter wakes the
    moment its operation finishes and costs nothing while it waits.

    >>> import grpc, lro_async
    >>> async def serve() -> None:
    ...     manager = lro_async.OperationManager()
    ...     server = grpc.aio.server(options=lro_async.server_options())
    ...     lro_async.AsyncOperationsServicer(manager).add_to_server(server)
    ...     server.add_insecure_port("127.0.0.1:50051")
    ...     await server.start()

    :param manager: the operations to serve.
    :param max_wait: the longest a WaitOperation call is held, in seconds, whatever the
        request asks; the caller then gets the operation with done=false and asks again.
    :param deadline_margin: how long before the call's deadline a WaitOperation answers,
        so that the answer arrives as OK rather than DEADLINE_EXCEEDED.
    :param authorize: decides who may do what (see :mod:`lro_async.server.auth`); asked
        before anything is looked up. None allows everything.
    :param max_waits: most WaitOperation calls held open at once; past it a call gets
        RESOURCE_EXHAUSTED with a ``google.rpc.RetryInfo`` hint instead of more memory.
    """

    def __init__(
        self,
        manager: OperationManager,
        *,
        max_wait: float = 1800.0,
        deadline_margin: float = 0.2,
        authorize: Authorizer | None = None,
        max_waits: int = 200_000,
    ) -> None:
        if not max_wait > 0:
            raise ValueError(f"max_wait must be positive, not {max_wait!r}")
        if not deadline_margin >= 0:
            raise ValueError(f"deadline_margin must not be negative, not {deadline_margin!r}")
        if max_waits < 1:
            raise ValueError(f"max_waits must be at least 1, not {max_waits!r}")
        self.manager = manager
        self.max_wait = max_wait
        self.deadline_margin = deadline_margin
        self.authorize = authorize
        self.max_waits = max_waits
        self.waiting = 0
        """WaitOperation calls open now."""

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register this servicer with *server*.

        Unlike the generated ``add_OperationsServicer_to_server``, a request body that is
        not a valid message gets INVALID_ARGUMENT rather than UNKNOWN.
        """
        handlers = {
            method: grpc.unary_unary_rpc_method_handler(
                getattr(self, method),
                request_deserializer=_parser(request),
                response_serializer=response.SerializeToString,
            )
            for method, (request, response) in _METHODS.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))

    @rpc_method
    async def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: Context
    ) -> operations_pb2.Operation:
        await self._allow("GetOperation", check_name(request.name), context)
        return await self.manager.get(request.name)

    @rpc_method
    async def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, context: Context
    ) -> operations_pb2.ListOperationsResponse:
        if request.return_partial_success:
            raise RpcError(
                "return_partial_success is not supported: every listing is complete",
                code=grpc.StatusCode.UNIMPLEMENTED,
            )
        parent = list_parent(request.name)
        await self._allow("ListOperations", _listed(parent), context)
        operations, token = await self.manager.list(
            parent,
            filter=request.filter,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return operations_pb2.ListOperationsResponse(operations=operations, next_page_token=token)

    @rpc_method
    async def DeleteOperation(
        self, request: operations_pb2.DeleteOperationRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._allow("DeleteOperation", check_name(request.name), context)
        await self.manager.delete(request.name)
        return empty_pb2.Empty()

    @rpc_method
    async def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._allow("CancelOperation", check_name(request.name), context)
        await self.manager.cancel(request.name)
        return empty_pb2.Empty()

    @rpc_method
    async def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: Context
    ) -> operations_pb2.Operation:
        await self._allow("WaitOperation", check_name(request.name), context)
        bound = self.max_wait
        if request.HasField("timeout"):
            bound = min(bound, _timeout_seconds(request.timeout))
        remaining = context.time_remaining()
        if remaining is not None:
            bound = max(0.0, min(bound, remaining - self.deadline_margin))
        if self.waiting >= self.max_waits:
            raise ResourceExhausted(
                f"this server holds {self.max_waits} WaitOperation calls already; retry later",
                details=[pack(error_details_pb2.RetryInfo(retry_delay=seconds_duration(1.0)))],
            )
        self.waiting += 1
        try:
            return await self.manager.wait(request.name, bound, progress=_progress(context))
        finally:
            self.waiting -= 1

    async def _allow(self, rpc: Rpc, resource: str, context: Context) -> None:
        if self.authorize is None:
            return
        access = Access(rpc, resource, caller_of(context))
        try:
            allowed = await is_allowed(self.authorize, access)
        except Exception:
            logger.exception("the authorizer failed on %s(%r); denying", rpc, resource)
            allowed = False
        if not allowed:
            raise PermissionDenied(f"permission denied: {rpc} on {resource!r}")


_SERVICE = "google.longrunning.Operations"
_METHODS: dict[str, tuple[type[Message], type[Message]]] = {
    "GetOperation": (operations_pb2.GetOperationRequest, operations_pb2.Operation),
    "ListOperations": (
        operations_pb2.ListOperationsRequest,
        operations_pb2.ListOperationsResponse,
    ),
    "DeleteOperation": (operations_pb2.DeleteOperationRequest, empty_pb2.Empty),
    "CancelOperation": (operations_pb2.CancelOperationRequest, empty_pb2.Empty),
    "WaitOperation": (operations_pb2.WaitOperationRequest, operations_pb2.Operation),
}


def _listed(parent: str | None) -> str:
    """The resource ListOperations reads: ``""`` for everything, else the parent."""
    if parent is None:
        return ""
    return parent or "operations"


def _timeout_seconds(timeout: duration_pb2.Duration) -> float:
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


def _progress(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == WAIT_MODE_HEADER and isinstance(value, str):
            return parse_progress_header(value)
    return None
