"""lro_async's HTTP client over the Watch routes: every waiter on one SSE stream."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from google.protobuf import wrappers_pb2

from lro_async.client.many import gather
from lro_async.client.operations import AsyncOperationsClient
from lro_async.errors import InvalidArgument, OperationFailed, OperationNotFound, RpcError
from lro_async.server.context import OperationContext

from .conftest import FAST, Served, serve_http


def streams(served: Served) -> int:
    assert served.app.watches is not None
    return served.app.watches.streams


async def until(condition: object, what: str) -> None:
    async with asyncio.timeout(10):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)
    assert condition(), what  # type: ignore[operator]


async def test_many_awaited_operations_use_one_stream(served: Served) -> None:
    protos = [await served.manager.create(parent="projects/p") for _ in range(500)]
    ops = [served.client.operation(p, result_type=wrappers_pb2.Int64Value) for p in protos]
    waiting = asyncio.create_task(gather(*ops))
    await until(lambda: served.manager.watched == 500, "the server never watched all 500")
    order = list(range(500))
    random.shuffle(order)
    for index in order:
        await served.manager.complete(protos[index].name, wrappers_pb2.Int64Value(value=index))
    results = await waiting
    assert [r.value for r in results] == list(range(500))
    assert served.counted.counts == {"POST:watch": 1}  # no :wait, no GET: one stream
    assert served.app.watches is not None and served.app.watches.opened == 1


async def test_a_name_that_joins_later_reopens_the_stream_and_misses_nothing(
    served: Served,
) -> None:
    first, second = await served.manager.create(), await served.manager.create()
    one = asyncio.create_task(served.client.operation(first).result())
    await until(lambda: served.manager.watched == 1, "the first name was never watched")
    await served.manager.complete(second.name)  # done before it is awaited: level-triggered
    two = asyncio.create_task(served.client.operation(second).result())
    await two
    await served.manager.complete(first.name)
    await one
    assert served.counted.counts == {"POST:watch": 2}
    await until(lambda: streams(served) == 0, "a stream stayed open with nothing to wait for")


@pytest.mark.parametrize("status", [404, 405, 501])
async def test_a_server_without_the_watch_route_is_remembered_and_waited_on(
    served: Served, status: int
) -> None:
    served.counted.fail("POST:watch", status)
    protos = [await served.manager.create() for _ in range(20)]
    waiting = asyncio.create_task(gather(*(served.client.operation(p) for p in protos)))
    await until(lambda: served.app.waiting == 20, "the waiters never long-polled")
    for proto in protos:
        await served.manager.complete(proto.name)
    await waiting
    assert served.counted.counts["POST:watch"] == 1  # tried once for the whole client
    assert served.counted.counts["POST:wait"] == 20 + 1  # + the probe


async def test_a_stream_refused_for_the_limit_waits_with_wait_instead(served: Served) -> None:
    served.counted.fail("POST:watch", 429)
    proto = await served.manager.create()
    waiting = asyncio.create_task(served.client.operation(proto).result())
    await until(lambda: served.app.waiting == 1, "the waiter never long-polled")
    await served.manager.complete(proto.name)
    await waiting
    assert served.counted.counts["POST:watch"] == 1


@pytest.mark.parametrize("status", [502, 503])
async def test_a_refused_stream_is_retried(served: Served, status: int) -> None:
    served.counted.fail("POST:watch", status, times=2)
    proto = await served.manager.create()
    waiting = asyncio.create_task(served.client.operation(proto).result())
    await until(lambda: served.manager.watched == 1, "the stream was never reopened")
    await served.manager.complete(proto.name)
    await waiting
    assert served.counted.counts["POST:watch"] >= 2


async def test_errors_over_the_stream_raise_as_over_grpc(served: Served) -> None:
    async def fail(ctx: OperationContext) -> wrappers_pb2.Int64Value:
        raise OperationFailed(9, "not today")

    failing = await served.manager.start(fail)
    with pytest.raises(OperationFailed) as failed:
        await served.client.operation(failing)
    assert (failed.value.code.value[0], failed.value.message) == (9, "not today")
    with pytest.raises(OperationNotFound):
        await served.client.operation("operations/missing")
    with pytest.raises(InvalidArgument):
        await served.client.operation("not a name").result(timeout=10)
    assert set(served.counted.counts) == {"POST:watch"}


async def test_progress_over_the_stream(served: Served) -> None:
    proto = await served.manager.create(metadata=wrappers_pb2.Int32Value(value=0))
    op = served.client.operation(proto, metadata_type=wrappers_pb2.Int32Value)
    seen: list[int] = []
    progressed = asyncio.Event()

    async def follow() -> None:
        async for metadata in op.progress():
            seen.append(metadata.value)
            progressed.set()

    following = asyncio.create_task(follow())
    for value in (10, 20, 30):
        async with asyncio.timeout(10):
            await progressed.wait()
        progressed.clear()
        await served.manager.set_metadata(proto.name, wrappers_pb2.Int32Value(value=value))
    async with asyncio.timeout(10):
        await progressed.wait()
    await served.manager.complete(proto.name)
    await following
    assert seen[0] == 0 and seen[-1] == 30 and seen == sorted(seen)
    assert set(served.counted.counts) == {"POST:watch"}


async def test_client_watch_over_http_sees_creates_changes_and_deletes(served: Served) -> None:
    manager = served.manager
    before = await manager.create(parent="projects/p")
    changes = served.client.watch("projects/p", metadata_changes=True)
    try:
        first = await anext(changes)
        assert (first.kind, first.name) == ("snapshot", before.name)
        assert (await anext(changes)).kind == "synced"
        created = await manager.create(parent="projects/p")
        assert ((c := await anext(changes)).kind, c.name) == ("created", created.name)
        await manager.set_metadata(created.name, wrappers_pb2.Int64Value(value=1))
        assert (await anext(changes)).kind == "changed"
        await manager.complete(created.name)
        assert (await anext(changes)).kind == "done"
        await manager.delete(created.name)
        deleted = await anext(changes)
        assert (deleted.kind, deleted.name, deleted.operation) == ("deleted", created.name, None)
    finally:
        await changes.aclose()
    await until(lambda: streams(served) == 0, "the collection watch stayed open")


async def test_client_watch_over_http_with_a_bad_filter_is_invalid_argument(
    served: Served,
) -> None:
    with pytest.raises(InvalidArgument):
        async for _ in served.client.watch("projects/p", filter="done = = true"):
            pass


async def test_closing_the_client_ends_the_stream_and_its_waits() -> None:
    async with serve_http() as served:
        client = AsyncOperationsClient.from_url(served.url, policy=FAST)
        proto = await served.manager.create()
        waiting = asyncio.create_task(client.operation(proto).result())
        await until(lambda: served.manager.watched == 1, "the name was never watched")
        await client.aclose()
        with pytest.raises(RpcError) as caught:
            await waiting
        assert caught.value.code is grpc.StatusCode.CANCELLED  # as over ':wait'
        await until(lambda: streams(served) == 0, "the stream outlived its client")
