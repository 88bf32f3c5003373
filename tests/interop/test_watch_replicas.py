"""The Watch extension across two ``lro-async serve`` replicas on one PostgreSQL schema.

A stream on B wakes when A finishes the operation (through LISTEN/NOTIFY, not B's
periodic re-read), and a collection watch on B sees the operations A creates.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from lro_async.demo import demo_pb2

from ..server.watch_stream import Event, Stream, add, collection
from .test_replicas import _channel, _replicas
from .test_restart import demo_stub, sleep_request

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


async def test_a_watch_on_b_wakes_when_a_finishes(tmp_path: Path) -> None:
    async with _replicas(tmp_path) as (a, b), _channel(a) as on_a, _channel(b) as on_b:
        demo = demo_stub(on_a)
        started = [await demo.Sleep(_sleep("projects/watch", 0.3 + i * 0.05)) for i in range(20)]
        stream = Stream(on_b)
        await stream.send(add(*(op.name for op in started)))
        delays = []
        for _ in started:
            (event,) = await stream.take(1, within=10)
            assert event.kind == Event.DONE, event
            delays.append(time.time() - _end_time(event))
        assert {e.name for e in stream.events} == {op.name for op in started}
        # B's 1 s re-read alone would answer half a second late on average; a
        # notification within milliseconds.
        assert statistics.median(delays) < 0.2, delays


async def test_a_collection_watch_on_b_sees_what_a_creates_and_finishes(tmp_path: Path) -> None:
    async with _replicas(tmp_path) as (a, b), _channel(a) as on_a, _channel(b) as on_b:
        stream = Stream(on_b)
        await stream.send(collection("projects/seen"))
        (end,) = await stream.take(1, within=20)
        assert end.kind == Event.SNAPSHOT_END
        started = await demo_stub(on_a).Sleep(_sleep("projects/seen", 0.5))
        created = await stream.until(lambda e: e.name == started.name)
        assert created.kind == Event.CREATED and not created.operation.done
        done = await stream.until(lambda e: e.name == started.name)
        assert done.kind == Event.DONE and done.operation.done


def _sleep(parent: str, seconds: float) -> demo_pb2.SleepRequest:
    return sleep_request(parent, seconds, steps=1)


def _end_time(event: Event) -> float:
    response = demo_pb2.SleepResponse()
    assert event.operation.response.Unpack(response), event
    return response.end_time.ToNanoseconds() / 1e9
