"""A manager served over one transport (gRPC or HTTP/JSON), and clients of it.

The client tests that mean "the client against a real server" take the ``served`` fixture
(conftest.py), which runs each of them once per transport. What they count is the same
over both: the calls the server was asked for, by the gRPC method's short name
(``"WaitOperation"``), whatever the wire; over HTTP a request maps to the RPC it stands
for (``POST {name}:wait`` is ``WaitOperation``, both ``:watch`` routes are ``Watch``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable

import grpc

from lro_async import AsyncOperationsClient, Authorizer, OperationManager, WaitPolicy
from lro_async.http import OperationsApp, asgi_app, running_http_server
from lro_async.http.app import Receive, Scope, Send
from lro_async.server.watching import WatchServicer
from lro_async.testing import serve

from .counting import CountingInterceptor, StreamCounter

TRANSPORTS = ["grpc", "http"]

#: (the RPC's short name, its request metadata or HTTP headers), in the order sent.
Sent = list[tuple[str, dict[str, str | bytes]]]


class HttpCounter:
    """ASGI middleware: counts the requests an HTTP app receives by the RPC they stand for
    and remembers their headers, as CountingInterceptor does on a gRPC channel."""

    def __init__(self, app: OperationsApp) -> None:
        self.app = app
        self.calls: collections.Counter[str] = collections.Counter()
        self.metadata: Sent = []

    @staticmethod
    def rpc(method: str, path: str) -> str:
        last = path.rpartition("/")[2]
        verb = last.rpartition(":")[2] if ":" in last else ""
        if verb == "watch":
            return "Watch"
        if method == "POST":
            return {"wait": "WaitOperation", "cancel": "CancelOperation"}.get(verb, method)
        if method == "DELETE":
            return "DeleteOperation"
        return "ListOperations" if last == "operations" else "GetOperation"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            rpc = self.rpc(scope["method"], scope["path"])
            self.calls[rpc] += 1
            headers: dict[str, str | bytes] = {
                key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
            }
            self.metadata.append((rpc, headers))
        await self.app(scope, receive, send)


@dataclasses.dataclass
class Remote:
    """A manager served over *transport*, with a client of it in ``client``.

    ``calls`` counts what every client made by ``connect`` (and ``client``) asked the server
    for, by RPC; ``metadata`` holds each request's metadata (gRPC) or headers (HTTP).
    """

    transport: str
    watch: bool
    """Whether the server has the Watch extension (the client multiplexes its waits)."""
    manager: OperationManager
    calls: collections.Counter[str]
    metadata: Sent
    client: AsyncOperationsClient
    connect: Callable[[WaitPolicy], AsyncOperationsClient]
    """A new client of the server with this policy (the caller closes it)."""
    _streams: Callable[[], int]
    _long_polls: Callable[[], int]
    app: OperationsApp | None = None
    """The HTTP app (None over gRPC), for what only it counts."""

    @property
    def streams(self) -> int:
        """Watch streams (per-operation or collection) the server holds open now."""
        return self._streams()

    @property
    def long_polls(self) -> int:
        """WaitOperation calls (``:wait`` requests) the server holds open now."""
        return self._long_polls()

    @property
    def waits(self) -> int:
        """The waits the server has taken in: names on the Watch stream if it has the
        extension, else long polls open (and their names watched)."""
        if self.watch:
            return self.manager.watched
        return min(self.manager.watched, self.long_polls)


@contextlib.asynccontextmanager
async def serve_over(
    transport: str,
    manager: OperationManager | None = None,
    *,
    policy: WaitPolicy | None = None,
    watch: bool = True,
    max_wait: float = 1800.0,
    authorize: Authorizer | None = None,
) -> AsyncIterator[Remote]:
    """Serve *manager* (default: a new one) over *transport*, ``"grpc"`` or ``"http"``;
    ``Remote.client`` has *policy* (default: the default one). On exit the client and
    the manager close, then the server stops.

    :param watch: also serve the Watch extension.
    :param max_wait: the server's cap on one wait, in seconds.
    :param authorize: the server's authorizer, for every route (None: allow everything).
    """
    manager = manager if manager is not None else OperationManager()
    policy = policy if policy is not None else WaitPolicy()
    serving = _serve_grpc if transport == "grpc" else _serve_http
    async with serving(
        manager, policy, watch=watch, max_wait=max_wait, authorize=authorize
    ) as remote:
        try:
            yield remote
        finally:
            await remote.client.aclose()


@contextlib.asynccontextmanager
async def _serve_grpc(
    manager: OperationManager,
    policy: WaitPolicy,
    *,
    watch: bool,
    max_wait: float,
    authorize: Authorizer | None,
) -> AsyncIterator[Remote]:
    watching = WatchServicer(manager, authorize=authorize)  # by hand, to read its streams
    register = watching.add_to_server if watch else None
    async with serve(
        manager, max_wait=max_wait, authorize=authorize, watch=False, register=register
    ) as served:
        counter = CountingInterceptor()
        interceptors = [counter, StreamCounter(counter)]
        async with grpc.aio.insecure_channel(served.target, interceptors=interceptors) as channel:

            def connect(policy: WaitPolicy) -> AsyncOperationsClient:
                return AsyncOperationsClient(channel, policy=policy)

            yield Remote(
                "grpc",
                watch,
                manager,
                counter.calls,
                counter.metadata,
                connect(policy),
                connect,
                lambda: watching.streams,
                lambda: served.servicer.waiting,
            )


@contextlib.asynccontextmanager
async def _serve_http(
    manager: OperationManager,
    policy: WaitPolicy,
    *,
    watch: bool,
    max_wait: float,
    authorize: Authorizer | None,
) -> AsyncIterator[Remote]:
    app = asgi_app(manager, watch=watch, max_wait=max_wait, authorize=authorize)
    counter = HttpCounter(app)
    async with running_http_server(counter, grace=1.0) as server:

        def connect(policy: WaitPolicy) -> AsyncOperationsClient:
            return AsyncOperationsClient.from_url(server.url, policy=policy)

        try:
            yield Remote(
                "http",
                watch,
                manager,
                counter.calls,
                counter.metadata,
                connect(policy),
                connect,
                lambda: app.watches.streams if app.watches is not None else 0,
                lambda: app.waiting,
                app,
            )
        finally:  # before the server stops, so that the waits it holds answer at once
            await manager.aclose()
