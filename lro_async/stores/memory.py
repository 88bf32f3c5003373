"""MemoryStore: operations in a dict. The library's default store, and the fastest."""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from google.longrunning import operations_pb2

from ..errors import StoreError
from .base import (
    Lease,
    OperationRecord,
    OperationStore,
    PageKey,
    Records,
    Written,
    check_outcome,
    mark_done,
)

if TYPE_CHECKING:
    from google.protobuf import any_pb2
    from google.rpc import status_pb2

    from ..server.listing import Filter

__all__ = ["MemoryStore"]


def _copy(record: OperationRecord) -> OperationRecord:
    operation = operations_pb2.Operation()
    operation.CopyFrom(record.operation)
    return OperationRecord(operation, record.create_time, record.update_time)


class MemoryStore(OperationStore):
    """Keeps operations in this process's memory; they are gone when it exits.

    Every method completes without awaiting anything, so each one is atomic with respect
    to the event loop: a conditional finish can never interleave with another.

    >>> import asyncio, lro_async
    >>> async def main() -> None:
    ...     async with lro_async.OperationManager(store=lro_async.stores.MemoryStore()) as m:
    ...         op = await m.create()
    ...         print(op.done)
    >>> asyncio.run(main())
    False
    """

    may_stall = False  # no method awaits anything: no timeout needed around its calls

    def __init__(self) -> None:
        self._records: dict[str, OperationRecord] = {}
        self._order: list[PageKey] = []  # every record's page key, sorted
        self._leases: dict[str, Lease] = {}  # of operations not done yet

    def __len__(self) -> int:
        return len(self._records)

    async def create(self, record: OperationRecord, *, lease: Lease | None = None) -> None:
        if record.name in self._records:
            raise StoreError(f"operation {record.name!r} exists already")
        stored = _copy(record)
        self._records[record.name] = stored
        bisect.insort(self._order, stored.page_key)
        if lease is not None and not record.done:
            self._leases[record.name] = lease

    async def get(self, name: str) -> OperationRecord | None:
        record = self._records.get(name)
        return None if record is None else _copy(record)

    async def set_metadata(
        self, name: str, metadata: any_pb2.Any, update_time: int
    ) -> Written | None:
        record = self._records.get(name)
        if record is None:
            return None
        if record.done:
            return Written(_copy(record), applied=False)
        operation = operations_pb2.Operation()
        operation.CopyFrom(record.operation)
        operation.metadata.CopyFrom(metadata)
        return self._replace(record, operation, update_time)

    async def finish(
        self,
        name: str,
        update_time: int,
        *,
        response: any_pb2.Any | None = None,
        error: status_pb2.Status | None = None,
    ) -> Written | None:
        check_outcome(response, error)
        record = self._records.get(name)
        if record is None:
            return None
        if record.done:
            return Written(_copy(record), applied=False)
        operation = operations_pb2.Operation()
        operation.CopyFrom(record.operation)
        mark_done(operation, response, error)
        return self._replace(record, operation, update_time)

    def _replace(
        self, record: OperationRecord, operation: operations_pb2.Operation, update_time: int
    ) -> Written:
        stored = OperationRecord(
            operation, record.create_time, max(update_time, record.update_time)
        )
        self._records[record.name] = stored
        if operation.done:
            self._leases.pop(record.name, None)
        return Written(stored, applied=True)  # read-only to the caller, never changed here

    async def delete(self, name: str) -> bool:
        record = self._records.pop(name, None)
        if record is None:
            return False
        self._leases.pop(name, None)
        index = bisect.bisect_left(self._order, record.page_key)
        del self._order[index]
        return True

    async def list(
        self,
        parent: str | None,
        *,
        filter: Filter | None = None,
        after: PageKey | None = None,
        limit: int,
    ) -> Records:
        start = 0 if after is None else bisect.bisect_right(self._order, after)
        page: Records = []
        for index in range(start, len(self._order)):
            if len(page) >= limit:
                break
            record = self._records[self._order[index][1]]
            if parent is not None and record.parent != parent:
                continue
            if filter is not None and not filter.matches(record):
                continue
            page.append(_copy(record))
        return page

    async def expire(self, done_before: int, limit: int) -> int:
        expired = [
            name
            for name, record in self._records.items()
            if record.done and record.update_time < done_before
        ][:limit]
        for name in expired:
            await self.delete(name)
        return len(expired)

    async def running(self, limit: int, after: str | None = None) -> Records:
        names = sorted(
            name
            for name, record in self._records.items()
            if not record.done and (after is None or name > after)
        )
        return [_copy(self._records[name]) for name in names[:limit]]

    async def renew(self, owner: str, expires: int) -> int:
        renewed = 0
        for name, lease in self._leases.items():
            if lease.owner == owner:
                self._leases[name] = Lease(owner, expires)
                renewed += 1
        return renewed

    async def expired_leases(self, now: int, limit: int) -> Records:
        names = sorted(name for name, lease in self._leases.items() if lease.expires < now)
        return [_copy(self._records[name]) for name in names[:limit]]
