"""Cancelling awaiters at awkward moments: no leaked task, the remote operation untouched."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import grpc
import pytest
from google.protobuf import empty_pb2, wrappers_pb2

from lro_async import AsyncOperationsClient, Backoff, RpcError

from ..waiting import until
from .conftest import FAST, assert_no_waiter_tasks, waiter_tasks
from .polling_server import OperationsTestServer


def still_running(server: OperationsTestServer, name: str) -> bool:
    return not server.operations[name].done and server.calls["CancelOperation"] == 0


async def test_cancel_while_an_rpc_is_in_flight(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    with pytest.raises(RpcError):
        await client.operation("operations/unknown")  # the client learns to poll
    name = server.create()
    server.hold = asyncio.Event()
    server.entered.clear()
    task = asyncio.create_task(client.operation(name).result())
    await server.entered.wait()
    assert server.in_flight["GetOperation"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert waiter_tasks() == []
    server.hold.set()
    assert still_running(server, name)


async def test_cancel_while_sleeping_between_polls(
    server: OperationsTestServer, channel: grpc.aio.Channel
) -> None:
    slow = dataclasses.replace(FAST, poll=Backoff(initial=30.0, maximum=30.0, jitter=False))
    client = AsyncOperationsClient(channel, policy=slow)
    name = server.create()
    task = asyncio.create_task(client.operation(name).result())
    await until(
        lambda: server.calls["GetOperation"] >= 1 and server.in_flight["GetOperation"] == 0,
        "the first poll was never answered (the waiter then sleeps 30 s)",
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert waiter_tasks() == []
    assert still_running(server, name)


async def test_cancel_before_the_first_rpc(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create()
    task = asyncio.create_task(client.operation(name).result())
    await asyncio.sleep(0)  # the awaiter has joined; its waiter has made no RPC yet
    # (It follows the name over the Watch stream, without a task of its own, until the
    # stream says whether the server has the extension.)
    assert len(client._waiters) == 1 and sum(server.calls.values()) == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert waiter_tasks() == []
    assert still_running(server, name)


async def test_cancel_at_the_moment_the_operation_completes(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    for _ in range(20):
        name = server.create()
        op = client.operation(name, result_type=empty_pb2.Empty)
        task = asyncio.create_task(op.result())
        other = asyncio.create_task(op.result())
        polls = server.calls["GetOperation"]
        await until(lambda p=polls: server.calls["GetOperation"] > p, "the waiter never polled")
        server.complete(name, empty_pb2.Empty())
        await asyncio.sleep(0.009)  # the moment aimed at: about when the next poll sees it
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert await other == empty_pb2.Empty()
        await assert_no_waiter_tasks()


async def test_cancelling_one_awaiter_leaves_the_others_waiting(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create()
    op = client.operation(name, result_type=wrappers_pb2.StringValue)
    leaving = asyncio.create_task(op.result())
    staying = asyncio.create_task(
        client.operation(name, result_type=wrappers_pb2.StringValue).result()
    )
    await until(lambda: server.calls["GetOperation"] >= 1, "the waiter never polled")
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert len(waiter_tasks()) == 1
    polls = server.calls["GetOperation"]
    await until(lambda: server.calls["GetOperation"] > polls, "no poll for the other awaiter")
    server.complete(name, wrappers_pb2.StringValue(value="done"))
    assert (await staying).value == "done"
    assert server.max_in_flight_per_name["GetOperation", name] == 1


async def test_cancelling_every_awaiter_stops_the_waiter(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create()
    op = client.operation(name)
    tasks = [asyncio.create_task(op.result()) for _ in range(100)]
    await until(lambda: server.calls["GetOperation"] >= 1, "the waiter never polled")
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert waiter_tasks() == []
    await asyncio.sleep(0.02)  # a request sent before the cancellation may still arrive
    polls = server.calls["GetOperation"]
    await asyncio.sleep(0.05)  # a period in which nothing is sent
    assert server.calls["GetOperation"] == polls, "no more RPCs once nobody waits"
    assert still_running(server, name)


async def test_cancelled_twice_while_leaving(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create()
    server.hold = asyncio.Event()
    task = asyncio.create_task(client.operation(name).result())
    await until(lambda: sum(server.in_flight.values()) == 1, "no call held by the server")
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_no_waiter_tasks()
    assert still_running(server, name)


async def test_breaking_out_of_progress_stops_the_waiter(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create(wrappers_pb2.Int32Value(value=1))
    op = client.operation(name, metadata_type=wrappers_pb2.Int32Value)
    async with contextlib.aclosing(op.progress()) as updates:
        async for md in updates:
            assert md.value == 1
            break
    assert waiter_tasks() == []


async def test_a_new_awaiter_after_the_last_left_starts_afresh(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create()
    op = client.operation(name, result_type=empty_pb2.Empty)
    task = asyncio.create_task(op.result())
    await until(lambda: server.calls["GetOperation"] >= 1, "the waiter never polled")
    task.cancel()
    again = asyncio.create_task(op.result())  # joins while the old waiter is stopping
    with pytest.raises(asyncio.CancelledError):
        await task
    server.complete(name, empty_pb2.Empty())
    assert await again == empty_pb2.Empty()


async def test_closing_the_client_ends_every_wait(
    server: OperationsTestServer, channel: grpc.aio.Channel
) -> None:
    client = AsyncOperationsClient(channel, policy=FAST)
    name = server.create()
    tasks = [asyncio.create_task(client.operation(name).result()) for _ in range(5)]
    await until(lambda: server.calls["GetOperation"] >= 1, "the waiter never polled")
    await client.aclose()
    for task in tasks:
        with pytest.raises(RpcError, match="closed") as caught:
            await task
        assert caught.value.code is grpc.StatusCode.CANCELLED
    assert waiter_tasks() == []
    with pytest.raises(RpcError, match="closed"):
        await client.operation(name)
    assert still_running(server, name)


async def test_closing_the_channel_ends_every_wait(server: OperationsTestServer) -> None:
    channel = grpc.aio.insecure_channel(server.target)
    client = AsyncOperationsClient(channel, policy=FAST)
    name = server.create()
    task = asyncio.create_task(client.operation(name).result())
    await until(lambda: server.calls["GetOperation"] >= 1, "the waiter never polled")
    await channel.close()
    with pytest.raises(grpc.aio.UsageError, match="closed"):
        await asyncio.wait_for(task, 5)
    assert waiter_tasks() == []


async def test_cancel_the_waiter_that_probes_while_others_wait_for_its_verdict(
    long_poll_server: OperationsTestServer, long_poll_client: AsyncOperationsClient
) -> None:
    server, client = long_poll_server, long_poll_client
    first, second = server.create(), server.create()
    server.hold = asyncio.Event()
    server.entered.clear()
    prober = asyncio.create_task(client.operation(first).result())
    await server.entered.wait()  # the probe is in flight, held by the server
    follower = asyncio.create_task(client.operation(second, result_type=empty_pb2.Empty).result())
    await asyncio.sleep(0.02)  # a period in which the follower sends nothing of its own
    assert server.calls["WaitOperation"] == 1, "the follower waits for the verdict"
    prober.cancel()
    with pytest.raises(asyncio.CancelledError):
        await prober
    server.hold.set()  # the follower probes in its turn
    server.complete(second, empty_pb2.Empty())
    assert await follower == empty_pb2.Empty()
    assert still_running(server, first)
    await assert_no_waiter_tasks()
