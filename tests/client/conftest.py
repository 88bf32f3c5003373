from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from lro_async import AsyncOperationsClient, Backoff, WaitPolicy

from .polling_server import OperationsTestServer
from .remote import TRANSPORTS, Remote, serve_over

#: Polls every 10 ms and retries at once: quick tests with a countable stream of RPCs.
FAST = WaitPolicy(
    poll=Backoff(initial=0.01, multiplier=1.0, maximum=0.01, jitter=False),
    retry=Backoff.instant(),
)


def waiter_tasks(prefix: str = "lro_async") -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix)]


async def assert_no_waiter_tasks(prefix: str = "lro_async") -> None:
    """Fail if a waiter task is still alive a few loop iterations from now."""
    for _ in range(5):
        if not waiter_tasks(prefix):
            return
        await asyncio.sleep(0)
    raise AssertionError(f"leaked waiter tasks: {waiter_tasks(prefix)}")


@pytest.fixture
def watch() -> bool:
    """Whether ``served`` has the Watch extension; a module parametrizes it to run both."""
    return True


@pytest.fixture(params=TRANSPORTS)
async def served(request: pytest.FixtureRequest, watch: bool) -> AsyncIterator[Remote]:
    """A real OperationManager served over gRPC, then over HTTP/JSON, and a client of it
    (policy FAST) over that transport: each test that takes it runs once per transport."""
    async with serve_over(request.param, policy=FAST, watch=watch) as remote:
        yield remote
        # The client's own waiters (the server's tasks are lro_async's too, and run on).
        await assert_no_waiter_tasks("lro_async waiter ")


@pytest.fixture
async def server() -> AsyncIterator[OperationsTestServer]:
    server = OperationsTestServer(wait="unimplemented")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def long_poll_server() -> AsyncIterator[OperationsTestServer]:
    server = OperationsTestServer(wait="long-poll")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def channel(server: OperationsTestServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.target) as channel:
        yield channel


@pytest.fixture
async def client(channel: grpc.aio.Channel) -> AsyncIterator[AsyncOperationsClient]:
    client = AsyncOperationsClient(channel, policy=FAST)
    yield client
    await assert_no_waiter_tasks()
    await client.aclose()


@pytest.fixture
async def long_poll_client(
    long_poll_server: OperationsTestServer,
) -> AsyncIterator[AsyncOperationsClient]:
    async with grpc.aio.insecure_channel(long_poll_server.target) as channel:
        client = AsyncOperationsClient(channel, policy=FAST)
        yield client
        await assert_no_waiter_tasks()
        await client.aclose()
