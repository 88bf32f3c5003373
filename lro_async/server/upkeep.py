"""Upkeep: what an OperationManager does in the background, and the tasks that do it.

- **Recovery** (a store only this process uses): at start, every operation a previous
  process left running is resumed or finished with ABORTED.
- **Leases** (a store shared by replicas): a heartbeat renews the leases of the operations
  this replica holds (work running, or an end not yet written) and no others, and
  finishes expired leases with ABORTED, whoever held them: so an operation leased to
  this replica that no task here holds any more is reaped after the lease, like a dead
  replica's. (A new manager has a new replica id, so at start it holds no lease.)
- **Remote changes** (a shared store): another replica's change wakes local waiters, and
  cancels the local task of an operation that was finished elsewhere (CancelOperation
  served by another replica); one deleted elsewhere goes on running, told it was deleted.

Every task started here handles its errors and logs each failure once.
- **Retention**: done operations older than the retention are deleted now and then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import grpc
from google.rpc import status_pb2

from ..errors import StoreError, code_number

if TYPE_CHECKING:
    from .manager import OperationManager

__all__ = ["EXPIRE_BATCH", "Upkeep", "now_us"]

logger = logging.getLogger("lro_async")

EXPIRE_BATCH = 1000
"""Most operations one store call expires or aborts."""

_RESTARTED = "the server restarted before the operation finished"
_REPLICA_GONE = "the server replica running the operation stopped before it finished"


def now_us() -> int:
    """Microseconds since the Unix epoch: the store's clock."""
    return time.time_ns() // 1000


class Upkeep:
    """The background duties of one manager; it owns (and ends) every task they start."""

    def __init__(self, manager: OperationManager) -> None:
        self._manager = manager
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Recover or start the heartbeat, and start the retention sweeper."""
        if self._manager.shared:
            self._spawn(self._heartbeat(), "lro_async:leases")
        else:
            await self._recover()
        self._spawn(self._sweep_expired(), "lro_async:retention")

    async def aclose(self) -> None:
        """Cancel every task and wait until they have ended."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def on_remote_change(self, name: str) -> None:
        """Another process changed *name*: wake its waiters, and stop its work if it ended."""
        manager = self._manager
        manager._hub.notify(name)
        if name in manager._tasks:  # cancelled (or aborted, or deleted) by another replica?
            self._spawn(self._checked(name), f"lro_async:check:{name}")

    def on_lost_changes(self) -> None:
        """Changes may have gone unannounced (a lost connection): re-check everything."""
        manager = self._manager
        manager._hub.notify_all()
        if manager._tasks:
            self._spawn(self._cancel_finished_tasks(), "lro_async:check-all")

    async def _checked(self, name: str) -> None:
        try:
            await self._cancel_if_done(name)
        except Exception as exc:  # the next heartbeat checks again
            logger.warning("checking whether operation %s ended elsewhere failed: %s", name, exc)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:  # a bug: say so once
            logger.error("%s failed", task.get_name(), exc_info=exc)

    async def _recover(self) -> None:
        """Resume or abort what a previous process left running in a durable store."""
        manager = self._manager
        after: str | None = None
        while batch := await manager._store.running(100, after):
            for record in batch:
                resume = manager._resume
                work = resume(record.operation) if resume is not None else None
                if work is not None:
                    manager._run_task(record.name, work)
                else:
                    await manager._finish(record.name, error=_aborted(_RESTARTED))
            after = batch[-1].name

    async def _cancel_if_done(self, name: str) -> None:
        manager = self._manager
        record = await manager._store.get(name)
        if record is None:  # deleted: the work goes on (AIP-151), told so
            manager._tasks.deleted(name)
        elif record.done and (task := manager._tasks.task(name)) is not None:
            task.cancel()

    async def _cancel_finished_tasks(self) -> None:
        try:
            for name in self._manager._tasks:
                await self._cancel_if_done(name)
        except Exception as exc:  # the next heartbeat checks again
            logger.warning("checking which operations ended elsewhere failed: %s", exc)

    async def _heartbeat(self) -> None:
        """Renew the leases of what this replica holds; finish expired ones with ABORTED."""
        manager = self._manager
        store = manager._store
        while True:
            try:
                now = now_us()
                held = manager._tasks.held()
                until = now + int(manager.lease * 1e6)
                renewed = await store.renew(manager.replica, until, held) if held else 0
                manager._tasks.renewed(held, until)
                if renewed < len(held):  # some were finished or deleted elsewhere, unannounced
                    await self._cancel_finished_tasks()
                while expired := await store.expired_leases(now, EXPIRE_BATCH):
                    for record in expired:
                        await manager._finish(record.name, error=_aborted(_REPLICA_GONE))
                    if len(expired) < EXPIRE_BATCH:
                        break
            except StoreError as exc:
                logger.warning("renewing or reaping leases failed (%s); will retry", exc)
            except Exception:
                logger.exception("renewing or reaping leases failed; will retry")
            await asyncio.sleep(manager.lease / 3)

    async def _sweep_expired(self) -> None:
        interval = min(self._manager.retention / 10, 3600.0)
        while True:
            try:
                await self._manager.expire()
            except StoreError as exc:
                logger.warning("expiring done operations failed (%s); will retry", exc)
            except Exception:
                logger.exception("expiring done operations failed; will retry")
            await asyncio.sleep(interval)


def _aborted(message: str) -> status_pb2.Status:
    return status_pb2.Status(code=code_number(grpc.StatusCode.ABORTED), message=message)
