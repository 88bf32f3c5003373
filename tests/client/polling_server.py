"""A small, real grpc.aio Operations server for client tests.

It keeps operations in a dict that the test drives by hand, counts RPCs by method, tracks
how many are in flight at once, and can fail the next N calls of a method with a status.
WaitOperation is UNIMPLEMENTED (``wait="unimplemented"``, a server that only polls), a
plain long poll that ignores lro_async's progress header (``wait="long-poll"``), or
answers at once like GetOperation (``wait="immediate"``, which its contract allows).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import grpc
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from lro_async.protobuf import duration_seconds

_SERVICE = "google.longrunning.Operations"
_CANCELLED = grpc.StatusCode.CANCELLED.value[0]

WaitMode = Literal["unimplemented", "long-poll", "immediate", "hold"]
Context = grpc.aio.ServicerContext[Any, Any]


class OperationsTestServer:
    """Operations over a dict, on 127.0.0.1:0; start with ``await server.start()``."""

    def __init__(self, *, wait: WaitMode = "unimplemented") -> None:
        self.wait_mode = wait
        self.operations: dict[str, operations_pb2.Operation] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.max_in_flight: collections.Counter[str] = collections.Counter()
        # (method, name) -> how many calls for that name at once, at most
        self.max_in_flight_per_name: collections.Counter[tuple[str, str]] = collections.Counter()
        self._in_flight_per_name: collections.Counter[tuple[str, str]] = collections.Counter()
        self.invocation_metadata: list[tuple[str, dict[str, str | bytes]]] = []
        self.wait_timeouts: list[float | None] = []
        self.wait_time_remaining: list[float | None] = []  # WaitOperation's RPC deadline left
        self.hold: asyncio.Event | None = None  # while set to an unset Event, calls block
        self.entered = asyncio.Event()  # set when a call starts (reset it yourself)
        self._injected: dict[str, collections.deque[grpc.StatusCode]] = {}
        self._changes: dict[str, asyncio.Event] = {}
        self._ids = itertools.count(1)
        self._server: grpc.aio.Server | None = None
        self.target = ""

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        server = grpc.aio.server()
        handlers: dict[str, Callable[[Any, Context], Awaitable[Message]]] = {
            "GetOperation": self._get,
            "WaitOperation": self._wait,
            "CancelOperation": self._cancel,
            "DeleteOperation": self._delete,
            "ListOperations": self._list,
        }
        requests: dict[str, type[Message]] = {
            "GetOperation": operations_pb2.GetOperationRequest,
            "WaitOperation": operations_pb2.WaitOperationRequest,
            "CancelOperation": operations_pb2.CancelOperationRequest,
            "DeleteOperation": operations_pb2.DeleteOperationRequest,
            "ListOperations": operations_pb2.ListOperationsRequest,
        }
        method_handlers = {
            method: grpc.unary_unary_rpc_method_handler(
                self._counted(method, handler),
                request_deserializer=requests[method].FromString,
                response_serializer=_serialize,
            )
            for method, handler in handlers.items()
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(_SERVICE, method_handlers),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        self.target = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._server is not None:
            await self._server.stop(None)

    # -- driving operations -----------------------------------------------------------------

    def create(self, metadata: Message | None = None, *, name: str | None = None) -> str:
        name = name or f"operations/{next(self._ids)}"
        operation = operations_pb2.Operation(name=name)
        if metadata is not None:
            operation.metadata.Pack(metadata)
        self.operations[name] = operation
        return name

    def set_metadata(self, name: str, metadata: Message) -> None:
        packed = any_pb2.Any()
        packed.Pack(metadata)
        self._replace(name, metadata=packed)

    def complete(self, name: str, response: Message) -> None:
        packed = any_pb2.Any()
        packed.Pack(response)
        self._replace(name, done=True, response=packed)

    def fail(self, name: str, code: grpc.StatusCode, message: str = "") -> None:
        status = status_pb2.Status(code=code.value[0], message=message)
        self._replace(name, done=True, error=status)

    def finish_raw(self, name: str) -> None:
        """Mark *name* done with neither a response nor an error (a broken server)."""
        self._replace(name, done=True)

    def inject(
        self, code: grpc.StatusCode, times: int = 1, *, method: str = "GetOperation"
    ) -> None:
        """Fail the next *times* calls of *method* with *code*."""
        self._injected.setdefault(method, collections.deque()).extend([code] * times)

    def _replace(self, name: str, **fields: Any) -> None:
        operation = operations_pb2.Operation()
        operation.CopyFrom(self.operations[name])
        for key, value in fields.items():
            if isinstance(value, Message):
                getattr(operation, key).CopyFrom(value)
            else:
                setattr(operation, key, value)
        self.operations[name] = operation
        self._changes.pop(name, asyncio.Event()).set()

    # -- the RPCs -------------------------------------------------------------------------------

    def _counted(
        self, method: str, handler: Callable[[Any, Context], Awaitable[Message]]
    ) -> Callable[[Any, Context], Awaitable[Message]]:
        async def counted(request: Any, context: Context) -> Message:
            name: str = request.name
            self.calls[method] += 1
            self.invocation_metadata.append((method, dict(context.invocation_metadata() or ())))
            self.in_flight[method] += 1
            self._in_flight_per_name[method, name] += 1
            self.max_in_flight[method] = max(self.max_in_flight[method], self.in_flight[method])
            key = (method, name)
            self.max_in_flight_per_name[key] = max(
                self.max_in_flight_per_name[key], self._in_flight_per_name[key]
            )
            try:
                self.entered.set()
                if self.hold is not None:
                    await self.hold.wait()
                injected = self._injected.get(method)
                if injected:
                    await context.abort(injected.popleft(), f"injected by the test on {method}")
                return await handler(request, context)
            finally:
                self.in_flight[method] -= 1
                self._in_flight_per_name[method, name] -= 1

        return counted

    async def _find(self, name: str, context: Context) -> operations_pb2.Operation:
        operation = self.operations.get(name)
        if operation is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no operation {name!r}")
        return operation

    async def _get(
        self, request: operations_pb2.GetOperationRequest, context: Context
    ) -> operations_pb2.Operation:
        return await self._find(request.name, context)

    async def _wait(
        self, request: operations_pb2.WaitOperationRequest, context: Context
    ) -> operations_pb2.Operation:
        if self.wait_mode == "unimplemented":
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "WaitOperation")
        timeout = duration_seconds(request.timeout) if request.HasField("timeout") else None
        self.wait_timeouts.append(timeout)
        self.wait_time_remaining.append(context.time_remaining())
        operation = await self._find(request.name, context)
        if self.wait_mode == "immediate":
            return operation
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self.wait_mode == "hold":  # ignores the requested timeout: holds until done
            deadline = None
        while not operation.done:
            change = self._changes.setdefault(request.name, asyncio.Event())
            try:
                async with asyncio.timeout_at(deadline):
                    await change.wait()
            except TimeoutError:
                break
            operation = await self._find(request.name, context)
        return await self._find(request.name, context)

    async def _cancel(
        self, request: operations_pb2.CancelOperationRequest, context: Context
    ) -> empty_pb2.Empty:
        operation = await self._find(request.name, context)
        if not operation.done:
            self._replace(request.name, done=True, error=status_pb2.Status(code=_CANCELLED))
        return empty_pb2.Empty()

    async def _delete(
        self, request: operations_pb2.DeleteOperationRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._find(request.name, context)
        del self.operations[request.name]
        self._changes.pop(request.name, asyncio.Event()).set()
        return empty_pb2.Empty()

    async def _list(
        self, request: operations_pb2.ListOperationsRequest, context: Context
    ) -> operations_pb2.ListOperationsResponse:
        matching = [
            op
            for name, op in sorted(self.operations.items())
            if name.startswith(request.name)
            and (request.filter != "done = true" or op.done)
            and (request.filter != "done = false" or not op.done)
        ]
        start = int(request.page_token or 0)
        size = request.page_size or 50
        page = matching[start : start + size]
        token = str(start + size) if start + size < len(matching) else ""
        return operations_pb2.ListOperationsResponse(operations=page, next_page_token=token)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
