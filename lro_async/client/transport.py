"""The transport seam: the five Operations RPCs as plain coroutines.

Everything that waits (``waiting.py``) is written against :class:`OperationsTransport`, so a
gRPC channel and, later, an HTTP/JSON client are interchangeable. A transport raises
lro_async errors (:class:`~lro_async.errors.RpcError` and its subclasses), never
transport-specific ones, and does no retrying or pacing of its own: that is policy, and
lives above the seam.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeAlias, TypeVar

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

from ..errors import RpcError, rpc_call
from ..protobuf import seconds_duration
from ..telemetry import OPERATIONS
from ..telemetry import current as current_telemetry
from .watching import Change, WatchStream, watch_collection

R = TypeVar("R")

__all__ = ["GrpcTransport", "Metadata", "OperationsTransport"]

#: Request metadata: ``(key, value)`` pairs, keys lower case, ``-bin`` keys with bytes values.
Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]


class OperationsTransport(Protocol):
    """The ``google.longrunning.Operations`` RPCs, one coroutine each.

    ``timeout`` is the deadline of the call in seconds (None: no deadline); ``metadata`` is
    sent with the request (gRPC metadata, HTTP headers).
    """

    async def get(
        self, name: str, *, timeout: float | None, metadata: Metadata
    ) -> operations_pb2.Operation: ...

    async def wait(
        self, name: str, wait: float | None, *, timeout: float | None, metadata: Metadata
    ) -> operations_pb2.Operation:
        """WaitOperation: return when the operation is done or *wait* seconds have passed."""
        ...

    async def cancel(self, name: str, *, timeout: float | None, metadata: Metadata) -> None: ...

    async def delete(self, name: str, *, timeout: float | None, metadata: Metadata) -> None: ...

    async def list(
        self,
        parent: str,
        *,
        filter: str,
        page_size: int,
        page_token: str,
        timeout: float | None,
        metadata: Metadata,
    ) -> operations_pb2.ListOperationsResponse: ...


class GrpcTransport:
    """:class:`OperationsTransport` over a ``grpc.aio`` channel (which it does not own).

    With telemetry (:mod:`lro_async.telemetry`) each RPC has a span, whose W3C trace
    context travels in the request metadata.
    """

    kind = "grpc"

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = operations_pb2_grpc.OperationsStub(channel)
        self._channel = channel
        self.telemetry = current_telemetry()

    def watch_stream(self, metadata: Metadata) -> WatchStream:
        """The client's Watch stream over this channel (optional in a transport: the
        waiters use it when a transport has it, and WaitOperation otherwise)."""
        return WatchStream(self._channel, metadata, telemetry=self.telemetry)

    async def _call(
        self,
        method: str,
        stub: Callable[..., Awaitable[R]],
        request: Any,
        timeout: float | None,
        metadata: Metadata,
    ) -> R:
        telemetry = self.telemetry
        if telemetry is None:
            return await rpc_call(stub(request, timeout=timeout, metadata=metadata))
        rpc = telemetry.client_rpc(f"{OPERATIONS}/{method}", metadata)
        code = grpc.StatusCode.OK
        try:
            return await rpc_call(stub(request, timeout=timeout, metadata=rpc.metadata))
        except RpcError as exc:
            code = exc.code
            raise
        except BaseException:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            rpc.end(code)

    def watch_collection(
        self,
        parent: str,
        *,
        filter: str,
        page_size: int,
        metadata_changes: bool,
        metadata: Metadata,
    ) -> AsyncGenerator[Change, None]:
        """A collection watch over this channel (optional in a transport, like watch_stream)."""
        return watch_collection(
            self._channel,
            parent,
            filter=filter,
            page_size=page_size,
            metadata_changes=metadata_changes,
            metadata=metadata,
        )

    async def get(
        self, name: str, *, timeout: float | None, metadata: Metadata
    ) -> operations_pb2.Operation:
        request = operations_pb2.GetOperationRequest(name=name)
        return await self._call("GetOperation", self._stub.GetOperation, request, timeout, metadata)

    async def wait(
        self, name: str, wait: float | None, *, timeout: float | None, metadata: Metadata
    ) -> operations_pb2.Operation:
        request = operations_pb2.WaitOperationRequest(name=name)
        if wait is not None:
            request.timeout.CopyFrom(seconds_duration(max(wait, 0.0)))
        return await self._call(
            "WaitOperation", self._stub.WaitOperation, request, timeout, metadata
        )

    async def cancel(self, name: str, *, timeout: float | None, metadata: Metadata) -> None:
        request = operations_pb2.CancelOperationRequest(name=name)
        await self._call("CancelOperation", self._stub.CancelOperation, request, timeout, metadata)

    async def delete(self, name: str, *, timeout: float | None, metadata: Metadata) -> None:
        request = operations_pb2.DeleteOperationRequest(name=name)
        await self._call("DeleteOperation", self._stub.DeleteOperation, request, timeout, metadata)

    async def list(
        self,
        parent: str,
        *,
        filter: str,
        page_size: int,
        page_token: str,
        timeout: float | None,
        metadata: Metadata,
    ) -> operations_pb2.ListOperationsResponse:
        request = operations_pb2.ListOperationsRequest(
            name=parent, filter=filter, page_size=page_size, page_token=page_token
        )
        return await self._call(
            "ListOperations", self._stub.ListOperations, request, timeout, metadata
        )
