"""Helpers for tests of code that uses lro_async: a real server on 127.0.0.1:0, instant backoff.

>>> import lro_async, lro_async.testing
>>> async def test_my_service() -> None:
...     async with lro_async.testing.serve() as served:
...         op = await served.manager.create()
...         client = lro_async.AsyncOperationsClient(served.channel)
...         await served.manager.complete(op.name)
...         await client.operation(op.name)
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from .backoff import Backoff
from .client.policy import channel_options
from .server.auth import Authorizer
from .server.manager import OperationManager
from .server.servicer import AsyncOperationsServicer, server_options
from .server.watching import WatchServicer

__all__ = ["INSTANT", "RpcCounter", "Served", "serve"]

INSTANT = Backoff.instant()
"""A backoff that never sleeps, for tests of polling and retries."""


class RpcCounter(grpc.aio.ServerInterceptor):
    """A server interceptor that counts the calls a server receives, by full method name.

    >>> counter = RpcCounter()
    >>> server = grpc.aio.server(interceptors=[counter])
    >>> counter.by_method("google.longrunning.Operations")  # e.g. {"WaitOperation": 3}
    {}
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        self.counts[handler_call_details.method] += 1
        return await continuation(handler_call_details)

    def by_method(self, service: str) -> dict[str, int]:
        """The counts of *service*'s methods, by short method name."""
        prefix = f"/{service}/"
        return {
            method.removeprefix(prefix): count
            for method, count in self.counts.items()
            if method.startswith(prefix)
        }


@dataclasses.dataclass(frozen=True)
class Served:
    """A running server: its manager and servicer, its address, and a channel to it."""

    manager: OperationManager
    servicer: AsyncOperationsServicer
    server: grpc.aio.Server
    target: str
    channel: grpc.aio.Channel


@contextlib.asynccontextmanager
async def serve(
    manager: OperationManager | None = None,
    *,
    max_wait: float = 1800.0,
    authorize: Authorizer | None = None,
    register: Callable[[grpc.aio.Server], None] | None = None,
    tls: tuple[grpc.ServerCredentials, grpc.ChannelCredentials] | None = None,
    watch: bool = True,
) -> AsyncIterator[Served]:
    """Serve *manager* (default: a new one on a MemoryStore) on ``127.0.0.1:0``.

    On exit the channel closes, the server stops and the manager closes.

    :param authorize: the servicer's authorizer (None: allow everything).
    :param register: adds more services to the server before it starts.
    :param tls: serve TLS: the server's credentials (``grpc.ssl_server_credentials``) and
        those of ``Served.channel`` (``grpc.ssl_channel_credentials``); the server's
        certificate must be valid for ``127.0.0.1``. None: plaintext.
    :param watch: also serve the Watch extension, with the same authorizer (False: a
        server that has only the standard service).
    """
    manager = manager if manager is not None else OperationManager()
    server = grpc.aio.server(options=server_options())
    servicer = AsyncOperationsServicer(manager, max_wait=max_wait, authorize=authorize)
    servicer.add_to_server(server)
    if watch:
        WatchServicer(manager, authorize=authorize).add_to_server(server)
    if register is not None:
        register(server)
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", tls[0])
    await server.start()
    target = f"127.0.0.1:{port}"
    try:
        async with (
            grpc.aio.insecure_channel(target, options=channel_options())
            if tls is None
            else grpc.aio.secure_channel(target, tls[1], options=channel_options())
        ) as channel:
            yield Served(manager, servicer, server, target, channel)
    finally:
        await manager.aclose()
        await server.stop(grace=None)
