"""op.until(predicate): the first metadata that satisfies it, over the one shared waiter.

What happens between two polls is set up on the gRPC fake; the rest runs against
lro_async's server over each transport.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import empty_pb2, wrappers_pb2

from lro_async import (
    AsyncOperation,
    AsyncOperationsClient,
    OperationCancelled,
    OperationFailed,
    OperationTimeout,
    UnexpectedOperationState,
)

from ..waiting import until_value
from .polling_server import OperationsTestServer
from .remote import Remote


def pct(value: int) -> wrappers_pb2.Int32Value:
    return wrappers_pb2.Int32Value(value=value)


def typed(
    client: AsyncOperationsClient, name: str
) -> AsyncOperation[empty_pb2.Empty, wrappers_pb2.Int32Value]:
    return client.operation(
        name, result_type=empty_pb2.Empty, metadata_type=wrappers_pb2.Int32Value
    )


async def wait_for_calls(server: OperationsTestServer, count: int) -> None:
    await until_value(lambda: sum(server.calls.values()) >= count, f"fewer than {count} calls")


async def test_the_current_metadata_is_checked_first_without_an_rpc(served: Remote) -> None:
    name = (await served.manager.create(metadata=pct(70))).name
    op = typed(served.client, name)
    await op.refresh()
    calls = sum(served.calls.values())
    assert (await op.until(lambda md: md.value >= 50)).value == 70
    assert sum(served.calls.values()) == calls


async def test_until_returns_the_first_metadata_that_holds_while_the_operation_runs(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create(pct(0))
    op = typed(client, name)
    seen: list[int] = []

    def reached(md: wrappers_pb2.Int32Value) -> bool:
        seen.append(md.value)
        return md.value >= 50

    async def seen_last(value: int) -> None:
        await until_value(lambda: seen[-1:] == [value] or until.done(), f"{value} never seen")

    until = asyncio.create_task(op.until(reached, timeout=10))
    await seen_last(0)
    for step in (10, 40, 60, 80):
        server.set_metadata(name, pct(step))
        await seen_last(step)
        if until.done():
            break
    assert (await until).value == 60
    assert seen == [0, 10, 40, 60]
    assert not op.done, "it returned while the operation runs on"
    server.complete(name, empty_pb2.Empty())
    assert await op == empty_pb2.Empty()


async def test_until_and_await_share_one_stream_of_rpcs(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create(pct(0))
    op = typed(client, name)
    async with asyncio.TaskGroup() as tg:
        results = [tg.create_task(op.result()) for _ in range(5)]
        untils = [tg.create_task(op.until(lambda md: md.value == 100)) for _ in range(5)]
        await wait_for_calls(server, 3)
        server.set_metadata(name, pct(100))
        await asyncio.wait(untils)
        server.complete(name, empty_pb2.Empty())
    assert all(u.result().value == 100 for u in untils)
    assert all(r.result() == empty_pb2.Empty() for r in results)
    assert server.max_in_flight_per_name["GetOperation", name] == 1


async def test_an_operation_that_fails_first_raises_its_error_even_if_its_metadata_holds(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create(pct(0))
    op = typed(client, name)
    until = asyncio.create_task(op.until(lambda md: md.value >= 50, timeout=10))
    await wait_for_calls(server, 2)
    # The metadata reaches the value and the operation fails between two polls: it ended.
    server.set_metadata(name, pct(90))
    server.fail(name, grpc.StatusCode.DATA_LOSS, "disk gone")
    with pytest.raises(OperationFailed, match="disk gone"):
        await until


async def test_a_cancelled_operation_raises_operation_cancelled(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create(pct(0))
    op = typed(client, name)
    until = asyncio.create_task(op.until(lambda md: md.value >= 50, timeout=10))
    await wait_for_calls(server, 2)
    server.fail(name, grpc.StatusCode.CANCELLED, "stopped")
    with pytest.raises(OperationCancelled):
        await until


async def test_success_racing_the_condition_returns_the_final_metadata_if_it_holds(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create(pct(0))
    op = typed(client, name)
    until = asyncio.create_task(op.until(lambda md: md.value >= 50, timeout=10))
    await wait_for_calls(server, 2)
    server.set_metadata(name, pct(100))
    server.complete(name, empty_pb2.Empty())
    assert (await until).value == 100
    assert op.done


async def test_success_without_the_condition_ever_holding_is_an_unexpected_state(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create(pct(0))
    op = typed(client, name)
    until = asyncio.create_task(op.until(lambda md: md.value >= 50, timeout=10))
    await wait_for_calls(server, 2)
    server.set_metadata(name, pct(30))
    server.complete(name, empty_pb2.Empty())
    with pytest.raises(UnexpectedOperationState, match="never satisfied the predicate"):
        await until


async def test_a_done_operation_without_metadata_never_satisfies_it(served: Remote) -> None:
    name = (await served.manager.create()).name
    await served.manager.complete(name, empty_pb2.Empty())
    op = typed(served.client, name)
    with pytest.raises(UnexpectedOperationState):
        await op.until(lambda md: True, timeout=10)


async def test_until_times_out_with_operation_timeout_and_leaves_the_waiter(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create(pct(0))
    op = typed(client, name)
    with pytest.raises(OperationTimeout, match=r"did not satisfy the predicate within 0\.1 s"):
        await op.until(lambda md: md.value >= 50, timeout=0.1)
    assert len(client._waiters) == 0


async def test_a_timeout_error_raised_by_the_predicate_is_not_a_timeout(served: Remote) -> None:
    name = (await served.manager.create(metadata=pct(0))).name
    op = typed(served.client, name)

    def broken(md: wrappers_pb2.Int32Value) -> bool:
        raise TimeoutError("the predicate's own")

    with pytest.raises(TimeoutError, match="the predicate's own") as caught:
        await op.until(broken, timeout=10)
    assert not isinstance(caught.value, OperationTimeout)


async def test_a_negative_timeout_is_refused(served: Remote) -> None:
    op = typed(served.client, "operations/1")
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        await op.until(lambda md: True, timeout=-1)
