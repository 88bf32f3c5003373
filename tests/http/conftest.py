from __future__ import annotations

import collections
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from lro_async import AsyncOperationsClient, Backoff, OperationManager, WaitPolicy
from lro_async.http import OperationsApp, asgi_app, running_http_server
from lro_async.http.app import Receive, Scope, Send

#: Polls every 10 ms and retries at once: quick tests with a countable stream of requests.
FAST = WaitPolicy(
    poll=Backoff(initial=0.01, multiplier=1.0, maximum=0.01, jitter=False),
    retry=Backoff.instant(),
)


class Counted:
    """ASGI middleware: counts requests by kind (``GET``, ``POST:wait``, ...) and can fail
    the next few requests of a kind with a given HTTP status, as a proxy in front would."""

    def __init__(self, app: OperationsApp) -> None:
        self.app = app
        self.counts: collections.Counter[str] = collections.Counter()
        self.failures: dict[str, list[tuple[int, bytes]]] = collections.defaultdict(list)

    def fail(self, kind: str, status: int, times: int = 1, body: bytes = b"") -> None:
        self.failures[kind].extend([(status, body)] * times)

    @staticmethod
    def kind(scope: Scope) -> str:
        method: str = scope["method"]
        path: str = scope["path"]
        last = path.rpartition("/")[2]
        if method == "POST" and ":" in last:
            return f"POST:{last.rpartition(':')[2]}"
        if method == "GET" and path.endswith("/operations"):
            return "LIST"
        return method

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = self.kind(scope)
        self.counts[kind] += 1
        if self.failures[kind]:
            status, body = self.failures[kind].pop(0)
            headers = [(b"content-type", b"text/html"), (b"content-length", b"%d" % len(body))]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclasses.dataclass
class Served:
    """A manager served over HTTP by real uvicorn on 127.0.0.1:0, and clients of it."""

    manager: OperationManager
    app: OperationsApp
    counted: Counted
    url: str
    http: httpx.AsyncClient  # for requests made by hand
    client: AsyncOperationsClient  # lro_async's HTTP client


@contextlib.asynccontextmanager
async def serve_http(
    manager: OperationManager | None = None,
    *,
    policy: WaitPolicy = FAST,
    headers: dict[str, str] | None = None,
    **options: Any,
) -> AsyncIterator[Served]:
    """Serve *manager* (default: a new one) with ``asgi_app(manager, **options)``."""
    manager = manager if manager is not None else OperationManager()
    app = asgi_app(manager, **options)
    counted = Counted(app)
    async with (
        running_http_server(counted, grace=1.0) as server,
        httpx.AsyncClient(base_url=server.url, verify=False) as http,
    ):
        client = AsyncOperationsClient.from_url(server.url, headers=headers or {}, policy=policy)
        try:
            yield Served(manager, app, counted, server.url, http, client)
        finally:
            await client.aclose()
            await manager.aclose()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve_http() as served:
        yield served
