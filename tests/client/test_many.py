"""as_completed and gather over many operations (test server; the real one in test_real_server)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time

import grpc
import pytest
from google.protobuf import wrappers_pb2

from lro_async import (
    AsyncOperation,
    AsyncOperationsClient,
    OperationFailed,
    OperationNotFound,
    OperationTimeout,
)
from lro_async.client.many import as_completed, gather

from ..waiting import until
from .conftest import FAST, waiter_tasks
from .polling_server import OperationsTestServer

Op = AsyncOperation[wrappers_pb2.Int64Value, wrappers_pb2.Int64Value]


def make_ops(server: OperationsTestServer, client: AsyncOperationsClient, n: int) -> list[Op]:
    return [
        client.operation(
            server.create(),
            result_type=wrappers_pb2.Int64Value,
            metadata_type=wrappers_pb2.Int64Value,
        )
        for _ in range(n)
    ]


async def finish_in_order(server: OperationsTestServer, ops: list[Op], pause: float) -> None:
    await until(lambda: server.calls["GetOperation"] >= len(ops), "not every operation was polled")
    for i, op in enumerate(ops):
        await asyncio.sleep(pause)  # completions apart, in order
        server.complete(op.name, wrappers_pb2.Int64Value(value=i))


async def test_as_completed_yields_in_completion_order(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    ops = make_ops(server, client, 5)
    order = [ops[3], ops[0], ops[4], ops[1], ops[2]]
    seen: list[Op] = []
    async with asyncio.TaskGroup() as tg:
        tg.create_task(finish_in_order(server, order, 0.03))
        async for op in as_completed(ops):
            assert op.done
            seen.append(op)
    assert seen == order
    assert [(await op).value for op in seen] == [0, 1, 2, 3, 4]


async def test_as_completed_yields_done_operations_and_wait_errors(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    done = client.operation(server.create())
    server.complete(done.name, wrappers_pb2.Int64Value(value=1))
    await done
    missing = client.operation("operations/missing")
    seen = [op async for op in as_completed([done, missing])]
    assert seen == [done, missing]
    with pytest.raises(OperationNotFound):
        await missing


async def test_as_completed_timeout(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    ops = make_ops(server, client, 3)
    server.complete(ops[1].name, wrappers_pb2.Int64Value(value=1))
    seen: list[Op] = []

    async def drain() -> None:
        async for op in as_completed(ops, timeout=0.1):
            seen.append(op)

    started = time.monotonic()
    with pytest.raises(OperationTimeout, match="2 of 3"):
        await drain()
    assert 0.1 <= time.monotonic() - started <= 0.15
    assert seen == [ops[1]]
    assert waiter_tasks() == []


async def test_breaking_out_of_as_completed_stops_every_waiter(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    ops = make_ops(server, client, 50)
    server.complete(ops[7].name, wrappers_pb2.Int64Value(value=7))
    async with contextlib.aclosing(as_completed(ops)) as finished:
        async for op in finished:
            assert op is ops[7]
            break
    assert waiter_tasks() == []


async def test_gather_returns_results_in_the_order_given(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    ops = make_ops(server, client, 200)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(finish_in_order(server, list(reversed(ops)), 0.0005))
        results = await gather(*ops, ops[0], timeout=10)
    assert [r.value for r in results] == [*range(199, -1, -1), 199]


async def test_gather_raises_the_first_error(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    ops = make_ops(server, client, 10)
    server.fail(ops[4].name, grpc.StatusCode.ABORTED, "nope")
    with pytest.raises(OperationFailed, match="nope"):
        await gather(*ops)
    assert waiter_tasks() == []
    assert not any(server.operations[op.name].done for op in ops if op is not ops[4])


async def test_gather_can_return_exceptions(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    ops = make_ops(server, client, 3)
    server.complete(ops[0].name, wrappers_pb2.Int64Value(value=5))
    server.fail(ops[1].name, grpc.StatusCode.ABORTED, "nope")
    missing = client.operation("operations/missing", result_type=wrappers_pb2.Int64Value)
    server.complete(ops[2].name, wrappers_pb2.Int64Value(value=6))
    results = await gather(*ops, missing, return_exceptions=True)
    assert results[0] == wrappers_pb2.Int64Value(value=5)
    assert isinstance(results[1], OperationFailed)
    assert results[2] == wrappers_pb2.Int64Value(value=6)
    assert isinstance(results[3], OperationNotFound)


async def test_gather_timeout(server: OperationsTestServer, client: AsyncOperationsClient) -> None:
    ops = make_ops(server, client, 3)
    with pytest.raises(OperationTimeout):
        await gather(*ops, timeout=0.05, return_exceptions=True)


async def test_gather_of_nothing(client: AsyncOperationsClient) -> None:
    assert await gather() == []


async def test_short_rpcs_in_flight_are_capped_per_client(
    server: OperationsTestServer, channel: grpc.aio.Channel
) -> None:
    client = AsyncOperationsClient(channel, policy=dataclasses.replace(FAST, max_in_flight=4))
    ops = make_ops(server, client, 100)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(finish_in_order(server, ops, 0.001))
        await gather(*ops)
    assert 1 <= server.max_in_flight["GetOperation"] <= 4
