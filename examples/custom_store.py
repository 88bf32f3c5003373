"""A custom OperationStore: every change written through to an audit log, then to SQLite.

Stores are the extension point: subclass ``lro_async.stores.OperationStore`` and implement its
coroutines (``MemoryStore`` is the reference). Wrapping another store is the shortest way to
add auditing, metrics or encryption. Run: ``python examples/custom_store.py``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable

from google.protobuf import any_pb2, wrappers_pb2
from google.rpc import status_pb2

import lro_async
from lro_async.stores import (
    Filter,
    Lease,
    OperationRecord,
    OperationStore,
    PageKey,
    Records,
    Written,
)


class AuditedStore(OperationStore):
    """Delegates to *inner* and records every change in *log*."""

    def __init__(self, inner: OperationStore, log: list[str]) -> None:
        self.inner = inner
        self.log = log
        self.recheck_interval = inner.recheck_interval

    async def open(
        self,
        notify: Callable[[str], None] | None = None,
        *,
        notify_all: Callable[[], None] | None = None,
    ) -> None:
        await self.inner.open(notify, notify_all=notify_all)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def create(self, record: OperationRecord, *, lease: Lease | None = None) -> None:
        self.log.append(f"create {record.name}")
        await self.inner.create(record, lease=lease)

    async def create_once(
        self, record: OperationRecord, request_id: str, *, lease: Lease | None = None
    ) -> Written:
        # Optional: without it, starts with a request_id fail with StoreError.
        written = await self.inner.create_once(record, request_id, lease=lease)
        if written.applied:
            self.log.append(f"create {record.name} (request {request_id})")
        return written

    async def get(self, name: str) -> OperationRecord | None:
        return await self.inner.get(name)

    async def set_metadata(
        self, name: str, metadata: any_pb2.Any, update_time: int
    ) -> Written | None:
        self.log.append(f"metadata {name}")
        return await self.inner.set_metadata(name, metadata, update_time)

    async def finish(
        self,
        name: str,
        update_time: int,
        *,
        response: any_pb2.Any | None = None,
        error: status_pb2.Status | None = None,
    ) -> Written | None:
        written = await self.inner.finish(name, update_time, response=response, error=error)
        if written is not None and written.applied:
            self.log.append(f"finish {name} ({'error' if error else 'response'})")
        return written

    async def delete(self, name: str) -> bool:
        self.log.append(f"delete {name}")
        return await self.inner.delete(name)

    async def list(
        self,
        parent: str | None,
        *,
        filter: Filter | None = None,
        after: PageKey | None = None,
        limit: int,
    ) -> Records:
        return await self.inner.list(parent, filter=filter, after=after, limit=limit)

    async def expire(self, done_before: int, limit: int) -> int:
        return await self.inner.expire(done_before, limit)

    async def running(self, limit: int, after: str | None = None) -> Records:
        return await self.inner.running(limit, after)


async def main() -> None:
    log: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        sqlite = lro_async.stores.SQLiteStore(os.path.join(folder, "ops.db"))
        async with lro_async.OperationManager(store=AuditedStore(sqlite, log)) as manager:

            async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.StringValue:
                await ctx.set_metadata(wrappers_pb2.StringValue(value="halfway"))
                return wrappers_pb2.StringValue(value="done")

            op = await manager.start(work, parent="projects/audited")
            print((await manager.wait(op.name, timeout=10)).done)
            # A retried start with the same request id gets the same operation back.
            request_id = "8f14e45f-ceea-467f-a0a4-4e3d3c8b2f0b"
            first = await manager.start(work, parent="projects/audited", request_id=request_id)
            again = await manager.start(work, parent="projects/audited", request_id=request_id)
            print(first.name == again.name, (await manager.wait(again.name, timeout=10)).done)
    print("\n".join(log))


if __name__ == "__main__":
    asyncio.run(main())
