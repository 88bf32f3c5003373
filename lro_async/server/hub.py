"""Hub: per-operation ``asyncio.Event`` registry that wakes waiters the moment something changes.

An entry exists only while someone waits on the operation: it is created by the first
:meth:`Hub.watch` and dropped when the last watcher leaves, so memory is bounded by the
number of open waits, not by the number of operations.

Each entry has two events:

- ``final``: set once when the operation ends, is deleted, or the hub closes; never cleared.
- ``changed``: set on *any* change (metadata too). It is made on demand and replaced by a
  fresh one after it fires, so each change wakes exactly the waiters that were waiting
  for it.

A waiter takes its event *before* reading the store and waits on it *after*; a change
that lands in between has already set the event it holds, so no wake-up is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.longrunning import operations_pb2

__all__ = ["Hub", "Watch"]


class Watch:
    """One operation's events, shared by all of its current watchers."""

    __slots__ = ("_changed", "final", "outcome", "watchers")

    def __init__(self) -> None:
        self.final = asyncio.Event()
        self._changed: asyncio.Event | None = None
        self.watchers = 0
        # The done operation, when whoever finished it said so: waiters need not re-read.
        self.outcome: operations_pb2.Operation | None = None

    def changed(self) -> asyncio.Event:
        """The event the next change (of any kind) sets."""
        if self.final.is_set():
            return self.final
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _fire(self, final: bool, outcome: operations_pb2.Operation | None = None) -> None:
        if final:
            if outcome is not None:
                self.outcome = outcome
            self.final.set()
        if self._changed is not None:
            self._changed.set()
            self._changed = None


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

    @contextlib.contextmanager
    def watch(self, name: str) -> Iterator[Watch]:
        """Watch *name* for the duration of the block."""
        watch = self._watches.get(name)
        if watch is None:
            watch = self._watches[name] = Watch()
            if self._closed:
                watch.final.set()
        watch.watchers += 1
        try:
            yield watch
        finally:
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
            watch._fire(final, outcome)

    def notify_all(self) -> None:
        """Wake every waiter to re-read its operation (e.g. after a lost connection)."""
        for watch in self._watches.values():
            watch._fire(False)

    def close(self) -> None:
        """Wake every waiter for good: the server is shutting down."""
        self._closed = True
        for watch in self._watches.values():
            watch._fire(True)
