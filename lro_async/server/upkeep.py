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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc

from ..errors import StoreError
from ..stores.base import now_us
from .tasks import error_status

if TYPE_CHECKING:
    from google.rpc import status_pb2

    from ..stores.base import OperationStore, Written
    from .context import Resume, Work
    from .hub import Hub
    from .tasks import Tasks

__all__ = ["EXPIRE_BATCH", "Upkeep"]

logger = logging.getLogger("lro_async")

EXPIRE_BATCH = 1000
"""Most operations one store call expires or aborts."""

_RESTARTED = "the server restarted before the operation finished"
_REPLICA_GONE = "the server replica running the operation stopped before it finished"


class Upkeep:
    """The background duties of one manager; it owns (and ends) every task they start.

    It is handed what it works on: the manager's store, hub and task registry, and the
    manager's own ways to run work and to record an end.
    """

    def __init__(
        self,
        store: OperationStore,
        hub: Hub,
        tasks: Tasks,
        *,
        replica: str,
        lease: float,
        retention: float,
        resume: Resume | None,
        run: Callable[[str, Work], None],
        finish: Callable[[str, status_pb2.Status], Awaitable[Written | None]],
    ) -> None:
        self._store = store
        self._hub = hub
        self._registry = tasks
        self._replica = replica
        self._lease = lease
        self._retention = retention
        self._resume = resume
        self._run = run
        self._finish = finish
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Recover or start the heartbeat, and start the retention sweeper.

        Nothing for a read-only store: it holds what another process serves and owns.
        """
        if self._store.read_only:
            return
        if self._store.recheck_interval is not None:  # shared by replicas
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
        self._hub.notify(name)
        if name in self._registry:  # cancelled (or aborted, or deleted) by another replica?
            self._spawn(self._checked(name), f"lro_async:check:{name}")

    def on_lost_changes(self) -> None:
        """Changes may have gone unannounced (a lost connection): re-check everything."""
        self._hub.notify_all()
        if self._registry:
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
        resume = self._resume
        after: str | None = None
        while batch := await self._store.running(100, after):
            for record in batch:
                work = resume(record.operation) if resume is not None else None
                if work is not None:
                    self._run(record.name, work)
                else:
                    await self._finish(record.name, _aborted(_RESTARTED))
            after = batch[-1].name

    async def _cancel_if_done(self, name: str) -> None:
        record = await self._store.get(name)
        if record is None:  # deleted: the work goes on (AIP-151), told so
            self._registry.deleted(name)
        elif record.done and (task := self._registry.task(name)) is not None:
            task.cancel()

    async def _cancel_finished_tasks(self) -> None:
        try:
            for name in list(self._registry):
                await self._cancel_if_done(name)
        except Exception as exc:  # the next heartbeat checks again
            logger.warning("checking which operations ended elsewhere failed: %s", exc)

    async def _heartbeat(self) -> None:
        """Renew the leases of what this replica holds; finish expired ones with ABORTED."""
        store, registry = self._store, self._registry
        while True:
            try:
                now = now_us()
                held = registry.held()
                until = now + int(self._lease * 1e6)
                renewed = await store.renew(self._replica, until, held) if held else 0
                registry.renewed(held, until)
                if renewed < len(held):  # some were finished or deleted elsewhere, unannounced
                    await self._cancel_finished_tasks()
                while expired := await store.expired_leases(now, EXPIRE_BATCH):
                    for record in expired:
                        await self._finish(record.name, _aborted(_REPLICA_GONE))
                    if len(expired) < EXPIRE_BATCH:
                        break
            except StoreError as exc:
                logger.warning("renewing or reaping leases failed (%s); will retry", exc)
            except Exception:
                logger.exception("renewing or reaping leases failed; will retry")
            await asyncio.sleep(self._lease / 3)

    async def expire(self) -> int:
        """Delete done operations older than the retention now, in batches; return how many."""
        cutoff = now_us() - int(self._retention * 1e6)
        total = 0
        while True:
            deleted = await self._store.expire(cutoff, EXPIRE_BATCH)
            total += deleted
            if deleted < EXPIRE_BATCH:
                return total
            await asyncio.sleep(0)  # let requests in between batches

    async def _sweep_expired(self) -> None:
        interval = min(self._retention / 10, 3600.0)
        while True:
            try:
                await self.expire()
            except StoreError as exc:
                logger.warning("expiring done operations failed (%s); will retry", exc)
            except Exception:
                logger.exception("expiring done operations failed; will retry")
            await asyncio.sleep(interval)


def _aborted(message: str) -> status_pb2.Status:
    return error_status(grpc.StatusCode.ABORTED, message)
