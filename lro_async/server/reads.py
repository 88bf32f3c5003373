"""Reads: the manager's reading side, shared with the servicers that serve it.

Getting, listing and waiting on operations read the same things: the store (waits and
watches through their own lane of it, see ``OperationStore.wait_reads``), the hub that
wakes waiters, and the retention that hides done operations past it. The manager owns
one :class:`Reads` and hands it to WaitOperation's and Watch's servicers, which need
these and nothing else of the manager.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from google.longrunning import operations_pb2

from ..errors import OperationNotFound
from ..protobuf import metadata_fingerprint
from ..stores.base import now_us

if TYPE_CHECKING:
    from ..filtering import Filter
    from ..stores.base import OperationRecord, OperationStore
    from ..telemetry import Telemetry
    from .hub import Hub
    from .tokens import PageTokens

__all__ = ["Reads"]


class Reads:
    """Reading operations for a manager: one record, a page, or a wait until done."""

    def __init__(
        self,
        store: OperationStore,
        hub: Hub,
        page_tokens: PageTokens,
        *,
        retention: float,
        telemetry: Telemetry | None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.page_tokens = page_tokens
        self.telemetry = telemetry
        self._retention_us = int(retention * 1e6)
        lane = store.wait_reads
        self._lane = asyncio.Semaphore(lane) if lane is not None else None

    @property
    def recheck_interval(self) -> float | None:
        """How often a waiter re-reads on its own (a shared store); None: never."""
        return self.store.recheck_interval

    def expired(self, record: OperationRecord) -> bool:
        """Whether *record* is done and older than the retention: gone for everyone."""
        return record.done and record.update_time < now_us() - self._retention_us

    def visible(self, name: str, record: OperationRecord | None) -> OperationRecord:
        """*record*, unless it is missing or expired.

        :raises OperationNotFound: then.
        """
        if record is None or self.expired(record):
            raise OperationNotFound(f"operation {name!r} not found")
        return record

    async def get(self, name: str) -> OperationRecord:
        """The latest record of *name*.

        :raises OperationNotFound: it does not exist or expired.
        """
        return self.visible(name, await self.store.get(name))

    async def for_waiter(self, name: str) -> OperationRecord | None:
        """Read *name* for a waiter or a watch, in their lane: at most ``wait_reads`` at once."""
        lane = self._lane
        if lane is None:
            return await self.store.get(name)
        async with lane:
            return await self.store.get(name)

    async def page(
        self,
        parent: str | None,
        filter_text: str,
        parsed: Filter | None,
        limit: int,
        page_token: str,
    ) -> tuple[list[operations_pb2.Operation], str]:
        """One page of at most *limit* operations after *page_token*, and the next token."""
        tokens = self.page_tokens
        after = (
            tokens.decode(page_token, parent=parent, filter_text=filter_text)
            if page_token
            else None
        )
        records = await self.store.list(parent, filter=parsed, after=after, limit=limit + 1)
        more = len(records) > limit
        records = records[:limit]
        token = (
            tokens.encode(records[-1].page_key, parent=parent, filter_text=filter_text)
            if more
            else ""
        )
        return [r.operation for r in records if not self.expired(r)], token

    async def wait(
        self, name: str, deadline: float | None, progress: str | None
    ) -> operations_pb2.Operation:
        """Wait until *name* is done, the loop's clock reaches *deadline*, or (with
        *progress*, a metadata fingerprint) its metadata changes; return its state.

        See :meth:`OperationManager.wait`, which checks the arguments.
        """
        loop = asyncio.get_running_loop()
        recheck = self.store.recheck_interval
        # A shared store announces other replicas' changes without saying what changed,
        # so its waiters wake on any change and re-read.
        any_change = progress is not None or recheck is not None
        hub = self.hub
        watch = hub.enter(name)
        slept = False  # it waited: it was there before the operation finished
        try:
            while True:
                if watch.outcome is not None:  # finished here: no need to read it back
                    operation = operations_pb2.Operation()
                    operation.CopyFrom(watch.outcome)
                    if watch.finished:
                        self.noticed(watch.finished)
                    return operation
                seen = watch.changes
                record = self.visible(name, await self.for_waiter(name))
                operation = record.operation
                if operation.done or hub.closed:
                    if slept and operation.done:
                        self.noticed(record.update_time)
                    return operation
                if progress is not None:
                    fingerprint = metadata_fingerprint(operation.metadata)
                    if progress and progress != fingerprint:
                        return operation
                    progress = fingerprint
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return operation
                bound = recheck if left is None else left if recheck is None else min(left, recheck)
                await watch.sleep(seen, bound, any_change=any_change)
                slept = True
        finally:
            hub.leave(name, watch)

    def noticed(self, finished_us: int) -> None:
        """A waiter is answered now; its operation finished at *finished_us* (a record's
        clock): its notice delay, if telemetry records."""
        telemetry = self.telemetry
        if telemetry is not None and telemetry.recording:
            telemetry.noticed((now_us() - finished_us) / 1e6)
