"""Hub: per-operation registry of waiters, woken the moment the operation changes.

An entry (a :class:`Watch`) exists only while someone waits on the operation: the first
:meth:`Hub.enter` makes it and the last :meth:`Hub.leave` drops it, so memory is bounded
by the number of open waits, not by the number of operations.

A waiter reads ``watch.changes`` *before* it reads the store and, if it decides to wait,
calls :meth:`Watch.sleep` with that count: a change that landed in between has moved the
count on, so the sleep returns at once and no wake-up is lost.

This is the server's hottest path when many waits end together: a sleeping waiter costs
one future and one timer handle, with no coroutine or context manager of its own (an
``asyncio.Event`` plus ``asyncio.timeout`` costs twice the objects, and every one of them
is walked by each full garbage collection while the wait is open).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.longrunning import operations_pb2

__all__ = ["Hub", "Watch"]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Watch:
    """One operation's waiters, shared by everyone watching it now."""

    __slots__ = ("_any", "_final", "changes", "final", "outcome", "watchers")

    def __init__(self) -> None:
        self.changes = 0
        """How many changes have been announced since the watch began."""
        self.final = False
        """The operation ended, was deleted, or the hub closed: nothing more will happen."""
        self.outcome: operations_pb2.Operation | None = None
        """The done operation, when whoever finished it handed it over (read-only)."""
        self.watchers = 0
        self._final: set[asyncio.Future[None]] = set()  # woken by the end only
        self._any: set[asyncio.Future[None]] = set()  # woken by any change

    async def sleep(self, seen: int, timeout: float | None, *, any_change: bool) -> None:
        """Sleep until the operation changes after *seen* changes, or *timeout* seconds.

        :param seen: ``changes`` as it was when the caller read the operation.
        :param any_change: wake on any change (metadata too), not only on the end.
        """
        if self.changes != seen or self.final:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiters = self._any if any_change else self._final
        waiters.add(future)
        timer = None if timeout is None else loop.call_later(timeout, _wake, future)
        try:
            await future
        finally:
            waiters.discard(future)
            if timer is not None:
                timer.cancel()

    def fire(self, final: bool, outcome: operations_pb2.Operation | None = None) -> None:
        """Announce a change; *final* when nothing will change any more."""
        self.changes += 1
        if final:
            self.final = True
            if outcome is not None:
                self.outcome = outcome
            for future in self._final:
                _wake(future)
            self._final.clear()
        for future in self._any:
            _wake(future)
        self._any.clear()


class Hub:
    """Wakes the waiters of an operation when it changes.

    ``notify`` is synchronous and cheap when nobody waits (one dict lookup), so it is
    called after every store write without a second thought.
    """

    def __init__(self) -> None:
        self._watches: dict[str, Watch] = {}
        self._closed = False

    def __len__(self) -> int:
        """How many operations are being watched now."""
        return len(self._watches)

    @property
    def closed(self) -> bool:
        return self._closed

    def enter(self, name: str) -> Watch:
        """Start watching *name*; every enter must be paired with a :meth:`leave`."""
        watch = self._watches.get(name)
        if watch is None:
            watch = self._watches[name] = Watch()
            if self._closed:
                watch.fire(True)
        watch.watchers += 1
        return watch

    def leave(self, name: str, watch: Watch) -> None:
        """Stop watching: the last to leave drops the operation's entry."""
        watch.watchers -= 1
        if watch.watchers == 0 and self._watches.get(name) is watch:
            del self._watches[name]

    def notify(
        self,
        name: str,
        *,
        final: bool = False,
        outcome: operations_pb2.Operation | None = None,
    ) -> None:
        """Wake the waiters of *name*; *final* when it is done or gone for good.

        :param outcome: with *final*, the done operation, handed to the waiters as it is
            (they must not change it) so that they need not read it back from the store.
        """
        watch = self._watches.get(name)
        if watch is not None:
            watch.fire(final, outcome)

    def notify_all(self) -> None:
        """Wake every waiter to re-read its operation (e.g. after a lost connection)."""
        for watch in self._watches.values():
            watch.fire(False)

    def close(self) -> None:
        """Wake every waiter for good: the server is shutting down."""
        self._closed = True
        for watch in self._watches.values():
            watch.fire(True)
