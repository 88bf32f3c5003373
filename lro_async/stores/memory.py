"""MemoryStore: operations in a dict. The library's default store, and the fastest."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from google.longrunning import operations_pb2

from ..errors import StoreError
from ..names import parent_of
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

    from ..filtering import Filter

__all__ = ["MemoryStore"]


_Kept = tuple[int, int, bool, bytes]
"""A record as MemoryStore keeps it: create time, update time, done, the serialized operation.

Bytes and ints, in a tuple: the garbage collector stops tracking such a tuple, so a store
of a million operations adds nothing to every full collection's walk (a kept protobuf
message and a record object per operation would add two million objects to it).
"""


def _keep(record: OperationRecord) -> _Kept:
    operation = record.operation
    return (record.create_time, record.update_time, operation.done, operation.SerializeToString())


def _record(kept: _Kept) -> OperationRecord:
    """A fresh record, the caller's to keep and change."""
    return OperationRecord(operations_pb2.Operation.FromString(kept[3]), kept[0], kept[1])


class MemoryStore(OperationStore):
    """Keeps operations in this process's memory; they are gone when it exits.

    Every method completes without awaiting anything, so each one is atomic with respect
    to the event loop: a conditional finish can never interleave with another. Operations
    are kept serialized, out of the garbage collector's sight.

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
        self._records: dict[str, _Kept] = {}
        self._order: list[PageKey] = []  # every record's page key, sorted
        self._leases: dict[str, Lease] = {}  # of operations not done yet
        # (parent, request id) -> name, and back, of operations created with a request id.
        self._requests: dict[tuple[str, str], str] = {}
        self._request_keys: dict[str, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._records)

    async def create(self, record: OperationRecord, *, lease: Lease | None = None) -> None:
        self._insert(record, lease)

    def _insert(self, record: OperationRecord, lease: Lease | None) -> None:
        if record.name in self._records:
            raise StoreError(f"operation {record.name!r} exists already")
        self._records[record.name] = _keep(record)
        bisect.insort(self._order, record.page_key)
        if lease is not None and not record.done:
            self._leases[record.name] = lease

    async def create_once(
        self, record: OperationRecord, request_id: str, *, lease: Lease | None = None
    ) -> Written:
        key = (parent_of(record.name), request_id)
        existing = self._requests.get(key)
        if existing is not None:
            return Written(_record(self._records[existing]), applied=False)
        self._insert(record, lease)  # no await since the check: no duplicate can slip in
        self._requests[key] = record.name
        self._request_keys[record.name] = key
        return Written(record, applied=True)

    async def get(self, name: str) -> OperationRecord | None:
        kept = self._records.get(name)
        return None if kept is None else _record(kept)

    async def set_metadata(
        self, name: str, metadata: any_pb2.Any, update_time: int
    ) -> Written | None:
        return self._modify(name, update_time, lambda op: op.metadata.CopyFrom(metadata))

    async def finish(
        self,
        name: str,
        update_time: int,
        *,
        response: any_pb2.Any | None = None,
        error: status_pb2.Status | None = None,
    ) -> Written | None:
        check_outcome(response, error)
        return self._modify(name, update_time, lambda op: mark_done(op, response, error))

    def _modify(
        self, name: str, update_time: int, change: Callable[[operations_pb2.Operation], None]
    ) -> Written | None:
        """Apply *change* to a running operation (as SQLite's and PostgreSQL's do)."""
        kept = self._records.get(name)
        if kept is None:
            return None
        record = _record(kept)
        if record.done:
            return Written(record, applied=False)
        change(record.operation)  # freshly parsed: ours to change and to hand out
        stored = OperationRecord(
            record.operation, record.create_time, max(update_time, record.update_time)
        )
        self._records[name] = _keep(stored)
        if stored.done:
            self._leases.pop(name, None)
        return Written(stored, applied=True)

    async def delete(self, name: str) -> bool:
        kept = self._records.pop(name, None)
        if kept is None:
            return False
        self._leases.pop(name, None)
        key = self._request_keys.pop(name, None)
        if key is not None:
            del self._requests[key]
        index = bisect.bisect_left(self._order, (kept[0], name))
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
            name = self._order[index][1]
            if parent is not None and parent_of(name) != parent:
                continue
            record = _record(self._records[name])
            if filter is not None and not filter.matches(record):
                continue
            page.append(record)
        return page

    async def expire(self, done_before: int, limit: int) -> int:
        expired = [
            name
            for name, (_, update_time, done, _) in self._records.items()
            if done and update_time < done_before
        ][:limit]
        for name in expired:
            await self.delete(name)
        return len(expired)

    async def running(self, limit: int, after: str | None = None) -> Records:
        names = sorted(
            name
            for name, (_, _, done, _) in self._records.items()
            if not done and (after is None or name > after)
        )
        return [_record(self._records[name]) for name in names[:limit]]

    async def renew(self, owner: str, expires: int, names: Collection[str]) -> int:
        renewed = 0
        for name in set(names):
            lease = self._leases.get(name)
            if lease is not None and lease.owner == owner:
                self._leases[name] = Lease(owner, expires)
                renewed += 1
        return renewed

    async def expired_leases(self, now: int, limit: int) -> Records:
        names = sorted(name for name, lease in self._leases.items() if lease.expires < now)
        return [_record(self._records[name]) for name in names[:limit]]
