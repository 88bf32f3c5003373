"""The Watch extension's server over a real grpc.aio server and a raw stub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import wrappers_pb2

import lro_async
from lro_async.server.watching import WatchServicer
from lro_async.testing import Served, serve
from lro_async.v1 import watch_pb2

from ..waiting import until
from .watch_stream import Event, Stream, add, collection, error_info, remove

OK = grpc.StatusCode.OK


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve() as served:
        yield served


def _value(event: Event) -> int:
    value = wrappers_pb2.Int64Value()
    assert event.operation.response.Unpack(value), event
    return value.value


async def _watched(
    manager: lro_async.OperationManager, count: int, *, within: float = 10.0
) -> None:
    """Wait until the server's hub holds *count* watched operations."""
    await until(
        lambda: manager.watched == count,
        f"the server watches {count} operations",
        timeout=within,
        details=lambda: f"it watches {manager.watched}",
    )


async def test_adding_a_done_operation_answers_it_at_once(served: Served) -> None:
    op = await served.manager.create(parent="projects/p")
    await served.manager.complete(op.name, wrappers_pb2.Int64Value(value=7))
    stream = Stream(served.channel)
    await stream.send(add(op.name))
    (event,) = await stream.take(1)
    assert event.kind == Event.DONE and event.name == op.name
    assert _value(event) == 7
    assert served.manager.watched == 0  # answered: no longer watched
    await stream.call.done_writing()
    assert await stream.rest() == []
    assert await stream.code() == OK


async def test_a_running_operation_is_answered_when_it_completes(served: Served) -> None:
    manager = served.manager
    first, second = await manager.create(), await manager.create()
    stream = Stream(served.channel)
    await stream.send(add(first.name, second.name))
    await _watched(manager, 2)
    await manager.complete(second.name, wrappers_pb2.Int64Value(value=2))
    (event,) = await stream.take(1)
    assert (event.kind, event.name, _value(event)) == (Event.DONE, second.name, 2)
    await manager.complete(first.name, wrappers_pb2.Int64Value(value=1))
    (event,) = await stream.take(1)
    assert (event.kind, event.name, _value(event)) == (Event.DONE, first.name, 1)


async def test_a_removed_name_is_not_answered(served: Served) -> None:
    manager = served.manager
    kept, removed = await manager.create(), await manager.create()
    stream = Stream(served.channel)
    await stream.send(add(kept.name, removed.name))
    await _watched(manager, 2)
    await stream.send(remove(removed.name, "operations/never-added"))
    await _watched(manager, 1)
    await manager.complete(removed.name)
    await manager.complete(kept.name)
    await stream.call.done_writing()  # every name answered: the stream ends
    events = await stream.rest()
    assert [(e.kind, e.name) for e in events] == [(Event.DONE, kept.name)]
    assert await stream.code() == OK


async def test_operations_that_finish_together_come_in_one_response(served: Served) -> None:
    manager = served.manager
    ops = [await manager.create() for _ in range(200)]
    stream = Stream(served.channel)
    await stream.send(add(*(op.name for op in ops)))
    await _watched(manager, 200)
    # MemoryStore never awaits: all 200 finish before the stream's task runs again.
    await asyncio.gather(*(manager.complete(op.name) for op in ops))
    events = await stream.take(200)
    assert {e.name for e in events} == {op.name for op in ops}
    assert {e.kind for e in events} == {Event.DONE}
    assert len(stream.responses) == 1


async def test_a_large_batch_is_split_into_responses_under_a_mebibyte(served: Served) -> None:
    manager = served.manager
    big = wrappers_pb2.BytesValue(value=b"x" * 200_000)
    ops = [await manager.create() for _ in range(12)]
    for op in ops:
        await manager.complete(op.name, big)
    stream = Stream(served.channel)
    await stream.send(add(*(op.name for op in ops)))
    await stream.take(12)
    assert len(stream.responses) > 1
    assert all(r.ByteSize() <= 1024 * 1024 + 1024 for r in stream.responses)


async def test_metadata_changes_are_sent_when_asked(served: Served) -> None:
    manager = served.manager
    op = await manager.create(metadata=wrappers_pb2.Int64Value(value=0))
    quiet = await manager.create()
    stream = Stream(served.channel)
    await stream.send(add(op.name, metadata=True), add(quiet.name))
    (baseline,) = await stream.take(1)
    assert baseline.kind == Event.CHANGED and not baseline.operation.done
    await _watched(manager, 2)
    await manager.set_metadata(quiet.name, wrappers_pb2.Int64Value(value=5))  # not asked
    for percent in (10, 50):
        await manager.set_metadata(op.name, wrappers_pb2.Int64Value(value=percent))
        (event,) = await stream.take(1)
        metadata = wrappers_pb2.Int64Value()
        assert event.kind == Event.CHANGED and event.operation.metadata.Unpack(metadata)
        assert (event.name, metadata.value) == (op.name, percent)
    await manager.complete(op.name)
    await manager.complete(quiet.name)
    events = await stream.take(2)
    assert [(e.kind, e.name) for e in events] == [(Event.DONE, op.name), (Event.DONE, quiet.name)]


async def test_per_name_errors_are_events_and_the_stream_goes_on(served: Served) -> None:
    manager = served.manager
    deleted = await manager.create()
    running = await manager.create()
    stream = Stream(served.channel)
    await stream.send(add("not a name", "operations/unknown", deleted.name, running.name))
    malformed, unknown = await stream.take(2)
    assert malformed.kind == Event.ERROR and malformed.name == "not a name"
    assert malformed.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert error_info(malformed.error).metadata["name"] == "not a name"
    assert error_info(malformed.error).domain == "lro-async"
    assert unknown.kind == Event.ERROR and unknown.name == "operations/unknown"
    assert unknown.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert error_info(unknown.error).reason == "OPERATION_NOT_FOUND"
    await _watched(manager, 2)
    await manager.delete(deleted.name)  # deleted while watched: NOT_FOUND at once
    (gone,) = await stream.take(1)
    assert (gone.kind, gone.name) == (Event.ERROR, deleted.name)
    assert gone.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    await manager.complete(running.name)
    (done,) = await stream.take(1)
    assert (done.kind, done.name) == (Event.DONE, running.name)


async def test_names_are_authorized_one_by_one() -> None:
    policy = lro_async.TenantPolicy(header="x-tenant")
    async with serve(authorize=policy) as served:
        manager = served.manager
        mine = await manager.create(parent="tenants/acme")
        theirs = await manager.create(parent="tenants/other")
        await manager.complete(mine.name)
        await manager.complete(theirs.name)
        stream = Stream(served.channel, metadata=[("x-tenant", "acme")])
        await stream.send(add(theirs.name, "tenants/other/operations/unknown", mine.name))
        denied, denied_unknown, allowed = await stream.take(3)
        for event in (denied, denied_unknown):  # forbidden and missing look the same
            assert event.kind == Event.ERROR
            assert event.error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert (allowed.kind, allowed.name) == (Event.DONE, mine.name)


async def test_an_authorizer_that_raises_denies_the_name_not_the_stream() -> None:
    def broken(access: lro_async.Access) -> bool:
        if access.resource.endswith("boom"):
            raise RuntimeError("authorizer bug")
        return True

    async with serve(authorize=broken) as served:
        op = await served.manager.create()
        await served.manager.complete(op.name)
        stream = Stream(served.channel)
        await stream.send(add("operations/boom", op.name))
        boom, done = await stream.take(2)
        assert boom.error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert (done.kind, done.name) == (Event.DONE, op.name)


async def test_names_past_the_limit_per_stream_are_refused() -> None:
    manager = lro_async.OperationManager()

    def register(server: grpc.aio.Server) -> None:
        WatchServicer(manager, max_names=2).add_to_server(server)

    async with serve(manager, watch=False, register=register) as served:
        ops = [await manager.create() for _ in range(3)]
        stream = Stream(served.channel)
        await stream.send(add(*(op.name for op in ops)))
        (refused,) = await stream.take(1)
        assert (refused.kind, refused.name) == (Event.ERROR, ops[2].name)
        assert refused.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        await manager.complete(ops[0].name)
        await stream.take(1)
        await stream.send(add(ops[2].name))  # room again
        await _watched(manager, 2)
        await manager.complete(ops[2].name)
        (done,) = await stream.take(1)
        assert (done.kind, done.name) == (Event.DONE, ops[2].name)


async def test_streams_past_the_limit_per_caller_are_refused() -> None:
    manager = lro_async.OperationManager()
    servicer = WatchServicer(manager, max_streams=1)
    async with serve(manager, watch=False, register=servicer.add_to_server) as served:
        op = await manager.create()
        first = Stream(served.channel)
        await first.send(add(op.name))
        await _watched(manager, 1)
        second = Stream(served.channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await second.call.read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await manager.complete(op.name)
        await first.take(1)
        first.call.cancel()
        await until(lambda: servicer.streams == 0, "the cancelled stream closed on the server")
        third = Stream(served.channel)  # the first one's place is free again
        await third.send(add(op.name))
        (done,) = await third.take(1)
        assert done.kind == Event.DONE


async def test_drain_ends_every_stream_with_the_latest_state(served: Served) -> None:
    manager = served.manager
    running = await manager.create(metadata=wrappers_pb2.Int64Value(value=3))
    progress = await manager.create()
    stream = Stream(served.channel)
    await stream.send(add(running.name), add(progress.name, metadata=True))
    await stream.take(1)  # progress's baseline
    await _watched(manager, 2)
    await manager.drain(grace=0)
    events = await stream.rest()
    assert await stream.code() == OK
    assert sorted((e.kind, e.name, e.operation.done) for e in events) == sorted(
        [(Event.CHANGED, running.name, False), (Event.CHANGED, progress.name, False)]
    )
    assert events[0].operation.metadata == running.metadata or events[1].operation.metadata


async def test_a_stream_cancelled_mid_batch_leaves_nothing_behind(served: Served) -> None:
    manager = served.manager
    big = wrappers_pb2.BytesValue(value=b"x" * 50_000)
    done = [await manager.create() for _ in range(60)]  # 3 MB: several responses
    for op in done:
        await manager.complete(op.name, big)
    running = [await manager.create() for _ in range(100)]
    stream = Stream(served.channel)
    await stream.send(add(*(op.name for op in running)), add(*(op.name for op in done)))
    await stream.read_response()  # the first of several responses of the batch
    stream.call.cancel()
    # The autouse fixture fails the test if the stream's tasks outlive it.
    await _watched(manager, 0, within=30)
    assert manager._hub._subscribed == set()


async def test_a_request_that_does_not_parse_is_an_error_event(served: Served) -> None:
    raw = served.channel.stream_stream(
        "/lro_async.v1.OperationsWatch/Watch",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )
    call = raw()
    await call.write(b"\xff\xff\xff")
    data = await call.read()
    assert isinstance(data, bytes)
    response = watch_pb2.WatchResponse.FromString(data)
    (event,) = response.events
    assert event.kind == Event.ERROR
    assert event.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == OK


async def test_an_empty_request_and_a_huge_batch_of_bad_names(served: Served) -> None:
    stream = Stream(served.channel)
    await stream.send(watch_pb2.WatchRequest())
    (empty,) = await stream.take(1)
    assert empty.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    names = [f"bad name {i}" for i in range(20_000)] + ["x" * 100_000]
    await stream.send(add(*names))
    events = await stream.take(len(names), within=60)
    assert {e.error.code for e in events} == {grpc.StatusCode.INVALID_ARGUMENT.value[0]}
    assert served.manager.watched == 0
    await stream.call.done_writing()
    assert await stream.rest() == []
    assert await stream.code() == OK


@pytest.mark.parametrize(
    ("request_", "what"),
    [
        (collection("projects/p", "done = maybe"), "filter"),
        (collection("projects/p", "(" * 40), "filter"),
        (collection("bad parent!"), "parent"),
        (collection("projects/p", page_size=-1), "page_size"),
    ],
)
async def test_a_bad_collection_ends_the_stream_with_invalid_argument(
    served: Served, request_: object, what: str
) -> None:
    stream = Stream(served.channel)
    await stream.send(request_)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stream.call.read()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what


async def test_a_collection_after_names_ends_the_stream_with_invalid_argument(
    served: Served,
) -> None:
    stream = Stream(served.channel)
    await stream.send(add("operations/x"), collection("projects/p"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stream.rest()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_collection_watch_sees_the_snapshot_then_every_change_in_order(
    served: Served,
) -> None:
    manager = served.manager
    existing = [await manager.create(parent="projects/p") for _ in range(5)]
    await manager.create(parent="projects/other")
    stream = Stream(served.channel)
    await stream.send(collection("projects/p", page_size=2, metadata=True))
    snapshot = await stream.take(6)
    assert [e.kind for e in snapshot] == [Event.SNAPSHOT] * 5 + [Event.SNAPSHOT_END]
    assert [e.name for e in snapshot[:5]] == [op.name for op in existing]
    assert len(stream.responses) == 3  # pages of 2, 2, 1 (+ the end)
    await manager.create(parent="projects/other")  # not under the parent
    created = await manager.create(parent="projects/p")
    (event,) = await stream.take(1)
    assert (event.kind, event.name) == (Event.CREATED, created.name)
    await manager.set_metadata(created.name, wrappers_pb2.Int64Value(value=1))
    (event,) = await stream.take(1)
    assert (event.kind, event.name) == (Event.CHANGED, created.name)
    await manager.complete(created.name)
    (event,) = await stream.take(1)
    assert (event.kind, event.name, event.operation.done) == (Event.DONE, created.name, True)
    await manager.delete(existing[0].name)
    (event,) = await stream.take(1)
    assert (event.kind, event.name) == (Event.DELETED, existing[0].name)


async def test_changes_that_land_together_are_reported_once_with_the_latest_state(
    served: Served,
) -> None:
    manager = served.manager
    stream = Stream(served.channel)
    await stream.send(collection("projects/p", metadata=True))
    await stream.take(1)  # the (empty) snapshot's end
    created = await manager.create(parent="projects/p")  # the stream's task has not run since
    await manager.set_metadata(created.name, wrappers_pb2.Int64Value(value=1))
    await manager.complete(created.name)
    (event,) = await stream.take(1)
    assert (event.kind, event.operation.done) == (Event.CREATED, True)


async def test_a_collection_watch_with_a_filter(served: Served) -> None:
    manager = served.manager
    stream = Stream(served.channel)
    await stream.send(collection("", "done = true"))
    (end,) = await stream.take(1)
    assert end.kind == Event.SNAPSHOT_END
    first = await manager.create(parent="projects/a")
    second = await manager.create()
    await manager.complete(second.name)
    (event,) = await stream.take(1)  # it matches from the moment it is done
    assert (event.kind, event.name, event.operation.done) == (Event.CREATED, second.name, True)
    await manager.fail(first.name, grpc.StatusCode.ABORTED, "no")
    (event,) = await stream.take(1)
    assert (event.kind, event.name, event.operation.error.code) == (Event.CREATED, first.name, 10)


async def test_a_collection_is_authorized_as_listing_its_parent() -> None:
    policy = lro_async.TenantPolicy(header="x-tenant")
    async with serve(authorize=policy) as served:
        stream = Stream(served.channel, metadata=[("x-tenant", "acme")])
        await stream.send(collection("tenants/other"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stream.call.read()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        allowed = Stream(served.channel, metadata=[("x-tenant", "acme")])
        await allowed.send(collection("tenants/acme"))
        (end,) = await allowed.take(1)
        assert end.kind == Event.SNAPSHOT_END
