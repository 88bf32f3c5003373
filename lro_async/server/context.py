"""OperationContext: what a coroutine run by ``OperationManager.start`` gets to work with."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..backoff import Backoff
from ..errors import OperationNotFound, StoreError
from ..names import parent_of

if TYPE_CHECKING:
    from google.longrunning import operations_pb2
    from google.protobuf.message import Message

    from .manager import OperationManager

__all__ = ["PROGRESS_RETRY", "PROGRESS_RETRY_SECONDS", "OperationContext", "Resume", "Work"]

logger = logging.getLogger("lro_async")

PROGRESS_RETRY_SECONDS = 2.5
"""How long a progress write (``set_metadata``) is retried when the store fails."""

PROGRESS_RETRY = Backoff(initial=0.05, multiplier=2.0, maximum=0.8)
"""How it is retried in that time."""


Work = Callable[["OperationContext"], Awaitable["Message | None"]]
"""A coroutine function run as an operation: it gets an OperationContext and returns
the response message (None: ``google.protobuf.Empty``)."""

Resume = Callable[["operations_pb2.Operation"], "Work | None"]
"""What to run again for an operation a previous process left running (None: abort it)."""


class OperationContext:
    """The running operation, as its coroutine sees it.

    Cancellation (CancelOperation) arrives as ``asyncio.CancelledError`` at the
    coroutine's next ``await``; the operation is already recorded as CANCELLED by then,
    so cleanup code need not report anything. When the server shuts down, work still
    running after the drain's grace is cancelled the same way and recorded ABORTED
    ("the server shut down before the operation finished").

    A progress write is best effort: if the store fails, :meth:`set_metadata` retries it
    for up to ``PROGRESS_RETRY_SECONDS`` and then drops it with a warning (the next one
    supersedes it), so that the work goes on; only the end (what the coroutine returns
    or raises) is written until the store takes it.

    DeleteOperation does not cancel the work (AIP-151): once the record is deleted,
    :attr:`deleted` is True, :meth:`set_metadata` quietly writes nothing, and the end is
    dropped. Work that has no use for a result nobody can read may check :attr:`deleted`
    and stop early.

    >>> from google.protobuf import struct_pb2
    >>> async def work(ctx: OperationContext) -> struct_pb2.Struct:
    ...     for percent in (25, 50, 100):
    ...         if ctx.deleted:
    ...             break
    ...         await ctx.set_metadata(struct_pb2.Struct(fields={}))
    ...     return struct_pb2.Struct()
    """

    __slots__ = ("_deleted", "_manager", "name")

    def __init__(
        self, manager: OperationManager, name: str, deleted: asyncio.Event | None = None
    ) -> None:
        self._manager = manager
        self.name = name
        self._deleted = deleted if deleted is not None else asyncio.Event()

    def __repr__(self) -> str:
        return f"<OperationContext {self.name!r}>"

    @property
    def parent(self) -> str:
        """The parent the operation was created under (``""``: top level)."""
        return parent_of(self.name)

    @property
    def deleted(self) -> bool:
        """Whether the operation's record was deleted (DeleteOperation) while it ran."""
        return self._deleted.is_set()

    async def set_metadata(self, metadata: Message) -> bool:
        """Publish new metadata (progress) for the operation; wakes progress watchers.

        :return: True if it was written; False if not: the operation is done already
            (e.g. cancelled), it was deleted, or the store kept failing and the write was
            dropped (logged as a warning).
        :raises InvalidArgument: if the metadata is larger than the manager accepts.
        """
        if self._deleted.is_set():
            return False
        if not self._manager.store.may_stall:  # it neither fails nor stalls: no timer
            try:
                return await self._manager.set_metadata(self.name, metadata)
            except OperationNotFound:
                self._deleted.set()
                return False
        loop = asyncio.get_running_loop()
        started = loop.time()
        delays = PROGRESS_RETRY.delays()
        failures = 0
        try:
            async with asyncio.timeout(PROGRESS_RETRY_SECONDS):  # a stalled store too
                while True:
                    try:
                        return await self._manager.set_metadata(self.name, metadata)
                    except StoreError:
                        failures += 1
                        await asyncio.sleep(next(delays))
        except OperationNotFound:
            self._deleted.set()  # by another replica (this one's delete tells the task)
            logger.debug("operation %s was deleted while it ran; its work goes on", self.name)
            return False
        except TimeoutError:
            logger.warning(
                "dropped a progress write of operation %s: the store failed or stalled for"
                " %.1fs (%d failed attempts); the next write supersedes it",
                self.name,
                loop.time() - started,
                failures,
            )
            return False

    async def get(self) -> operations_pb2.Operation:
        """The operation's latest state, as clients see it."""
        return await self._manager.get(self.name)
