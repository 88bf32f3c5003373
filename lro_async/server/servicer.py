"""AsyncOperationsServicer: google.longrunning.Operations for grpc.aio, over an OperationManager."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from ..errors import (
    InvalidArgument,
    code_number,
)
from ..names import check_name, list_parent
from ..protobuf import (
    WAIT_MODE_HEADER,
    parse_progress_header,
)
from ..telemetry import OPERATIONS
from ..wire import ERROR_DOMAIN
from .auth import Authorizer, Rpc, caller_of
from .rules import (
    check_access,
    error_parts,
    listed,
    refuse_partial_success,
    reserve_wait,
    wait_bound,
)

if TYPE_CHECKING:
    from ..telemetry import ServerRpc, Telemetry
    from .manager import OperationManager

__all__ = [
    "ERROR_DOMAIN",
    "AsyncOperationsServicer",
    "add_service",
    "rpc_method",
    "server_options",
]

logger = logging.getLogger("lro_async")

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
    CANCELLED, so 10,000 waits opened at once would lose thousands), keeps idle
    long-poll connections alive through NATs and proxies with keepalive pings, and turns
    ``SO_REUSEPORT`` off: gRPC sets it by default, so a second server on a port already
    taken would bind it too and the kernel would split clients between the two at random.
    With these options ``add_insecure_port``/``add_secure_port`` of a taken port fails
    instead (grpc.aio raises ``RuntimeError("Failed to bind to address ...")``).
    Leave ``grpc.aio.server(maximum_concurrent_rpcs=...)`` unset: it counts open waits
    with every other call, so waits could fill it and starve reads; the servicer's
    ``max_waits`` bounds waits alone.

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
        ("grpc.so_reuseport", 0),
    ]


async def _abort(
    context: Context, exc: Exception, rpc: str, name: str, traced: ServerRpc | None = None
) -> NoReturn:
    code, message, details = error_parts(exc, rpc, name)
    if traced is not None:
        traced.end(code)
    message = _bounded(message)
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

    def error(self) -> InvalidArgument:
        return InvalidArgument(f"the request is not a valid {self.message_type}")


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
    A servicer with a ``telemetry`` attribute that is not None
    (:class:`~lro_async.telemetry.Telemetry`) gets a span and a duration per call, named
    by its ``service`` attribute (default ``google.longrunning.Operations``).
    """
    name = handler.__name__
    operations_method = f"{OPERATIONS}/{name}"

    @functools.wraps(handler)
    async def wrapper(self: Service, request: Request, context: Context) -> Reply:
        telemetry: Telemetry | None = getattr(self, "telemetry", None)
        traced = None
        if telemetry is not None:
            service = getattr(self, "service", OPERATIONS)
            method = operations_method if service == OPERATIONS else f"{service}/{name}"
            traced = telemetry.server_rpc(method, context)
        try:
            if isinstance(request, _Malformed):
                raise request.error()
            reply = await handler(self, request, context)
        except Exception as exc:
            await _abort(context, exc, handler.__name__, getattr(request, "name", ""), traced)
        except BaseException:  # the call was cancelled (the client went away)
            if traced is not None:
                traced.end(grpc.StatusCode.CANCELLED)
            raise
        if traced is not None:
            traced.end(grpc.StatusCode.OK)
        return reply

    setattr(wrapper, _CHECKS_REQUESTS, True)
    return wrapper


_CHECKS_REQUESTS = "__lro_async_rpc_method__"


def add_service(server: grpc.aio.Server, servicer: object, service: ServiceDescriptor) -> None:
    """Register *servicer*'s methods for *service* with *server*.

    Like a generated ``add_XServicer_to_server``, except that a request body that is not
    a valid message gets INVALID_ARGUMENT (grpc.aio answers UNKNOWN). Decorate the
    methods with :func:`rpc_method` so that lro_async errors they raise become statuses
    too. Unary methods only.

    >>> # lro_async.add_service(server, MyService(manager),
    >>> #                       my_pb2.DESCRIPTOR.services_by_name["MyService"])

    :raises ValueError: if *service* has a streaming method.
    :raises AttributeError: if *servicer* lacks one of its methods.
    """
    for method in service.methods:
        if method.client_streaming or method.server_streaming:
            raise ValueError(f"{method.full_name} streams; add_service serves unary methods only")
    handlers = {}
    for method in service.methods:
        handler = getattr(servicer, method.name)
        if not getattr(handler, _CHECKS_REQUESTS, False):
            handler = _checked(handler)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            handler,
            request_deserializer=_parser(message_factory.GetMessageClass(method.input_type)),
            response_serializer=message_factory.GetMessageClass(
                method.output_type
            ).SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def _checked(
    handler: Callable[[Request, Context], Coroutine[Any, Any, Reply]],
) -> Callable[[Request, Context], Coroutine[Any, Any, Reply]]:
    """Refuse malformed requests before a handler that is not an :func:`rpc_method`."""

    async def checked(request: Request, context: Context) -> Reply:
        if isinstance(request, _Malformed):
            await _abort(context, request.error(), getattr(handler, "__name__", "rpc"), "")
        return await handler(request, context)

    return checked


class AsyncOperationsServicer(operations_pb2_grpc.OperationsServicer):
    """The ``google.longrunning.Operations`` service for a grpc.aio server.

    WaitOperation is served by the manager's per-operation wake-ups: a waiter wakes the
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
        Waits are admitted apart from the other RPCs, which this limit never refuses:
        however many wait, GetOperation, List, Cancel and Delete answer, and the store
        reads waits and watches make go through a lane of their own (the store's
        ``wait_reads``), so they never queue ahead of a Get for a pooled connection or
        SQLite's worker thread.
    """

    service = OPERATIONS
    """The service its calls' spans and durations are named by."""

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
        self.telemetry = manager.telemetry
        """Where each call's span and duration go (:mod:`lro_async.telemetry`), or None."""
        if self.telemetry is not None:
            self.telemetry.count_open(self, waits=True)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register this servicer with *server*.

        Unlike the generated ``add_OperationsServicer_to_server``, a request body that is
        not a valid message gets INVALID_ARGUMENT rather than UNKNOWN.
        """
        add_service(server, self, _OPERATIONS)

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
        refuse_partial_success(request.return_partial_success)
        parent = list_parent(request.name)
        await self._allow("ListOperations", listed(parent), context)
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
        timeout = request.timeout if request.HasField("timeout") else None
        remaining = context.time_remaining()
        bound = wait_bound(self.max_wait, timeout, remaining, self.deadline_margin)
        reserve_wait(self.waiting, self.max_waits, "WaitOperation calls")
        self.waiting += 1
        try:
            return await self.manager.wait(request.name, bound, progress=_progress(context))
        finally:
            self.waiting -= 1

    async def _allow(self, rpc: Rpc, resource: str, context: Context) -> None:
        await check_access(self.authorize, rpc, resource, lambda: caller_of(context))


_OPERATIONS = operations_pb2.DESCRIPTOR.services_by_name["Operations"]


def _progress(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == WAIT_MODE_HEADER and isinstance(value, str):
            return parse_progress_header(value)
    return None
