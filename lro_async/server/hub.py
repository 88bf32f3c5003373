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

Watch streams (:mod:`lro_async.server.watching`) wait on many operations at once, so they
do not sleep per operation: a :class:`Listener` is called synchronously with the name of
each operation that changes. A stream listens to the operations it watches by name
(:meth:`Hub.listen`), or to every operation under a parent (:meth:`Hub.subscribe`); every
subscribed listener also hears when changes may have gone unannounced and when the hub
closes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from ..names import parent_of

if TYPE_CHECKING:
    from google.longrunning import operations_pb2

__all__ = ["ALL", "Hub", "Listener", "Watch"]

ALL = None
"""The parent :meth:`Hub.subscribe` takes to hear about every operation."""


class _NoParent:
    """Subscribed to hub-wide announcements only."""


_NO_PARENT = _NoParent()


class Listener(Protocol):
    """Hears about changes as they are announced; every method must be quick and not raise."""

    def changed(self, name: str, final: bool) -> None:
        """*name* changed; *final* when it is done or gone, or the hub closed."""

    def resync(self) -> None:
        """Changes may have gone unannounced: re-read everything."""

    def closed(self) -> None:
        """The hub closed: the server is shutting down."""


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Watch:
    """One operation's waiters, shared by everyone watching it now."""

    __slots__ = (
        "_any",
        "_final",
        "_listeners",
        "changes",
        "final",
        "finished",
        "name",
        "outcome",
        "watchers",
    )

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.changes = 0
        """How many changes have been announced since the watch began."""
        self.final = False
        """The operation ended, was deleted, or the hub closed: nothing more will happen."""
        self.outcome: operations_pb2.Operation | None = None
        """The done operation, when whoever finished it handed it over (read-only)."""
        self.finished = 0
        """With ``outcome``: when it finished, in microseconds since the epoch (0: unknown)."""
        self.watchers = 0
        # Made by the first sleeper of each kind: a Watch stream's names sleep in none,
        # and an empty set costs 216 bytes.
        self._final: set[asyncio.Future[None]] | None = None  # woken by the end only
        self._any: set[asyncio.Future[None]] | None = None  # woken by any change
        # Streams told of every change: a tuple, as a name is mostly on one stream and
        # even an empty set costs 216 bytes.
        self._listeners: tuple[Listener, ...] = ()

    async def sleep(self, seen: int, timeout: float | None, *, any_change: bool) -> None:
        """Sleep until the operation changes after *seen* changes, or *timeout* seconds.

        :param seen: ``changes`` as it was when the caller read the operation.
        :param any_change: wake on any change (metadata too), not only on the end.
        """
        if self.changes != seen or self.final:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if any_change:
            waiters = self._any = self._any if self._any is not None else set()
        else:
            waiters = self._final = self._final if self._final is not None else set()
        waiters.add(future)
        timer = None if timeout is None else loop.call_later(timeout, _wake, future)
        try:
            await future
        finally:
            waiters.discard(future)
            if timer is not None:
                timer.cancel()

    def fire(
        self, final: bool, outcome: operations_pb2.Operation | None = None, finished: int = 0
    ) -> None:
        """Announce a change; *final* when nothing will change any more."""
        self.changes += 1
        if final:
            self.final = True
            if outcome is not None:
                self.outcome = outcome
                self.finished = finished
            if self._final:
                for future in self._final:
                    _wake(future)
                self._final.clear()
        if self._any:
            for future in self._any:
                _wake(future)
            self._any.clear()
        if self._listeners:
            for listener in self._listeners:
                listener.changed(self.name, final)


class Hub:
    """Wakes the waiters of an operation when it changes.

    ``notify`` is synchronous and cheap when nobody waits (one dict lookup), so it is
    called after every store write without a second thought.
    """

    def __init__(self) -> None:
        self._watches: dict[str, Watch] = {}
        self._closed = False
        self._subscribed: set[Listener] = set()  # watch streams
        self._parents: dict[Listener, str | None] = {}  # collection streams -> their parent
        self._by_parent: dict[str | None, set[Listener]] = {}

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
            watch = self._watches[name] = Watch(name)
            if self._closed:
                watch.fire(True)
        watch.watchers += 1
        return watch

    def leave(self, name: str, watch: Watch) -> None:
        """Stop watching: the last to leave drops the operation's entry."""
        watch.watchers -= 1
        if watch.watchers == 0 and self._watches.get(name) is watch:
            del self._watches[name]

    def listen(self, name: str, listener: Listener) -> Watch:
        """Tell *listener* of every change of *name*; pair it with :meth:`unlisten`."""
        watch = self.enter(name)
        if listener not in watch._listeners:
            watch._listeners += (listener,)
        return watch

    def unlisten(self, watch: Watch, listener: Listener) -> None:
        """Stop telling *listener* about *watch*'s operation."""
        watch._listeners = tuple(known for known in watch._listeners if known is not listener)
        self.leave(watch.name, watch)

    def subscribe(self, listener: Listener, *, parent: str | _NoParent | None = _NO_PARENT) -> None:
        """Tell *listener* when changes may have gone unannounced and when the hub closes.

        :param parent: also tell it of every change (creations too) of every operation under
            this parent (``""``: the top level, :data:`ALL`: everywhere).
        """
        self._subscribed.add(listener)
        if not isinstance(parent, _NoParent):
            self._parents[listener] = parent
            self._by_parent.setdefault(parent, set()).add(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Undo :meth:`subscribe`."""
        self._subscribed.discard(listener)
        if listener in self._parents:
            parent = self._parents.pop(listener)
            listeners = self._by_parent[parent]
            listeners.discard(listener)
            if not listeners:
                del self._by_parent[parent]

    def notify(
        self,
        name: str,
        *,
        final: bool = False,
        outcome: operations_pb2.Operation | None = None,
        finished: int = 0,
    ) -> None:
        """Wake the waiters of *name*; *final* when it is done or gone for good.

        :param outcome: with *final*, the done operation, handed to the waiters as it is
            (they must not change it) so that they need not read it back from the store.
        :param finished: with *outcome*, when it finished (microseconds since the epoch).
        """
        watch = self._watches.get(name)
        if watch is not None:
            watch.fire(final, outcome, finished)
        if self._by_parent:
            for parent in (parent_of(name), ALL):
                for listener in self._by_parent.get(parent, ()):
                    listener.changed(name, final)

    def notify_all(self) -> None:
        """Wake every waiter to re-read its operation (e.g. after a lost connection)."""
        for watch in list(self._watches.values()):
            watch.fire(False)
        for listener in list(self._subscribed):
            listener.resync()

    def close(self) -> None:
        """Wake every waiter for good: the server is shutting down."""
        self._closed = True
        for watch in list(self._watches.values()):
            watch.fire(True)
        for listener in list(self._subscribed):
            listener.closed()
