"""Histogram records are made after the event loop turn that measured them.

The SDK's ``record()`` costs microseconds; made at once, the records of an operation's
end would hold up the waiters that end woke. These tests read the SDK from another
thread (which makes nothing deferred on this one) to see when a record was made, and
from this thread to see that a collection here never misses one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import lro_async

from ..waiting import until
from .conftest import Otel

NOTICE = "lro_async.notice.delay"
DURATION = "lro_async.operation.duration"
OK = {"code": "OK"}


def _from_another_thread(
    otel: Otel, metric: str, attributes: Mapping[str, str] | None = None
) -> float:
    """The metric's count as a reader collecting on another thread sees it now."""
    seen: list[float] = []
    thread = threading.Thread(target=lambda: seen.append(otel.value(metric, attributes)))
    thread.start()
    thread.join()
    return seen[0]


async def test_a_waiter_is_answered_before_the_records_of_the_end_that_woke_it(
    otel: Otel,
) -> None:
    async with lro_async.OperationManager() as manager:
        op = await manager.create()
        seen_when_answered: list[float] = []

        async def waiter() -> None:
            await manager.wait(op.name)
            seen_when_answered.append(_from_another_thread(otel, DURATION, OK))

        waiting = asyncio.create_task(waiter())
        await until(lambda: manager.watched == 1, "the waiter waits")
        await manager.complete(op.name)
        await waiting
        assert seen_when_answered == [0]
        await until(lambda: _from_another_thread(otel, DURATION, OK) == 1, "the duration recorded")


async def test_a_collection_on_the_loop_thread_sees_what_this_turn_recorded(otel: Otel) -> None:
    for _ in range(3):
        otel.telemetry.noticed(0.001)
    assert _from_another_thread(otel, NOTICE) == 0
    assert otel.value(NOTICE) == 3
    assert _from_another_thread(otel, NOTICE) == 3  # made once, not again


async def test_records_of_a_turn_are_made_once_the_turn_is_over(otel: Otel) -> None:
    otel.telemetry.noticed(0.001)
    otel.telemetry.noticed(0.002)
    await until(lambda: _from_another_thread(otel, NOTICE) == 2, "both recorded")
    (point,) = otel.points(NOTICE)
    assert point.count == 2
    assert abs(point.sum - 0.003) < 1e-9


def test_outside_an_event_loop_a_record_is_made_at_once(otel: Otel) -> None:
    otel.telemetry.noticed(0.001)
    assert _from_another_thread(otel, NOTICE) == 1


def test_records_of_a_loop_that_stopped_first_are_made_by_the_next_one(otel: Otel) -> None:
    for delay in (0.001, 0.002):
        # The loop stops in the turn that recorded: its timer never runs.
        loop = asyncio.new_event_loop()
        try:
            loop.call_soon(otel.telemetry.noticed, delay)
            loop.call_soon(loop.stop)
            loop.run_forever()
        finally:
            loop.close()
    # The second loop's record made the first loop's; its own waits for this thread.
    assert _from_another_thread(otel, NOTICE) == 1
    assert otel.value(NOTICE) == 2
