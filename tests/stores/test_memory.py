"""MemoryStore beyond the contract: what it costs the garbage collector."""

from __future__ import annotations

import gc

from google.longrunning import operations_pb2
from google.protobuf import any_pb2

from lro_async.stores import MemoryStore, OperationRecord


async def test_kept_operations_add_nothing_to_a_full_collection() -> None:
    # Every object the collector tracks is walked by each full collection: a store of a
    # million done operations kept as messages would add seconds of pauses to a server.
    store = MemoryStore()
    count = 2000
    response = any_pb2.Any(type_url="type.googleapis.com/google.protobuf.Empty")
    gc.collect()
    before = len(gc.get_objects())
    for index in range(count):
        name = f"operations/{index:08d}"
        await store.create(OperationRecord(operations_pb2.Operation(name=name), index, index))
        await store.finish(name, index + 1, response=response)
    gc.collect()
    added = len(gc.get_objects()) - before
    assert added < count / 10, f"{added} tracked objects for {count} kept operations"
    assert len(store) == count
