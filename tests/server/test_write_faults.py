"""A store that fails some writes: the end is written anyway, progress is best effort.

The stores here are MemoryStores that fail chosen calls the way the shipped stores report
a lost database connection (:class:`StoreError`), or stall; the same faults against a
real PostgreSQL (terminated connections) are in test_replica_faults.py and tests/faults/.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Collection
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2, wrappers_pb2

import lro_async
from lro_async.stores import MemoryStore, OperationRecord, Written

from ..waiting import until


class FaultyStore(MemoryStore):
    """A MemoryStore (behind the manager's store guard) whose calls fail on demand.

    ``fail[call]`` is how many of the next calls of that method fail; ``stall`` makes
    the failing calls hang instead of raising.
    """

    may_stall = True

    def __init__(self, *, shared: bool = False) -> None:
        super().__init__()
        self.fail: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.stall = False
        if shared:  # announce nothing, but behave as a store other replicas share
            self.recheck_interval = 0.5
        self.notify: Callable[[str], None] | None = None

    async def _fault(self, call: str) -> None:
        self.calls[call] = self.calls.get(call, 0) + 1
        if self.fail.get(call, 0) > 0:
            self.fail[call] -= 1
            if self.stall:
                await asyncio.sleep(3600)
            raise lro_async.StoreError(f"PostgreSQL {call} failed: connection reset")

    async def open(
        self,
        notify: Callable[[str], None] | None = None,
        *,
        notify_all: Callable[[], None] | None = None,
    ) -> None:
        self.notify = notify

    async def get(self, name: str) -> OperationRecord | None:
        await self._fault("get")
        return await super().get(name)

    async def set_metadata(self, name: str, metadata: Any, update_time: int) -> Written | None:
        await self._fault("set_metadata")
        return await super().set_metadata(name, metadata, update_time)

    async def finish(self, name: str, update_time: int, **outcome: Any) -> Written | None:
        await self._fault("finish")
        return await super().finish(name, update_time, **outcome)

    async def renew(self, owner: str, expires: int, names: Collection[str]) -> int:
        await self._fault("renew")
        return await super().renew(owner, expires, names)


def checks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("lro_async:check")]


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


async def test_an_end_the_store_refuses_is_retried_until_the_store_takes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "lro_async")
    store = FaultyStore()
    store.fail["finish"] = 3
    async with lro_async.OperationManager(store=store) as manager:

        async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.StringValue:
            return wrappers_pb2.StringValue(value="the real result")

        op = await manager.start(work)
        done = await manager.wait(op.name, 10)
        assert done.done, "the end was never written: the operation is stuck running"
        result = wrappers_pb2.StringValue()
        assert done.response.Unpack(result) and result.value == "the real result"
        await until(lambda: manager.running == 0, "the task ended once its end was written")
    assert store.calls["finish"] == 4
    [warning] = [line for line in lines(caplog, logging.WARNING) if "retrying" in line]
    assert op.name in warning
    assert any("after 3 failed attempts" in line for line in lines(caplog, logging.INFO))


async def test_an_end_still_refused_when_the_manager_closes_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FaultyStore()
    store.fail["finish"] = 10**9
    async with lro_async.OperationManager(store=store) as manager:

        async def work(ctx: lro_async.OperationContext) -> None:
            return None

        op = await manager.start(work)
        await until(lambda: store.calls.get("finish", 0) >= 2, "the end was tried again")
        assert manager.running == 1, "the task is held while its end is not written"
        assert not (await manager.get(op.name)).done
    assert manager.running == 0
    shut = [line for line in lines(caplog, logging.ERROR) if "as the server shut down" in line]
    assert len(shut) == 1 and op.name in shut[0]


async def test_an_end_is_retried_only_while_the_lease_can_still_be_ours(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FaultyStore(shared=True)
    lease = 1.0
    loop = asyncio.get_running_loop()
    async with lro_async.OperationManager(store=store, lease=lease) as manager:

        async def work(ctx: lro_async.OperationContext) -> None:
            store.fail["finish"] = store.fail["renew"] = 10**9  # the store is gone

        op = await manager.start(work)
        started = loop.time()
        await until(lambda: manager.running == 0, "the task gave up when its lease ran out")
        took = loop.time() - started
        assert took <= lease + 0.5, f"retried for {took:.1f}s past a {lease:g}s lease"
        assert store.calls["finish"] >= 2
        store.fail.clear()  # the store is back: the lease has run out, anyone reaps it
        done = await manager.wait(op.name, 10 * lease)
        assert done.done
        assert done.error.code == grpc.StatusCode.ABORTED.value[0]
        assert "replica" in done.error.message
    [gave_up] = [line for line in lines(caplog, logging.ERROR) if "gave up" in line]
    assert op.name in gave_up and "lease ran out" in gave_up


async def test_a_progress_write_the_store_refuses_a_few_times_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FaultyStore()
    async with lro_async.OperationManager(store=store) as manager:

        async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.StringValue:
            store.fail["set_metadata"] = 2
            written = await ctx.set_metadata(struct_pb2.Value(number_value=50))
            return wrappers_pb2.StringValue(value=f"written={written}")

        done = await manager.wait((await manager.start(work)).name, 10)
        result = wrappers_pb2.StringValue()
        assert done.response.Unpack(result), done.error
        assert result.value == "written=True"
        metadata = struct_pb2.Value()
        assert done.metadata.Unpack(metadata) and metadata.number_value == 50
    assert store.calls["set_metadata"] == 3
    assert lines(caplog, logging.WARNING) == []


@pytest.mark.parametrize("stall", [False, True], ids=["raising", "stalled"])
async def test_a_progress_write_the_store_keeps_refusing_is_dropped_and_the_work_goes_on(
    stall: bool, caplog: pytest.LogCaptureFixture
) -> None:
    store = FaultyStore()
    store.stall = stall
    loop = asyncio.get_running_loop()
    # The store timeout (10 s) is longer than the progress write's bound: a stalled
    # write is dropped at the bound, not held for the store timeout.
    async with lro_async.OperationManager(store=store, store_timeout=10) as manager:
        took: list[float] = []

        async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.StringValue:
            store.fail["set_metadata"] = 10**9
            started = loop.time()
            dropped = await ctx.set_metadata(struct_pb2.Value(number_value=50))
            took.append(loop.time() - started)
            store.fail["set_metadata"] = 0
            written = await ctx.set_metadata(struct_pb2.Value(number_value=60))
            return wrappers_pb2.StringValue(value=f"{dropped} {written}")

        done = await manager.wait((await manager.start(work)).name, 20)
        result = wrappers_pb2.StringValue()
        assert done.response.Unpack(result), f"the work did not go on: {done.error}"
        assert result.value == "False True"
        metadata = struct_pb2.Value()
        assert done.metadata.Unpack(metadata) and metadata.number_value == 60
    [seconds] = took
    assert 2.0 <= seconds < 4.0, f"a progress write was retried for {seconds:.1f}s"
    [warning] = lines(caplog, logging.WARNING)
    assert "dropped a progress write" in warning and "supersedes" in warning
    assert lines(caplog, logging.ERROR) == []


async def test_a_failing_check_after_a_remote_change_is_logged_once_not_left_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FaultyStore(shared=True)
    unhandled: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    try:
        async with lro_async.OperationManager(store=store) as manager:
            release = asyncio.Event()

            async def work(ctx: lro_async.OperationContext) -> None:
                await release.wait()

            op = await manager.start(work)
            assert store.notify is not None
            store.fail["get"] = 1
            store.notify(op.name)  # another replica changed it: is it done?
            await until(lambda: store.calls.get("get", 0) >= 1, "the change was checked")
            await until(lambda: not checks(), "the check ended", details=checks)
            gc.collect()  # a task whose exception nobody retrieved reports it when collected
            assert unhandled == []
            assert manager.running == 1, "a failed check cancels nothing"
            release.set()
            assert (await manager.wait(op.name, 10)).done
    finally:
        loop.set_exception_handler(None)
    assert "never retrieved" not in caplog.text
    [warning] = [line for line in lines(caplog, logging.WARNING) if "elsewhere" in line]
    assert op.name in warning and "connection reset" in warning
