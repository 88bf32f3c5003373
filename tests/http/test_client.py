"""lro_async's HTTP client against its HTTP server: the same AsyncOperation as over gRPC.

These are the per-operation paths (the ``:wait`` long poll, GetOperation polling): the
server here serves no ``:watch`` routes. The client over the Watch stream is in
test_watch_client.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2, wrappers_pb2

from lro_async.backoff import Backoff
from lro_async.client.many import gather
from lro_async.client.operations import AsyncOperationsClient
from lro_async.errors import (
    InvalidArgument,
    OperationCancelled,
    OperationFailed,
    OperationNotFound,
    PermissionDenied,
    RpcError,
)
from lro_async.server.context import OperationContext

from .conftest import FAST, Served, serve_http


def pct(value: int) -> wrappers_pb2.Int32Value:
    return wrappers_pb2.Int32Value(value=value)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve_http(watch=False) as served:
        yield served


async def long_polled(served: Served, count: int = 1) -> None:
    """Return once *count* long polls are open on the server."""
    while served.manager.watched < count or served.app.waiting < count:
        await asyncio.sleep(0.005)


async def test_await_long_polls_once(served: Served) -> None:
    proto = await served.manager.create(parent="projects/p")
    task = asyncio.create_task(
        served.client.operation(proto, result_type=struct_pb2.Struct).result()
    )
    await long_polled(served)
    answer = struct_pb2.Struct(fields={"answer": struct_pb2.Value(number_value=42)})
    await served.manager.complete(proto.name, answer)
    assert (await task)["answer"] == 42
    # One try of the Watch route (404, remembered), the probe, then one long poll.
    assert served.counted.counts == {"POST:watch": 1, "POST:wait": 2}


async def test_a_thousand_operations_with_the_wait_long_poll(served: Served) -> None:
    protos = [await served.manager.create(parent="projects/p") for _ in range(1000)]
    ops = [served.client.operation(p, result_type=wrappers_pb2.Int64Value) for p in protos]
    order = list(range(1000))
    random.shuffle(order)

    async def finish() -> None:
        await long_polled(served, 1000)
        for i in order:
            await served.manager.complete(protos[i].name, wrappers_pb2.Int64Value(value=i))

    async with asyncio.TaskGroup() as tg:
        tg.create_task(finish())
        results = await gather(*ops, timeout=30)
    assert [r.value for r in results] == list(range(1000))
    # + the probe, and one try of the Watch route for the whole client (404, remembered)
    assert served.counted.counts == {"POST:watch": 1, "POST:wait": 1000 + 1}


async def test_completion_is_noticed_within_milliseconds(served: Served) -> None:
    protos = [await served.manager.create(parent="projects/p") for _ in range(30)]
    latencies: list[float] = []
    completed: dict[str, float] = {}

    async def await_one(name: str) -> None:
        await served.client.operation(name, result_type=empty_pb2.Empty)
        latencies.append(time.perf_counter() - completed[name])

    async with asyncio.TaskGroup() as tg:
        for proto in protos:
            tg.create_task(await_one(proto.name))
        await long_polled(served, 30)
        for proto in protos:
            await asyncio.sleep(0.005)
            completed[proto.name] = time.perf_counter()
            await served.manager.complete(proto.name)
    assert statistics.median(latencies) < 0.05
    assert served.counted.counts == {"POST:watch": 1, "POST:wait": 30 + 1}


async def test_without_wait_the_client_polls_get() -> None:
    async with serve_http(wait=False, watch=False) as served:
        protos = [await served.manager.create(parent="projects/p") for _ in range(50)]
        ops = [served.client.operation(p, result_type=wrappers_pb2.Int64Value) for p in protos]

        async def finish() -> None:
            await asyncio.sleep(0.05)
            for i, proto in enumerate(protos):
                await served.manager.complete(proto.name, wrappers_pb2.Int64Value(value=i))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(finish())
            results = await gather(*ops, timeout=10)
        assert [r.value for r in results] == list(range(50))
        # One refused :wait for the whole client, then polls.
        assert served.counted.counts["POST:wait"] == 1
        assert served.counted.counts["GET"] >= 50
        assert served.client._waiters.long_poll is False


@pytest.mark.parametrize("status", [404, 405, 501])
async def test_a_server_without_the_wait_route_is_polled(served: Served, status: int) -> None:
    served.counted.fail("POST:wait", status, body=b"<html>Not here</html>")
    proto = await served.manager.create(parent="projects/p")
    task = asyncio.create_task(served.client.operation(proto, result_type=empty_pb2.Empty).result())
    await asyncio.sleep(0.05)
    await served.manager.complete(proto.name)
    assert await asyncio.wait_for(task, 5) == empty_pb2.Empty()
    assert served.counted.counts["POST:wait"] == 1
    assert served.counted.counts["GET"] >= 1


async def test_a_missing_operation_on_wait_is_not_found_not_unimplemented(served: Served) -> None:
    with pytest.raises(OperationNotFound):
        await served.client.operation("projects/p/operations/nope").result(timeout=5)
    assert served.client._waiters.long_poll is not False


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_overload_and_gateway_errors_are_retried(served: Served, status: int) -> None:
    proto = await served.manager.create(parent="projects/p")
    await served.manager.complete(proto.name, pct(7))
    served.counted.fail("POST:wait", status, times=3, body=b"<html>busy</html>")
    assert await served.client.operation(proto, result_type=wrappers_pb2.Int32Value) == pct(7)
    assert served.counted.counts["POST:wait"] == 4


async def test_errors_keep_their_code_message_and_details(served: Served) -> None:
    with pytest.raises(InvalidArgument) as invalid:
        await served.client.get_operation("not a name")
    assert invalid.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert invalid.value.details  # ErrorInfo
    with pytest.raises(OperationNotFound, match="not found"):
        await served.client.cancel_operation("projects/p/operations/nope")
    with pytest.raises(InvalidArgument, match="filter"):
        [op async for op in served.client.list_operations("projects/p", filter="done ==")]


async def test_failed_and_cancelled_operations_raise_as_over_grpc(served: Served) -> None:
    failed = await served.manager.create(parent="projects/p")
    await served.manager.fail(failed.name, grpc.StatusCode.FAILED_PRECONDITION, "no")
    with pytest.raises(OperationFailed) as caught:
        await served.client.operation(failed.name)
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.message == "no"

    async def forever(ctx: OperationContext) -> empty_pb2.Empty:
        await asyncio.sleep(60)
        return empty_pb2.Empty()

    running = await served.manager.start(forever, parent="projects/p")
    op = served.client.operation(running, result_type=empty_pb2.Empty)
    waiting = asyncio.create_task(op.exception())
    await asyncio.sleep(0.02)
    assert await op.cancel()
    assert isinstance(await waiting, OperationCancelled)


async def test_list_get_delete_over_http(served: Served) -> None:
    names = [(await served.manager.create(parent="projects/p")).name for _ in range(7)]
    top = await served.manager.create()
    listed = [op.name async for op in served.client.list_operations("projects/p", page_size=3)]
    assert listed == names
    every = [op.name async for op in served.client.list_operations("")]
    assert every == [*names, top.name]
    assert [op.name async for op in served.client.list_operations("operations")] == [top.name]
    assert (await served.client.get_operation(names[0])).name == names[0]
    await served.client.delete_operation(names[0])
    with pytest.raises(OperationNotFound):
        await served.client.get_operation(names[0])
    assert served.counted.counts["LIST"] == 3 + 1 + 1


async def test_wait_operation_asks_the_server_for_a_bounded_wait(served: Served) -> None:
    proto = await served.manager.create(parent="projects/p")
    started = time.perf_counter()
    op = await served.client.wait_operation(proto.name, 0.2)
    assert not op.done
    assert 0.15 < time.perf_counter() - started < 2


async def test_progress_over_http_uses_the_header(served: Served) -> None:
    seen: list[int] = []
    caught_up = asyncio.Event()

    async def work(ctx: OperationContext) -> empty_pb2.Empty:
        for step in range(1, 6):
            await asyncio.wait_for(caught_up.wait(), 5)
            caught_up.clear()
            await ctx.set_metadata(pct(step * 20))
        return empty_pb2.Empty()

    polls = Backoff(initial=0.2, multiplier=1.0, maximum=0.2, jitter=False)
    async with AsyncOperationsClient.from_url(
        served.url, policy=dataclasses.replace(FAST, poll=polls)
    ) as client:
        proto = await served.manager.start(work, parent="projects/p", metadata=pct(0))
        op = client.operation(proto, result_type=empty_pb2.Empty, metadata_type=pct(0).__class__)
        async for md in op.progress():
            seen.append(md.value)
            caught_up.set()
        assert seen == [0, 20, 40, 60, 80, 100]
        assert client._waiters.honours_progress
        assert await op == empty_pb2.Empty()
    assert set(served.counted.counts) == {"POST:watch", "POST:wait"}
    assert served.counted.counts["POST:watch"] == 1
    assert served.counted.counts["POST:wait"] <= 1 + 5 + 5


async def test_headers_reach_the_authorizer() -> None:
    async with serve_http(
        authorize=lambda access: access.caller.metadata.get("authorization") == "Bearer t",
        headers={"Authorization": "Bearer t"},
    ) as served:
        proto = await served.manager.create(parent="projects/p")
        assert (await served.client.get_operation(proto.name)).name == proto.name
        async with AsyncOperationsClient.from_url(served.url, headers={"authorization": "x"}) as c:
            with pytest.raises(PermissionDenied):
                await c.get_operation(proto.name)


async def test_an_unreachable_server_is_unavailable_and_retried() -> None:
    async with serve_http(watch=False) as served:
        url = served.url
    async with AsyncOperationsClient.from_url(url, policy=FAST) as client:
        with pytest.raises(RpcError) as caught:
            await client.get_operation("operations/x")
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        op = client.operation("operations/x")
        with pytest.raises(TimeoutError):
            await op.result(timeout=0.1)  # retried until the timeout, not raised


async def test_closing_the_client_ends_waits_and_closes_connections(served: Served) -> None:
    proto = await served.manager.create(parent="projects/p")
    client = AsyncOperationsClient.from_url(served.url, policy=FAST)
    task = asyncio.create_task(client.operation(proto.name).result())
    while served.manager.watched < 1:
        await asyncio.sleep(0.01)
    await client.aclose()
    with pytest.raises(RpcError) as caught:
        await task
    assert caught.value.code is grpc.StatusCode.CANCELLED
    for _ in range(100):  # the server notices the connection went and stops waiting
        if served.manager.watched == 0 and served.app.waiting == 0:
            break
        await asyncio.sleep(0.01)
    assert served.app.waiting == 0


def test_from_url_needs_an_http_url() -> None:
    with pytest.raises(ValueError, match="http"):
        AsyncOperationsClient.from_url("grpc://127.0.0.1:5")
