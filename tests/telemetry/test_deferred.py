"""Histogram records are kept and made in one go, never on the path of an answer.

The SDK's ``record()`` costs microseconds; made at once, the records of an operation's
end would hold up the waiters that end woke. They wait in a queue until a collection
(which makes every one kept before it reads, from any thread) or until a chunk of
:data:`~lro_async.telemetry._PENDING` waits, which one timer callback makes after the
loop turn. These tests count the records the SDK's instruments are handed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import pytest

import lro_async
from lro_async import telemetry as telemetry_module
from lro_async.telemetry import _PENDING, _PENDING_MAX

from ..waiting import until
from .conftest import Otel

NOTICE = "lro_async.notice.delay"
DURATION = "lro_async.operation.duration"
OK = {"code": "OK"}


class _Counting:
    """Stands in front of a histogram and counts the records it is handed."""

    def __init__(self, histogram: telemetry_module._Histogram) -> None:
        self.histogram = histogram
        self.made = 0

    def record(self, amount: float, attributes: Mapping[str, str | int] | None = None) -> None:
        self.made += 1
        self.histogram.record(amount, attributes)


@pytest.fixture
def notices(otel: Otel) -> _Counting:
    counting = _Counting(otel.telemetry._notice)
    otel.telemetry._notice = counting
    return counting


def _from_another_thread(
    otel: Otel, metric: str, attributes: Mapping[str, str] | None = None
) -> float:
    """The metric's count as a reader collecting on another thread sees it now."""
    seen: list[float] = []
    thread = threading.Thread(target=lambda: seen.append(otel.value(metric, attributes)))
    thread.start()
    thread.join()
    return seen[0]


async def test_a_waiter_is_answered_before_the_record_of_the_end_that_woke_it(
    otel: Otel,
) -> None:
    durations = _Counting(otel.telemetry._duration)
    otel.telemetry._duration = durations
    async with lro_async.OperationManager() as manager:
        op = await manager.create()
        made_when_answered: list[int] = []

        async def waiter() -> None:
            await manager.wait(op.name)
            made_when_answered.append(durations.made)

        waiting = asyncio.create_task(waiter())
        await until(lambda: manager.watched == 1, "the waiter waits")
        await manager.complete(op.name)
        await waiting
    assert made_when_answered == [0]
    assert otel.value(DURATION, OK) == 1  # the collection made it
    assert durations.made == 1


async def test_a_collection_on_any_thread_makes_every_record_kept_once(
    otel: Otel, notices: _Counting
) -> None:
    for _ in range(3):
        otel.telemetry.noticed(0.001)
    assert notices.made == 0
    assert _from_another_thread(otel, NOTICE) == 3
    assert otel.value(NOTICE) == 3  # and this thread's collection sees the same
    assert notices.made == 3


async def test_a_chunk_of_records_is_made_after_the_turn_that_filled_it(
    otel: Otel, notices: _Counting
) -> None:
    for index in range(_PENDING):
        otel.telemetry.noticed(0.001 * index)
    assert notices.made == 0  # not in this turn
    await until(lambda: notices.made == _PENDING, "the chunk made")
    (point,) = otel.points(NOTICE)
    assert point.count == _PENDING
    assert abs(point.sum - 0.001 * sum(range(_PENDING))) < 1e-9


def test_outside_an_event_loop_a_chunk_is_made_at_once(otel: Otel, notices: _Counting) -> None:
    for _ in range(_PENDING - 1):
        otel.telemetry.noticed(0.001)
    assert notices.made == 0
    otel.telemetry.noticed(0.001)
    assert notices.made == _PENDING


def test_records_a_stopped_loop_was_to_make_are_made_at_a_bound(
    otel: Otel, notices: _Counting
) -> None:
    # The loop stops in the turn that filled a chunk: its timer never runs.
    loop = asyncio.new_event_loop()
    try:
        for _ in range(_PENDING):
            loop.call_soon(otel.telemetry.noticed, 0.001)
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    assert notices.made == 0
    # Kept, not lost, and bounded: at _PENDING_MAX they are made at once.
    for _ in range(_PENDING_MAX - _PENDING - 1):
        otel.telemetry.noticed(0.001)
    assert notices.made == 0
    otel.telemetry.noticed(0.001)
    assert notices.made == _PENDING_MAX
    assert _from_another_thread(otel, NOTICE) == _PENDING_MAX


def test_a_drain_while_another_thread_drains_returns_at_once_and_loses_nothing(
    otel: Otel, notices: _Counting
) -> None:
    # A reader collecting holds the SDK's lock while it calls back into lro_async: a
    # drain that waited on another's could deadlock against the SDK's own locking.
    otel.telemetry._draining.acquire()  # another thread is draining
    try:
        for _ in range(_PENDING):
            otel.telemetry.noticed(0.001)  # outside a loop, the chunk's drain runs here
        assert notices.made == 0
    finally:
        otel.telemetry._draining.release()
    assert _from_another_thread(otel, NOTICE) == _PENDING
