"""Long polls against servers that implement WaitOperation their own way; pacing."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import empty_pb2

from lro_async import AsyncOperationsClient
from lro_async.client.pacing import Pacer

from ..waiting import until
from .conftest import FAST
from .polling_server import OperationsTestServer


@pytest.fixture
async def immediate_server() -> AsyncIterator[OperationsTestServer]:
    server = OperationsTestServer(wait="immediate")
    await server.start()
    yield server
    await server.stop()


async def test_the_rpc_deadline_is_a_little_beyond_the_wait(
    long_poll_server: OperationsTestServer, long_poll_client: AsyncOperationsClient
) -> None:
    name = long_poll_server.create()
    task = asyncio.create_task(long_poll_client.operation(name).result())
    await until(
        lambda: (
            long_poll_server.calls["WaitOperation"] == 2
            and long_poll_server.in_flight["WaitOperation"] == 1
        ),
        "the long poll never opened after the probe",
    )
    long_poll_server.complete(name, empty_pb2.Empty())
    await task
    asked = long_poll_server.wait_timeouts[-1]
    remaining = long_poll_server.wait_time_remaining[-1]
    assert asked is not None
    assert remaining is not None
    margin = long_poll_client.policy.deadline_margin
    assert asked < remaining <= asked + margin + 1.0  # gRPC rounds long timeouts up


async def test_a_refused_open_is_retried(
    long_poll_server: OperationsTestServer, long_poll_client: AsyncOperationsClient
) -> None:
    name = long_poll_server.create()
    long_poll_server.complete(name, empty_pb2.Empty())
    long_poll_server.inject(grpc.StatusCode.CANCELLED, 3, method="WaitOperation")
    long_poll_server.inject(grpc.StatusCode.UNAVAILABLE, 2, method="WaitOperation")
    assert await long_poll_client.operation(name).result(timeout=5) is not None
    assert long_poll_server.calls["WaitOperation"] == 6
    assert long_poll_server.calls["GetOperation"] == 0


async def test_a_server_that_answers_waits_at_once_is_polled_with_backoff(
    immediate_server: OperationsTestServer,
) -> None:
    async with grpc.aio.insecure_channel(immediate_server.target) as channel:
        client = AsyncOperationsClient(channel, policy=FAST)
        name = immediate_server.create()
        task = asyncio.create_task(client.operation(name).result())
        await asyncio.sleep(0.2)  # the period whose calls are counted
        immediate_server.complete(name, empty_pb2.Empty())
        await task
        # 10 ms pauses for 0.2 s: about 20 calls, not a hot loop of thousands.
        assert 5 <= immediate_server.calls["WaitOperation"] <= 30


async def test_long_poll_opens_are_paced(long_poll_server: OperationsTestServer) -> None:
    async with grpc.aio.insecure_channel(long_poll_server.target) as channel:
        policy = dataclasses.replace(FAST, opens_per_second=500.0, open_burst=20)
        client = AsyncOperationsClient(channel, policy=policy)
        names = [long_poll_server.create() for _ in range(120)]
        started = time.monotonic()
        tasks = [asyncio.create_task(client.operation(name).result()) for name in names]
        await until(
            lambda: long_poll_server.calls["WaitOperation"] >= 120, "the 120 opens never came"
        )
        elapsed = time.monotonic() - started
        assert 0.18 <= elapsed <= 0.5, "100 opens past the burst at 500/s take 0.2 s"
        for name in names:
            long_poll_server.complete(name, empty_pb2.Empty())
        await asyncio.gather(*tasks)


async def test_an_abandoned_open_does_not_delay_the_next() -> None:
    pacer = Pacer(max_in_flight=1, opens_per_second=10.0, open_burst=1)
    await pacer.open()
    waiting = [asyncio.create_task(pacer.open()) for _ in range(50)]  # 5 s of opens
    await until(lambda: pacer._opening.locked(), "the opens never queued")  # the head sleeps
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    started = time.monotonic()
    await pacer.open()
    assert time.monotonic() - started <= 0.1 + 0.05


async def test_short_rpcs_wait_for_a_slot() -> None:
    pacer = Pacer(max_in_flight=2, opens_per_second=1.0, open_burst=1)
    inside = 0
    most = 0

    async def rpc() -> None:
        nonlocal inside, most
        async with pacer.slot():
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.005)
            inside -= 1

    await asyncio.gather(*(rpc() for _ in range(10)))
    assert most == 2


async def test_a_server_that_holds_waits_past_their_timeout_blocks_no_other_waiter() -> None:
    """The first wait of a client asks for no wait at all, to learn whether the server
    long-polls. A server that holds it anyway (until the deadline) has WaitOperation: the
    other waiters must go ahead rather than queue behind probe after probe."""
    server = OperationsTestServer(wait="hold")
    await server.start()
    try:
        async with (
            grpc.aio.insecure_channel(server.target) as channel,
            AsyncOperationsClient(
                channel, policy=dataclasses.replace(FAST, deadline_margin=0.3)
            ) as client,
        ):
            stuck = [server.create() for _ in range(20)]  # never finish
            waits = [asyncio.create_task(client.operation(n).result()) for n in stuck]
            # One of them is probing now, its call held by the server.
            await until(lambda: server.in_flight["WaitOperation"] >= 1, "no probe held")
            finished = server.create()
            server.complete(finished, empty_pb2.Empty())
            started = time.monotonic()
            await client.operation(finished).result(timeout=5)
            assert time.monotonic() - started < 1.0
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
    finally:
        await server.stop()
