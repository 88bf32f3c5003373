"""A Watch stream rides out a store that fails for a while: no error event, no lost end."""

from __future__ import annotations

import time

from google.rpc import status_pb2

import lro_async
from lro_async.server.watching import STORE_RETRY
from lro_async.testing import serve

from .test_write_faults import FaultyStore
from .watch_stream import Event, Stream, add


async def test_a_name_the_store_cannot_read_for_a_while_is_read_again_not_ended() -> None:
    store = FaultyStore()
    async with (
        lro_async.OperationManager(store=store) as manager,
        serve(manager) as served,
    ):
        op = await manager.create(parent="projects/p")
        # Finished behind the manager's back (as by a replica whose announcement was lost):
        # only a read of the store tells the stream.
        await lro_async.stores.MemoryStore.finish(
            store, op.name, time.time_ns() // 1000, error=status_pb2.Status(code=10, message="x")
        )
        store.fail["get"] = 3  # a lock, a dropped connection: the next three reads fail
        stream = Stream(served.channel)
        started = time.perf_counter()
        await stream.send(add(op.name))
        (event,) = await stream.take(1, within=10 * STORE_RETRY)
        took = time.perf_counter() - started
        assert event.kind == Event.DONE, event  # not an UNAVAILABLE error ending the watch
        assert event.operation.error.code == 10
        assert store.calls["get"] >= 4
        assert took >= 3 * STORE_RETRY * 0.9, took  # read again after each failure, not spun
        stream.call.cancel()
