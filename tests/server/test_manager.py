"""OperationManager without the wire: running work, failures, shutdown, retention."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2, wrappers_pb2

import lro_async
import lro_async.stores

from ..waiting import until

ABORTED = grpc.StatusCode.ABORTED.value[0]
SHUT_DOWN = "the server shut down before the operation finished"


class CountingReads(lro_async.stores.MemoryStore):
    """A MemoryStore that counts its reads: a waiter reads once, then sleeps on its watch."""

    reads = 0

    async def get(self, name: str) -> lro_async.stores.OperationRecord | None:
        self.reads += 1
        return await super().get(name)


@pytest.fixture
async def manager() -> lro_async.OperationManager:
    return lro_async.OperationManager()


async def test_work_returning_a_message_completes_with_it(
    manager: lro_async.OperationManager,
) -> None:
    async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.StringValue:
        assert ctx.parent == "projects/p" and ctx.name.startswith("projects/p/operations/")
        await ctx.set_metadata(struct_pb2.Value(number_value=50))
        assert (await ctx.get()).metadata.type_url.endswith("Value")
        return wrappers_pb2.StringValue(value="result")

    async with manager:
        op = await manager.start(work, parent="projects/p", metadata=struct_pb2.Value())
        assert not op.done and op.metadata.type_url.endswith("google.protobuf.Value")
        done = await manager.wait(op.name, 5)
    value = wrappers_pb2.StringValue()
    assert done.done and done.response.Unpack(value) and value.value == "result"


async def test_work_returning_none_completes_with_empty(
    manager: lro_async.OperationManager,
) -> None:
    async def work(ctx: lro_async.OperationContext) -> None:
        return None

    async with manager:
        done = await manager.wait((await manager.start(work)).name, 5)
    assert done.response.Is(empty_pb2.Empty.DESCRIPTOR)


@pytest.mark.parametrize("code", [grpc.StatusCode.FAILED_PRECONDITION, 9])
async def test_operation_failed_fails_with_its_code(
    manager: lro_async.OperationManager, code: grpc.StatusCode | int
) -> None:
    async def work(ctx: lro_async.OperationContext) -> None:
        raise lro_async.OperationFailed(code, "bucket is locked")

    async with manager:
        done = await manager.wait((await manager.start(work)).name, 5)
    assert done.error.code == 9 and done.error.message == "bucket is locked"


async def test_any_other_exception_fails_with_internal_and_is_logged(
    manager: lro_async.OperationManager, caplog: pytest.LogCaptureFixture
) -> None:
    async def work(ctx: lro_async.OperationContext) -> None:
        raise KeyError("secret detail")

    async with manager:
        op = await manager.start(work)
        done = await manager.wait(op.name, 5)
    assert done.error.code == grpc.StatusCode.INTERNAL.value[0]
    assert "secret detail" not in done.error.message, "internals are logged, not sent"
    record = next(r for r in caplog.records if r.name == "lro_async")
    assert record.levelno == logging.ERROR and op.name in record.getMessage()
    assert record.exc_info is not None


async def test_work_returning_a_non_message_fails_with_internal(
    manager: lro_async.OperationManager,
) -> None:
    async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.StringValue:
        return "not a message"  # type: ignore[return-value]

    async with manager:
        done = await manager.wait((await manager.start(work)).name, 5)
    assert done.error.code == grpc.StatusCode.INTERNAL.value[0]


async def test_aclose_cancels_running_work_and_records_that_the_server_shut_down() -> None:
    cancelled = asyncio.Event()
    started: list[str] = []
    manager = lro_async.OperationManager()

    async def work(ctx: lro_async.OperationContext) -> None:
        started.append(ctx.name)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    ops = [await manager.start(work) for _ in range(3)]
    store = manager.store
    await until(lambda: len(started) == 3, "the three works started", details=lambda: started)
    await manager.aclose()
    await manager.aclose()  # idempotent
    assert cancelled.is_set() and manager.running == 0
    for op in ops:
        record = await store.get(op.name)
        assert record is not None and record.done
        assert (record.operation.error.code, record.operation.error.message) == (ABORTED, SHUT_DOWN)
    with pytest.raises(lro_async.RpcError) as caught:
        await manager.get(ops[0].name)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


async def test_constructing_a_manager_needs_no_event_loop() -> None:
    def construct() -> lro_async.OperationManager:
        return lro_async.OperationManager()

    manager = await asyncio.to_thread(construct)  # a thread with no running loop
    async with manager:
        assert not (await manager.create()).done


async def test_bad_input_is_rejected_and_changes_nothing(
    manager: lro_async.OperationManager,
) -> None:
    async with manager:
        with pytest.raises(lro_async.InvalidArgument):
            await manager.create(parent="projects//p")
        with pytest.raises(lro_async.InvalidArgument):
            await manager.create(parent="projects/p/operations")
        with pytest.raises(TypeError):
            await manager.create(metadata="not a message")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await manager.start("not callable")  # type: ignore[arg-type]
        with pytest.raises(lro_async.InvalidArgument):
            await manager.wait("operations/x", -1)
        ops, token = await manager.list()
        assert ops == [] and token == ""


async def test_expired_operations_are_not_found_and_swept_in_the_background() -> None:
    async with lro_async.OperationManager(retention=0.2) as manager:
        kept, gone = await manager.create(), await manager.create()
        await manager.complete(gone.name)

        async def swept() -> bool:
            return await manager.store.get(gone.name) is None

        await until(swept, "the sweeper deleted the expired operation")
        with pytest.raises(lro_async.OperationNotFound):
            await manager.get(gone.name)
        assert [op.name for op in (await manager.list())[0]] == [kept.name]
        assert await manager.get(kept.name), "running operations never expire"


async def test_hub_memory_is_bounded_by_open_waits_not_operations(
    manager: lro_async.OperationManager,
) -> None:
    async with manager:
        ops = [await manager.create() for _ in range(2000)]
        waits = [asyncio.create_task(manager.wait(op.name, 30)) for op in ops[:100]]
        await until(
            lambda: manager.watched == 100, "100 waits open", details=lambda: manager.watched
        )
        for op in ops:
            await manager.complete(op.name)
        await asyncio.gather(*waits)
        assert manager.watched == 0
        for op in ops[:500]:
            await manager.wait(op.name, 0)
        assert manager.watched == 0


async def test_many_waiters_of_one_operation_share_one_event() -> None:
    store = CountingReads()
    async with lro_async.OperationManager(store=store) as manager:
        op = await manager.create()
        before = store.reads
        waits = [asyncio.create_task(manager.wait(op.name)) for _ in range(500)]
        await until(
            lambda: store.reads - before == 500,
            "all 500 waiters read the operation and sleep",
            details=lambda: store.reads - before,
        )
        assert manager.watched == 1
        started = time.monotonic()
        await manager.complete(op.name)
        done = await asyncio.gather(*waits)
        assert time.monotonic() - started < 1
        assert all(d.done for d in done) and manager.watched == 0


async def test_the_longest_parent_still_lists_across_pages(
    manager: lro_async.OperationManager,
) -> None:
    longest = "/".join(["p" * 9] * 48)[:478].rstrip("/")
    async with manager:
        with pytest.raises(lro_async.InvalidArgument):
            await manager.create(parent=longest + "/x")
        for _ in range(3):
            await manager.create(parent=longest)
        first, token = await manager.list(longest, page_size=2)
        second, last = await manager.list(longest, page_size=2, page_token=token)
    assert len(first) == 2 and len(second) == 1 and last == ""


async def test_drain_answers_waiters_refuses_new_work_and_lets_running_work_finish() -> None:
    manager = lro_async.OperationManager()
    release = asyncio.Event()

    async def quick(ctx: lro_async.OperationContext) -> wrappers_pb2.StringValue:
        await release.wait()
        return wrappers_pb2.StringValue(value="finished during the grace period")

    async def slow(ctx: lro_async.OperationContext) -> None:
        await asyncio.sleep(60)

    finishing, stuck = await manager.start(quick), await manager.start(slow)
    waiter = asyncio.create_task(manager.wait(stuck.name, 60))
    await until(lambda: manager.watched == 1, "the wait is open")
    drained = asyncio.create_task(manager.drain(grace=0.5))
    answered = await asyncio.wait_for(waiter, 0.2)
    assert not answered.done, "waiters are answered at once with the latest state"
    with pytest.raises(lro_async.RpcError) as caught:
        await manager.create()
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    release.set()
    await drained
    store = manager.store
    first, second = await store.get(finishing.name), await store.get(stuck.name)
    assert first is not None and first.operation.HasField("response")
    assert second is not None and second.operation.error.code == ABORTED


async def test_oversized_metadata_and_responses_are_refused_and_change_nothing() -> None:
    big = wrappers_pb2.BytesValue(value=b"x" * 2048)
    async with lro_async.OperationManager(
        max_metadata_bytes=1024, max_response_bytes=1024
    ) as manager:
        with pytest.raises(lro_async.InvalidArgument, match=r"metadata is 2[0-9]+ bytes"):
            await manager.create(metadata=big)
        op = await manager.create()
        with pytest.raises(lro_async.InvalidArgument, match="limit is 1024"):
            await manager.set_metadata(op.name, big)
        with pytest.raises(lro_async.InvalidArgument, match="response"):
            await manager.complete(op.name, big)
        with pytest.raises(lro_async.InvalidArgument, match="error status"):
            await manager.fail(op.name, 13, "x" * 2048)
        assert await manager.get(op.name) == op

        async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.BytesValue:
            return big

        done = await manager.wait((await manager.start(work)).name, 5)
        assert done.error.code == grpc.StatusCode.INTERNAL.value[0]
        assert (await manager.list())[0][0].name == op.name


async def test_waiters_get_the_outcome_without_reading_the_store_again() -> None:
    store = CountingReads()
    async with lro_async.OperationManager(store=store) as manager:
        ops = [await manager.create() for _ in range(50)]
        start = store.reads
        waits = [asyncio.create_task(manager.wait(op.name, 30)) for op in ops]
        await until(
            lambda: manager.watched == 50 and store.reads - start == 50,
            "the 50 waiters read their operation once and sleep",
            details=lambda: (manager.watched, store.reads - start),
        )
        before = store.reads
        for op in ops:
            await manager.complete(op.name, wrappers_pb2.StringValue(value=op.name))
        answers = await asyncio.gather(*waits)
    assert store.reads == before, "the finishing write hands waiters the outcome"
    for op, answer in zip(ops, answers, strict=True):
        value = wrappers_pb2.StringValue()
        assert answer.done and answer.response.Unpack(value) and value.value == op.name


async def test_waiters_of_one_operation_each_get_their_own_copy() -> None:
    store = CountingReads()
    async with lro_async.OperationManager(store=store) as manager:
        op = await manager.create()
        before = store.reads
        waits = [asyncio.create_task(manager.wait(op.name, 30)) for _ in range(2)]
        await until(
            lambda: store.reads - before == 2,
            "both waiters read the operation and sleep on its one watch",
            details=lambda: store.reads - before,
        )
        await manager.complete(op.name, wrappers_pb2.StringValue(value="shared"))
        first, second = await asyncio.gather(*waits)
    first.ClearField("response")
    assert second.HasField("response")


async def test_a_drain_records_that_the_server_shut_down_even_for_work_writing_progress(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A real SQLite file: each write waits on a thread, so the tasks run (and write
    # progress) while the drain records the ends one after another.
    store = lro_async.stores.SQLiteStore(tmp_path / "operations.db")
    manager = lro_async.OperationManager(store=store)
    writing = asyncio.Event()

    async def busy(ctx: lro_async.OperationContext) -> None:
        step = 0
        while True:
            step += 1
            await ctx.set_metadata(struct_pb2.Value(number_value=step))
            if step == 3:
                writing.set()

    ops = [await manager.start(busy) for _ in range(20)]
    await asyncio.wait_for(writing.wait(), 10)
    await manager.drain(grace=0)
    reopened = lro_async.stores.SQLiteStore(tmp_path / "operations.db")
    async with reopened:
        await reopened.open()
        ends = [await reopened.get(op.name) for op in ops]
    codes = [(r.operation.error.code, r.operation.error.message) for r in ends if r is not None]
    assert codes == [(ABORTED, SHUT_DOWN)] * 20
    assert "unexpected exception" not in caplog.text


async def test_deleting_running_work_lets_it_go_on_and_quietly_drops_its_writes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "lro_async")
    began, deleted, release, seen = (
        asyncio.Event(),
        asyncio.Event(),
        asyncio.Event(),
        asyncio.Event(),
    )
    told: list[tuple[bool, bool, bool]] = []

    async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.StringValue:
        before = ctx.deleted
        began.set()
        await deleted.wait()
        after = ctx.deleted
        written = await ctx.set_metadata(struct_pb2.Value(number_value=99))
        told.append((before, after, written))
        seen.set()
        await release.wait()
        return wrappers_pb2.StringValue(value="nobody will read this")

    async with lro_async.OperationManager() as manager:
        op = await manager.start(work)
        await asyncio.wait_for(began.wait(), 5)
        await manager.delete(op.name)
        deleted.set()
        await asyncio.wait_for(seen.wait(), 5)
        assert manager.running == 1, "delete does not cancel the work (AIP-151)"
        release.set()
        await until(lambda: manager.running == 0, "the deleted operation's work ended")
        with pytest.raises(lro_async.OperationNotFound):
            await manager.get(op.name)
    assert told == [(False, True, False)]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("ended after it was deleted" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("end", ["complete", "fail", "cancel"])
async def test_ends_written_back_to_back_let_the_event_loop_turn(end: str) -> None:
    """On a store that never suspends, a loop finishing thousands by hand would answer none
    of their waiters until it ends: the manager yields once every 64 such ends."""
    manager = lro_async.OperationManager()
    ops = [await manager.create() for _ in range(200)]
    turns: list[int] = []
    finished = 0

    def turned() -> None:
        turns.append(finished)

    asyncio.get_running_loop().call_soon(turned)
    for op in ops:
        if end == "complete":
            await manager.complete(op.name)
        elif end == "fail":
            await manager.fail(op.name, grpc.StatusCode.ABORTED, "no")
        else:
            await manager.cancel(op.name)
        finished += 1
    assert turns, "the loop never turned while 200 ends were written"
    assert turns[0] <= 64
    await manager.aclose()
