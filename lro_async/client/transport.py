"""The transport seam: the five Operations RPCs as plain coroutines.

Everything that waits (``waiting.py``) is written against :class:`OperationsTransport`, so a
gRPC channel and, later, an HTTP/JSON client are interchangeable. A transport raises
lro_async errors (:class:`~lro_async.errors.RpcError` and its subclasses), never
transport-specific ones, and does no retrying or pacing of its own: that is policy, and
lives above the seam.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Protocol, TypeAlias, TypeVar

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

from ..errors import RpcError, from_aio_error
from ..protobuf import seconds_duration

__all__ = ["GrpcTransport", "Metadata", "OperationsTransport"]

#: Request metadata: ``(key, value)`` pairs, keys lower case, ``-bin`` keys with bytes values.
Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]

R = TypeVar("R")


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


async def _unary(call: Awaitable[R]) -> R:
    """Await one call, raising lro_async errors (see :func:`~lro_async.errors.from_aio_error`).

    grpc.aio raises ``asyncio.CancelledError`` in the task awaiting a call that was
    cancelled locally, e.g. by ``channel.close()``; unless the task itself is being
    cancelled, that is an RPC failure (CANCELLED), not a cancellation of the caller.
    A coroutine rather than a context manager: thousands of these are open at once.
    """
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise from_aio_error(exc) from exc
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        raise RpcError(
            "the call was cancelled locally (is the channel closed?)",
            code=grpc.StatusCode.CANCELLED,
        ) from exc


class GrpcTransport:
    """:class:`OperationsTransport` over a ``grpc.aio`` channel (which it does not own)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = operations_pb2_grpc.OperationsStub(channel)

    async def get(
        self, name: str, *, timeout: float | None, metadata: Metadata
    ) -> operations_pb2.Operation:
        request = operations_pb2.GetOperationRequest(name=name)
        return await _unary(self._stub.GetOperation(request, timeout=timeout, metadata=metadata))

    async def wait(
        self, name: str, wait: float | None, *, timeout: float | None, metadata: Metadata
    ) -> operations_pb2.Operation:
        request = operations_pb2.WaitOperationRequest(name=name)
        if wait is not None:
            request.timeout.CopyFrom(seconds_duration(max(wait, 0.0)))
        return await _unary(self._stub.WaitOperation(request, timeout=timeout, metadata=metadata))

    async def cancel(self, name: str, *, timeout: float | None, metadata: Metadata) -> None:
        request = operations_pb2.CancelOperationRequest(name=name)
        await _unary(self._stub.CancelOperation(request, timeout=timeout, metadata=metadata))

    async def delete(self, name: str, *, timeout: float | None, metadata: Metadata) -> None:
        request = operations_pb2.DeleteOperationRequest(name=name)
        await _unary(self._stub.DeleteOperation(request, timeout=timeout, metadata=metadata))

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
        return await _unary(self._stub.ListOperations(request, timeout=timeout, metadata=metadata))
