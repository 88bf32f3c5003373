"""Timeouts: honoured exactly (never early, a few ms late at most), the remote op untouched."""

from __future__ import annotations

import asyncio
import time

import pytest
from google.protobuf import empty_pb2

from lro_async import AsyncOperationsClient, OperationTimeout

from ..waiting import until
from .polling_server import OperationsTestServer

LATE = 0.05  # how late a timeout may fire, at most (a loaded 2-core machine)


@pytest.mark.parametrize("timeout", [0.0, 0.02, 0.1, 0.25])
async def test_timeout_is_never_early_and_barely_late(
    server: OperationsTestServer, client: AsyncOperationsClient, timeout: float
) -> None:
    name = server.create()
    op = client.operation(name)
    started = time.monotonic()
    with pytest.raises(OperationTimeout) as caught:
        await op.result(timeout=timeout)
    elapsed = time.monotonic() - started
    assert timeout <= elapsed <= timeout + LATE
    assert isinstance(caught.value, TimeoutError)
    assert name in str(caught.value)
    assert not server.operations[name].done
    assert server.calls["CancelOperation"] == 0


async def test_long_poll_timeout_is_exact_and_clamps_each_call(
    long_poll_server: OperationsTestServer, long_poll_client: AsyncOperationsClient
) -> None:
    name = long_poll_server.create()
    started = time.monotonic()
    with pytest.raises(OperationTimeout):
        await long_poll_client.operation(name).result(timeout=0.3)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed <= 0.3 + LATE
    assert long_poll_server.calls["WaitOperation"] == 2
    probe, asked = long_poll_server.wait_timeouts
    assert probe == 0
    assert asked is not None
    assert 0.25 < asked <= 0.3, "the wait asked for is clamped to the time left"


async def test_without_a_timeout_each_long_poll_asks_for_the_policy_wait(
    long_poll_server: OperationsTestServer, long_poll_client: AsyncOperationsClient
) -> None:
    name = long_poll_server.create()
    task = asyncio.create_task(long_poll_client.operation(name).result())
    await until(
        lambda: len(long_poll_server.wait_timeouts) == 2,
        "the client never sent its long poll after the probe",
    )
    long_poll_server.complete(name, empty_pb2.Empty())
    await task
    assert long_poll_server.wait_timeouts == [0.0, long_poll_client.policy.long_poll]


async def test_awaiters_with_and_without_timeouts_share_one_waiter(
    long_poll_server: OperationsTestServer, long_poll_client: AsyncOperationsClient
) -> None:
    name = long_poll_server.create()
    op = long_poll_client.operation(name, result_type=empty_pb2.Empty)
    patient = asyncio.create_task(op.result())
    started = time.monotonic()
    with pytest.raises(OperationTimeout):
        await op.result(timeout=0.1)
    assert time.monotonic() - started >= 0.1
    assert not patient.done()  # the timeout ended one awaiter, not the shared waiter
    long_poll_server.complete(name, empty_pb2.Empty())
    assert await patient == empty_pb2.Empty()
    assert long_poll_server.calls["WaitOperation"] == 2


async def test_timeouts_stay_precise_with_many_awaiters(
    long_poll_server: OperationsTestServer, long_poll_client: AsyncOperationsClient
) -> None:
    names = [long_poll_server.create() for _ in range(200)]

    async def timed(name: str) -> float:
        started = time.monotonic()
        with pytest.raises(OperationTimeout):
            await long_poll_client.operation(name).result(timeout=0.2)
        return time.monotonic() - started

    elapsed = await asyncio.gather(*(timed(name) for name in names))
    assert min(elapsed) >= 0.2
    # Precise: they end together, within a few loop iterations of each other, however
    # late a loaded machine runs the loop (so no absolute upper bound).
    assert max(elapsed) - min(elapsed) <= LATE


async def test_a_negative_timeout_is_refused(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    with pytest.raises(ValueError, match="timeout"):
        await client.operation(server.create()).result(timeout=-1)
