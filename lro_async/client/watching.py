"""One Watch stream per client: every waiter multiplexed over ``lro_async.v1.OperationsWatch``.

A :class:`WatchStream` belongs to a client's :class:`~lro_async.client.waiting.Waiters`.
A waiter asks it for the next state of its operation (:meth:`WatchStream.next`): the name
is added to the stream (opened on first use) and the waiter awaits a future that the
stream's reader task resolves when the server sends the operation's event. An awaited
operation costs the stream an entry and a future, not a call.

What breaks is told to the waiters as an :class:`~lro_async.errors.RpcError`, and they do
what they already do for a failed WaitOperation: UNIMPLEMENTED (a server without the
extension) makes the client remember it and fall back to WaitOperation; a broken or
ended stream is UNAVAILABLE, which the waiters retry with backoff, re-adding their names
to a new stream. The protocol is level-triggered (adding a done operation answers it at
once), so a re-added name misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import TYPE_CHECKING, Literal, cast

import grpc
from google.longrunning import operations_pb2

from ..errors import RpcError, rpc_call, rpc_error, status_code
from ..v1 import watch_pb2
from ..v1.watch_pb2_grpc import OperationsWatchStub
from ..wire import WATCH_SERVED_HEADER

if TYPE_CHECKING:
    from ..telemetry import ClientRpc, Telemetry
    from ..v1 import watch_pb2_grpc
    from .transport import Metadata

__all__ = ["Change", "ChangeKind", "Multiplexer", "WatchStream", "change_of", "watch_collection"]

logger = logging.getLogger("lro_async")

Event = watch_pb2.Event
WatchRequest = watch_pb2.WatchRequest
_Call = grpc.aio.StreamStreamCall[WatchRequest, watch_pb2.WatchResponse]


Followed = Callable[[operations_pb2.Operation | RpcError], None]
"""Told, once, the done state of a followed operation or the error that ended its watch."""


class _Entry:
    __slots__ = ("callback", "future", "latest", "metadata")

    def __init__(self, metadata: bool, callback: Followed | None = None) -> None:
        self.metadata = metadata
        self.callback = callback  # followed without a task (see Multiplexer.follow)
        self.future: asyncio.Future[operations_pb2.Operation] | None = None
        self.latest: operations_pb2.Operation | None = None  # a state nobody awaited yet

    def fail(self, error: RpcError) -> None:
        if self.callback is not None:
            self.callback(error)
        elif self.future is not None and not self.future.done():
            self.future.set_exception(error)


class Multiplexer:
    """The waiters' side of a Watch stream, whatever carries it: an entry and a future per
    awaited operation, resolved by the events the transport reads (:meth:`_dispatch`)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self.supported: bool | None = None
        """None until a server showed it serves the stream (again after a call broke),
        False once it said UNIMPLEMENTED."""

    def __len__(self) -> int:
        return len(self._entries)

    async def next(self, name: str, *, metadata: bool) -> operations_pb2.Operation:
        """The operation's next state: done, or (with *metadata*) after a metadata change.

        The first call for a name answers with its current state when *metadata* is set.
        Call :meth:`forget` when no longer interested.

        :raises RpcError: a per-name error, or UNAVAILABLE / UNIMPLEMENTED for the stream.
        """
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry(metadata)
            self._want(name, metadata)
        elif metadata and not entry.metadata:
            entry.metadata = True
            self._want(name, True)
        if entry.latest is not None:
            latest, entry.latest = entry.latest, None
            return latest
        future: asyncio.Future[operations_pb2.Operation]
        future = entry.future = asyncio.get_running_loop().create_future()
        try:
            return await future
        finally:
            entry.future = None

    def follow(self, name: str, callback: Followed) -> None:
        """Watch *name* until done without anyone awaiting: *callback* is told, once, the
        done state or the error that ended the watch of it (then *name* is forgotten).

        What a plain awaited operation costs a client watching thousands: an entry here,
        no task and no future. Call :meth:`forget` to stop early.
        """
        if name in self._entries:
            raise RuntimeError(f"{name!r} is watched already")
        self._entries[name] = _Entry(False, callback)
        self._want(name, False)

    def _want(self, name: str, metadata: bool) -> None:
        """Tell the server that *name* is wanted (with *metadata* changes)."""
        raise NotImplementedError

    def forget(self, name: str) -> None:
        """Stop watching *name*; the last name ends the stream (its call or calls)."""
        raise NotImplementedError

    def _dispatch(self, event: Event) -> None:
        entry = self._entries.get(event.name)
        if entry is None:
            return
        if event.kind == Event.ERROR:
            del self._entries[event.name]
            if entry.callback is not None:
                self.forget(event.name)  # as a task's wait does when it ends
            status = event.error
            entry.fail(rpc_error(status_code(status.code), status.message, status.details))
            return
        if not event.HasField("operation"):
            return
        operation = event.operation
        if operation.done:
            del self._entries[event.name]
        if entry.callback is not None:
            if operation.done:  # a followed name wants nothing else
                self.forget(event.name)  # as a task's wait does when it ends
                entry.callback(operation)
        elif entry.future is not None and not entry.future.done():
            entry.future.set_result(operation)
        else:
            entry.latest = operation

    def _fail(self, error: RpcError, names: Iterable[str] | None = None) -> None:
        """Fail the waiters of *names* (default: all) with *error*; they are forgotten."""
        if names is None:
            entries, self._entries = self._entries, {}
            failed: Iterable[_Entry] = entries.values()
        else:
            failed = [e for n in names if (e := self._entries.pop(n, None)) is not None]
        for entry in failed:
            entry.fail(error)

    def _fail_all(self, error: RpcError) -> None:
        self._fail(error)


class WatchStream(Multiplexer):
    """The client's one Watch call, opened when first needed and reopened after a break.

    :param channel: the channel to the server (not owned).
    :param metadata: request metadata of the call.
    :param telemetry: a span per call (an event per operation it delivers), or None.
    """

    def __init__(
        self, channel: grpc.aio.Channel, metadata: Metadata, *, telemetry: Telemetry | None = None
    ) -> None:
        super().__init__()
        self._stub = cast("watch_pb2_grpc.OperationsWatchAsyncStub", OperationsWatchStub(channel))
        self._metadata = tuple(metadata)
        self._telemetry = telemetry
        self._traced: ClientRpc | None = None  # the span of the call open now
        self._recording = False  # whether that span records events
        self._call: _Call | None = None
        self._reader: asyncio.Task[None] | None = None
        self._writes: list[WatchRequest] = []
        self._writer: asyncio.Task[None] | None = None

    def _want(self, name: str, metadata: bool) -> None:
        self._send(WatchRequest(add=WatchRequest.Add(names=[name], metadata_changes=metadata)))

    def forget(self, name: str) -> None:
        """Stop watching *name* (the server is told unless it has answered it for good)."""
        entry = self._entries.pop(name, None)
        call = self._call
        if call is None or call.done():
            return
        if not self._entries:  # nobody waits: the call goes, its tasks end with it
            self._call = None
            self._writes = []
            call.cancel()
            self._end_trace(grpc.StatusCode.OK)
        elif entry is not None:
            self._send(WatchRequest(remove=WatchRequest.Remove(names=[name])))

    async def aclose(self) -> None:
        """Cancel the call and the tasks; waiters still inside :meth:`next` get UNAVAILABLE."""
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
        self._end_trace(grpc.StatusCode.OK)
        tasks = [t for t in (self._reader, self._writer) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._fail_all(_broken("the client closed the Watch stream"))

    # -- the call ---------------------------------------------------------------------

    def _send(self, request: WatchRequest) -> None:
        call, reader = self._call, self._reader
        # A call that has ended but whose reader has not seen it yet (an UNIMPLEMENTED on
        # its way): the reader fails every waiter, this one included, with that status;
        # opening another call now would ask a server without the extension twice.
        if call is None or (call.done() and (reader is None or reader.done())):
            self._open()
        self._writes.append(request)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write(), name="lro-async Watch writer"
            )

    def _open(self) -> None:
        metadata: Metadata = self._metadata
        if self._telemetry is not None:
            self._end_trace(grpc.StatusCode.CANCELLED)  # a call replaced without its end seen
            # One span per stream, in a trace of its own: it serves many operations' waits.
            traced = self._telemetry.client_rpc(
                "lro_async.v1.OperationsWatch/Watch", metadata, root=True
            )
            recording = traced.span is not None and traced.span.is_recording()
            self._traced, self._recording = traced, recording
            metadata = traced.metadata
        self._call = call = self._stub.Watch(metadata=metadata)
        # A new call: every name still wanted is added again (pending writes of the old
        # call are dropped; they are re-made here).
        self._writes = [
            WatchRequest(add=WatchRequest.Add(names=[name], metadata_changes=entry.metadata))
            for name, entry in self._entries.items()
        ]  # merged by _write into few requests, none too large
        self._reader = asyncio.get_running_loop().create_task(
            self._read(call), name="lro-async Watch reader"
        )

    async def _write(self) -> None:
        while self._writes and self._call is not None:
            call = self._call
            if self.supported is not True:
                # A new client's first call, or the first after a break (the server may
                # be another one now): write once it says it serves the stream.
                if not await self._serves(call):
                    return
                continue  # the call may have been replaced meanwhile
            batch, self._writes = self._writes, []
            try:
                for request in _merged(batch):
                    await call.write(request)
            except Exception as exc:  # the reader sees the call's end and tells the waiters
                logger.debug("writing to the Watch stream failed: %r", exc)
                return

    async def _serves(self, call: _Call) -> bool:
        """Wait until the server says it serves this call (its initial metadata).

        Nothing is written before: a server without the extension ends the call at once,
        and a write in flight at that moment makes grpc end it with INTERNAL instead of
        UNIMPLEMENTED (which the reader turns into the fallback to WaitOperation).
        """
        try:
            metadata = await call.initial_metadata()
        except Exception as exc:  # the reader sees the call's end and tells the waiters
            logger.debug("the Watch stream ended before it was served: %r", exc)
            return False
        if any(key == WATCH_SERVED_HEADER for key, _ in metadata):
            self.supported = True
            return True
        if not metadata:
            # A call refused at once (no extension, a stream limit, a drain) ends with no
            # headers: its status, which the reader hands on, says which.
            with contextlib.suppress(Exception):
                await call.code()
            return False
        if not call.done() and self._call is call:
            # Headers without the marker: whatever answers is no Watch server.
            self._call = None
            call.cancel()
            self._end_trace(grpc.StatusCode.UNIMPLEMENTED)
            self._no_extension()
            self._fail_all(
                RpcError(
                    "the server answered the Watch stream without serving it",
                    code=grpc.StatusCode.UNIMPLEMENTED,
                )
            )
        return False  # else the call ended: its reader tells the waiters

    async def _read(self, call: _Call) -> None:
        try:
            while True:
                response = await rpc_call(call.read())
                if response is grpc.aio.EOF:
                    raise _broken("the server ended the Watch stream")
                self.supported = True
                for event in cast("watch_pb2.WatchResponse", response).events:
                    self._dispatch(event)
        except RpcError as exc:
            if self._call is call:
                self._end_trace(exc.code)
            if exc.code is grpc.StatusCode.UNIMPLEMENTED:
                self._no_extension()
            elif exc.code is not grpc.StatusCode.UNAVAILABLE:
                exc = _broken(f"the Watch stream broke: {exc}")
            if self._call is call:
                self._call = None
                if self.supported:  # whoever answers the next call shows it serves it first
                    self.supported = None
                self._fail_all(exc)
            # Else the call was dropped (its last name forgotten) or replaced: the names
            # wanted now were added to the next call, whose end is not this one's.
            # The call has ended; half-closing it too ends the task a client interceptor
            # keeps feeding it requests (grpc.aio leaves it waiting otherwise).
            with contextlib.suppress(Exception):
                await call.done_writing()

    def _no_extension(self) -> None:
        if self.supported is not False:
            logger.info("the server has no Watch extension; using WaitOperation")
        self.supported = False

    def _dispatch(self, event: Event) -> None:
        traced = self._traced
        if self._recording and traced is not None and traced.span is not None:
            done = event.HasField("operation") and event.operation.done
            traced.span.add_event(
                "operation", {"lro_async.operation.name": event.name, "done": done}
            )
        super()._dispatch(event)

    def _end_trace(self, code: grpc.StatusCode) -> None:
        traced, self._traced = self._traced, None
        if traced is not None:
            traced.end(code)


ADD_BYTES = 256 * 1024
"""Most bytes of names one add request carries: a client adding 100,000 names at once
sends some twenty requests, each far below a server's 4 MiB message limit (one request of
them all would exceed it, and the broken call would be retried with them all again)."""


def _merged(requests: list[WatchRequest]) -> list[WatchRequest]:
    """Consecutive adds of one mode become one request (up to :data:`ADD_BYTES` of names):
    many waits, few messages."""
    merged: list[WatchRequest] = []
    size = 0  # bytes of names in the last request, if it is an add
    for request in requests:
        last = merged[-1] if merged else None
        if request.HasField("add"):
            added = sum(len(name) for name in request.add.names)
            if (
                last is not None
                and last.HasField("add")
                and last.add.metadata_changes == request.add.metadata_changes
                and size + added <= ADD_BYTES
            ):
                last.add.names.extend(request.add.names)
                size += added
                continue
            size = added
        merged.append(request)
    return merged


def _broken(message: str) -> RpcError:
    return RpcError(message, code=grpc.StatusCode.UNAVAILABLE)


ChangeKind = Literal["snapshot", "synced", "created", "changed", "done", "deleted"]

_KINDS: dict[int, ChangeKind] = {
    Event.SNAPSHOT: "snapshot",
    Event.SNAPSHOT_END: "synced",
    Event.CREATED: "created",
    Event.CHANGED: "changed",
    Event.DONE: "done",
    Event.DELETED: "deleted",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One change seen by :meth:`AsyncOperationsClient.watch`.

    :param kind: ``"snapshot"`` (an operation that matched when the watch began),
        ``"synced"`` (the snapshot is complete; no name), then ``"created"`` (an operation
        that matches and did not before), ``"changed"`` (its metadata, or it stopped
        matching), ``"done"`` and ``"deleted"`` (only the name).
    :param name: the operation's name.
    :param operation: its state, except for ``"synced"`` and ``"deleted"``.
    """

    kind: ChangeKind
    name: str
    operation: operations_pb2.Operation | None


def change_of(event: Event) -> Change | None:
    """The :class:`Change` a collection's event stands for; None for a kind this client
    does not know yet (or an error event, which collections do not send)."""
    kind = _KINDS.get(event.kind)
    if kind is None:
        return None
    operation = event.operation if event.HasField("operation") else None
    return Change(kind, event.name, operation)


async def watch_collection(
    channel: grpc.aio.Channel,
    parent: str,
    *,
    filter: str,
    page_size: int,
    metadata_changes: bool,
    metadata: Metadata,
) -> AsyncGenerator[Change, None]:
    """Open a collection watch on *channel* and yield its changes until the server ends it.

    :raises RpcError: INVALID_ARGUMENT (bad parent or filter), PERMISSION_DENIED,
        UNIMPLEMENTED (no Watch extension), or the status that broke the stream.
    """
    stub = cast("watch_pb2_grpc.OperationsWatchAsyncStub", OperationsWatchStub(channel))
    call = stub.Watch(metadata=tuple(metadata))
    try:
        request = WatchRequest.Collection(
            parent=parent, filter=filter, page_size=page_size, metadata_changes=metadata_changes
        )
        await rpc_call(call.write(WatchRequest(collection=request)))
        while True:
            response = await rpc_call(call.read())
            if response is grpc.aio.EOF:
                return
            for event in cast("watch_pb2.WatchResponse", response).events:
                change = change_of(event)
                if change is not None:
                    yield change
    finally:
        call.cancel()
        with contextlib.suppress(Exception):
            await call.done_writing()
