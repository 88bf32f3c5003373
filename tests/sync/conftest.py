from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

import lro_async
import lro_async.sync
import lro_async.testing
from lro_async import Backoff
from lro_async.http import asgi_app, running_http_server

T = TypeVar("T")

#: Polls every 10 ms and retries at once.
FAST = lro_async.WaitPolicy(
    poll=Backoff(initial=0.01, multiplier=1.0, maximum=0.01, jitter=False),
    retry=Backoff.instant(),
)


@dataclasses.dataclass
class Server:
    """A real lro_async server running on a thread of its own (the tests' side is sync)."""

    portal: BlockingPortal
    served: lro_async.testing.Served

    @property
    def target(self) -> str:
        return self.served.target

    @property
    def manager(self) -> lro_async.OperationManager:
        return self.served.manager

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` on the server's loop."""

        async def run() -> T:
            return await fn(*args, **kwargs)

        return self.portal.call(run)


@contextlib.contextmanager
def server_thread() -> Iterator[Server]:
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(lro_async.testing.serve()) as served,
    ):
        yield Server(portal, served)


@contextlib.contextmanager
def http_server_thread(manager: lro_async.OperationManager) -> Iterator[str]:
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(
            running_http_server(asgi_app(manager), grace=1.0)
        ) as http,
    ):
        yield http.url


@pytest.fixture
def server() -> Iterator[Server]:
    with server_thread() as server:
        yield server


@pytest.fixture
def client(server: Server) -> Iterator[lro_async.sync.OperationsClient]:
    before = set(threading.enumerate())
    with lro_async.sync.OperationsClient(server.target, policy=FAST) as client:
        yield client
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, f"threads left behind: {left}"
