"""A client interceptor that counts RPCs by method and remembers their metadata."""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class CountingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Counts every unary call by its method's short name (``"WaitOperation"``)."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.metadata: list[tuple[str, dict[str, str | bytes]]] = []

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Req], Awaitable[grpc.aio.UnaryUnaryCall[Req, Resp]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Req,
    ) -> Resp | grpc.aio.UnaryUnaryCall[Req, Resp]:
        method: str | bytes = client_call_details.method  # bytes at run time, str in the stubs
        short = (method.decode() if isinstance(method, bytes) else method).rsplit("/", 1)[-1]
        self.calls[short] += 1
        self.metadata.append((short, dict(client_call_details.metadata or ())))
        return await continuation(client_call_details, request)


class StreamCounter(grpc.aio.StreamStreamClientInterceptor):
    """Counts every stream-stream call (the Watch extension's) into a CountingInterceptor."""

    def __init__(self, counts: CountingInterceptor) -> None:
        self.counts = counts

    async def intercept_stream_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        method: str | bytes = client_call_details.method
        short = (method.decode() if isinstance(method, bytes) else method).rsplit("/", 1)[-1]
        self.counts.calls[short] += 1
        self.counts.metadata.append((short, dict(client_call_details.metadata or ())))
        return await continuation(client_call_details, request_iterator)
