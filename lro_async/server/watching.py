"""The Watch extension's server: ``lro_async.v1.OperationsWatch`` over an OperationManager.

One bidirectional stream carries any number of watched operations (see watch.proto for
the protocol). A watched name costs the server a hub entry and a small record, not a
call: the stream is a :class:`~lro_async.server.hub.Listener` that the hub tells of each
change by name, synchronously, and one task per stream (the handler's) turns what became
ready into events, batched into as few responses as fit.

Wake-ups come from the same hub as WaitOperation's, so a stream wakes on the write that
finishes an operation, and across replicas on the shared store's change notifications
(with the same periodic re-read that bounds how late a lost notification is noticed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, cast

import grpc
from google.longrunning import operations_pb2
from google.rpc import error_details_pb2, status_pb2

from ..errors import (
    InvalidArgument,
    OperationNotFound,
    ResourceExhausted,
    RpcError,
    StoreError,
    code_number,
)
from ..filtering import Filter, parse_filter
from ..names import check_name, list_parent
from ..protobuf import metadata_fingerprint, pack, seconds_duration
from ..telemetry import WATCH
from ..v1 import watch_pb2
from ..wire import WATCH_SERVED_HEADER
from .auth import Authorizer, Caller, caller_of
from .rules import check_access, error_parts, listed
from .servicer import _bounded, _Malformed, _parser

if TYPE_CHECKING:
    from ..stores.base import OperationRecord
    from .hub import Watch
    from .manager import OperationManager

__all__ = ["Read", "Write", "WatchServicer"]

logger = logging.getLogger("lro_async")

Context = grpc.aio.ServicerContext[Any, Any]
Event = watch_pb2.Event
Read = Callable[[], Awaitable[object]]
"""The next request of a stream (a ``WatchRequest``), or None when there are no more."""
Write = Callable[[watch_pb2.WatchResponse], Awaitable[None]]
"""Sends one response of a stream."""

SERVICE = "lro_async.v1.OperationsWatch"
MAX_RESPONSE_BYTES = 1024 * 1024
"""Events are batched into responses of at most about this size (one larger event alone)."""
_DEFAULT_PAGE_SIZE = 50
_MAX_PAGE_SIZE = 1000
_YIELD_EVERY = 1000  # names handled between two yields to the loop, within one request

# Why a name is ready to be looked at (bits).
_CHANGE = 1  # something changed; a non-final announcement
_FINAL = 2  # done, deleted, or the hub closed
_ADDED = 4  # just added: answer it if it is done already (level-triggered)
STORE_RETRY = 0.5
"""Seconds after which a stream reads again the operations its store failed to read: the
store's weather is the server's to ride out, so a client's watch is not ended by it."""


class WatchServicer:
    """Serves ``lro_async.v1.OperationsWatch`` from a manager's hub and store.

    ``manager.add_to_server(server)`` serves it beside the standard Operations service.

    :param manager: the operations to watch.
    :param authorize: the servicer's authorizer, asked per name as for WaitOperation, and
        for a collection as for ListOperations of its parent.
    :param max_names: most names one stream watches at once; past it an added name gets a
        RESOURCE_EXHAUSTED error event.
    :param max_streams: most Watch streams one caller holds open at once; past it a new
        stream ends with RESOURCE_EXHAUSTED.
    :param caller_key: who "one caller" is: by default the peer address (a connection).
    """

    def __init__(
        self,
        manager: OperationManager,
        *,
        authorize: Authorizer | None = None,
        max_names: int = 1_000_000,
        max_streams: int = 16,
        caller_key: Callable[[Caller], str] | None = None,
    ) -> None:
        if max_names < 1:
            raise ValueError(f"max_names must be at least 1, not {max_names!r}")
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, not {max_streams!r}")
        self.manager = manager
        self.authorize = authorize
        self.max_names = max_names
        self.max_streams = max_streams
        self._caller_key = caller_key or _peer
        self._streams: dict[str, int] = {}
        self.streams = 0
        """Watch streams open now."""
        if manager.telemetry is not None:
            manager.telemetry.count_open(self, waits=False)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register the OperationsWatch service with *server*."""
        handler = grpc.stream_stream_rpc_method_handler(
            self.Watch,
            request_deserializer=_parser(watch_pb2.WatchRequest),
            response_serializer=watch_pb2.WatchResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Watch": handler}),)
        )

    async def Watch(self, request_iterator: object, context: Context) -> None:
        """The Watch RPC: read requests on one side, send batched events on the other."""
        telemetry = self.manager.telemetry
        traced = None if telemetry is None else telemetry.server_rpc(f"{WATCH}/Watch", context)
        if traced is None:
            return await self._watch(context)
        code = grpc.StatusCode.OK
        try:
            await self._watch(context)
        except BaseException:
            code = _status_of(context)
            raise
        finally:
            traced.end(code)

    async def _watch(self, context: Context) -> None:
        caller = caller_of(context)

        async def read() -> object:
            request = await context.read()
            return None if request is grpc.aio.EOF else request

        try:
            async with self.admit(caller):
                # At once, not with the first event: clients write names only after it.
                await context.send_initial_metadata(((WATCH_SERVED_HEADER, "1"),))
                await self.serve(caller, read, context.write)
        except Exception as exc:
            await _abort(context, exc)

    @contextlib.asynccontextmanager
    async def admit(self, caller: Caller) -> AsyncIterator[None]:
        """Count one open stream of *caller* for the block (any transport).

        :raises ResourceExhausted: the caller has ``max_streams`` streams open.
        :raises RpcError: UNAVAILABLE while the server shuts down; or what opening the
            store raised.
        """
        key = self._caller_key(caller)
        self._reserve(key)
        await self.manager.open()  # on first use
        self.streams += 1
        self._streams[key] = self._streams.get(key, 0) + 1
        try:
            yield
        finally:
            self.streams -= 1
            left = self._streams[key] - 1
            if left:
                self._streams[key] = left
            else:
                del self._streams[key]

    async def serve(self, caller: Caller, read: Read, write: Write) -> None:
        """Serve one admitted stream over any transport until it ends.

        :param read: the next request (a ``WatchRequest``, or the servicer's marker of a
            malformed one); None once the client sends no more.
        :param write: sends one batched ``WatchResponse``.
        :raises RpcError: what ends the stream (a bad Collection request, say).
        """
        await _Stream(self, read, write, caller).run()

    def _reserve(self, key: str) -> None:
        manager = self.manager
        if manager.closed or manager.draining or manager.reads.hub.closed:
            raise RpcError("the server is shutting down", code=grpc.StatusCode.UNAVAILABLE)
        if self._streams.get(key, 0) >= self.max_streams:
            raise ResourceExhausted(
                f"this caller has {self.max_streams} Watch streams open already; "
                "watch more names on one stream",
                details=[pack(error_details_pb2.RetryInfo(retry_delay=seconds_duration(1.0)))],
            )


def _status_of(context: Context) -> grpc.StatusCode:
    """The status an ended call was aborted with (CANCELLED: it went away)."""
    code: object = context.code()  # None at run time when nobody set one
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.CANCELLED


def _peer(caller: Caller) -> str:
    return caller.peer


async def _abort(context: Context, exc: Exception) -> NoReturn:
    code, message, details = error_parts(exc, "Watch", "")
    message = _bounded(message)
    status = status_pb2.Status(code=code_number(code), message=message, details=details)
    await context.abort(
        code, message, trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),)
    )
    raise AssertionError("context.abort returned")  # pragma: no cover


def _error_event(name: str, exc: Exception) -> Event:
    code, message, details = error_parts(exc, "Watch", name)
    status = status_pb2.Status(code=code_number(code), message=_bounded(message), details=details)
    return Event(kind=Event.ERROR, name=name, error=status)


@dataclasses.dataclass(slots=True)
class _Entry:
    """One watched name."""

    watch: Watch
    metadata: bool
    fingerprint: str | None = None  # of the metadata last sent, with ``metadata``


@dataclasses.dataclass(frozen=True, slots=True)
class _Collection:
    parent: str | None
    filter: Filter | None
    page_size: int
    metadata: bool


class _Stream:
    """One Watch stream: its watched names (or collection), and what is ready to send.

    The hub calls :meth:`changed` synchronously; it records the name and wakes the
    handler, which is the only task that reads the store and writes to the call. A
    second task reads the client's requests.
    """

    def __init__(self, servicer: WatchServicer, read: Read, write: Write, caller: Caller) -> None:
        self._servicer = servicer
        self._manager = servicer.manager
        self._reads = reads = servicer.manager.reads
        self._hub = reads.hub
        self._read_request = read
        self._write = write
        self._caller = caller
        self._shared = reads.recheck_interval
        self._names: dict[str, _Entry] = {}
        self._ready: dict[str, int] = {}
        # Names the store failed to read (a lock, a dropped connection): read again soon.
        self._deferred: dict[str, int] = {}
        self._store_failing = False  # in this round: the rest of the names wait too
        self._queued: list[Event] = []  # events made by the reader (errors)
        self._wakeup: asyncio.Future[None] | None = None
        self._closing = False  # the hub closed: send the latest states and end
        self._resync = False
        self._eof = False  # the client half-closed
        self._fatal: RpcError | None = None  # a request that ends the stream
        self._collection: _Collection | None = None
        self._known: dict[str, tuple[bool, str]] = {}  # collection: name -> signature
        self._requests = 0
        self._snapshot_due = False

    # -- the hub's Listener ---------------------------------------------------------

    def changed(self, name: str, final: bool) -> None:
        self._ready[name] = self._ready.get(name, 0) | (_FINAL if final else _CHANGE)
        self._wake()

    def resync(self) -> None:
        self._resync = True
        self._wake()

    def closed(self) -> None:
        self._closing = True
        self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    # -- the handler ------------------------------------------------------------------

    async def run(self) -> None:
        self._hub.subscribe(self)
        reader = asyncio.get_running_loop().create_task(self._read(), name="lro_async:watch-read")
        try:
            await self._serve()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self._hub.unsubscribe(self)
            for entry in self._names.values():
                self._hub.unlisten(entry.watch, self)
            self._names.clear()

    async def _serve(self) -> None:
        while True:
            await self._until_ready()
            if self._fatal is not None:
                raise self._fatal
            if self._snapshot_due and self._collection is not None:
                self._snapshot_due = False
                await self._snapshot(self._collection)
            closing = self._closing
            events = self._queued
            self._queued = []
            if self._resync and self._collection is not None:
                self._resync = False
                events.extend(await self._relist(self._collection))
            elif self._resync or closing:
                self._resync = False
                for name in self._names:
                    self._ready[name] = self._ready.get(name, 0) | _CHANGE
            ready = self._ready
            self._ready = {}
            self._store_failing = False
            for name, why in ready.items():
                event = await self._look(name, why, closing)
                if event is not None:
                    events.append(event)
                    if len(events) % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
            await self._send(events)
            if closing or (self._eof and not self._names and self._collection is None):
                return

    def _idle(self) -> bool:
        return not (
            self._ready
            or self._queued
            or self._closing
            or self._resync
            or self._fatal is not None
            or (self._eof and not self._names and self._collection is None)
            or self._snapshot_due
        )

    async def _until_ready(self) -> None:
        if not self._idle():
            return
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            if self._deferred:  # what the store failed to read: again in a moment
                await asyncio.wait((self._wakeup,), timeout=STORE_RETRY)
                for name, why in self._deferred.items():
                    self._ready[name] = self._ready.get(name, 0) | why
                self._deferred = {}
            elif self._shared is None or not self._names:
                await self._wakeup
            else:  # a shared store: re-read now and then, as WaitOperation does
                done, _ = await asyncio.wait((self._wakeup,), timeout=self._shared)
                if not done:
                    self._resync = True
        finally:
            self._wakeup = None

    async def _send(self, events: list[Event]) -> None:
        batch: list[Event] = []
        size = 0
        for event in events:
            event_size = event.ByteSize() + 8
            if batch and size + event_size > MAX_RESPONSE_BYTES:
                await self._write(watch_pb2.WatchResponse(events=batch))
                batch, size = [], 0
            batch.append(event)
            size += event_size
        if batch:
            await self._write(watch_pb2.WatchResponse(events=batch))

    # -- requests ---------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                request = await self._read_request()
                if request is None:
                    break
                await self._handle(cast("watch_pb2.WatchRequest | _Malformed", request))
                self._wake()
        except Exception as exc:  # the call broke: the handler ends with it
            logger.debug("reading a Watch stream ended: %r", exc)
        finally:
            self._eof = True
            self._wake()

    async def _handle(self, request: watch_pb2.WatchRequest | _Malformed) -> None:
        self._requests += 1
        if isinstance(request, _Malformed):
            self._queued.append(_error_event("", request.error()))
            return
        which = request.WhichOneof("request")
        if which == "collection":
            if self._requests != 1:
                self._fatal = InvalidArgument(
                    "a Collection request must be the first and only request of its stream"
                )
                return
            await self._watch_collection(request.collection)
        elif self._collection is not None:
            self._fatal = InvalidArgument("a stream that watches a collection takes no names")
        elif which == "add":
            await self._add(request.add.names, request.add.metadata_changes)
        elif which == "remove":
            self._remove(request.remove.names)
        else:
            error = InvalidArgument("the request sets none of add, remove and collection")
            self._queued.append(_error_event("", error))

    async def _add(self, names: Iterable[str], metadata: bool) -> None:
        hub = self._hub
        servicer = self._servicer
        for count, name in enumerate(names, 1):
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            entry = self._names.get(name)
            if entry is not None:  # watched already
                if metadata and not entry.metadata:
                    entry.metadata = True
                    self._ready[name] = self._ready.get(name, 0) | _ADDED
                continue
            try:
                check_name(name)
                await check_access(servicer.authorize, "WaitOperation", name, self._caller_now)
                if len(self._names) >= servicer.max_names:
                    raise ResourceExhausted(
                        f"this stream watches {servicer.max_names} operations already"
                    )
            except RpcError as exc:
                self._queued.append(_error_event(name, exc))
                continue
            if name in self._names:  # added meanwhile (the authorizer awaited)
                continue
            self._names[name] = _Entry(hub.listen(name, self), metadata)
            self._ready[name] = self._ready.get(name, 0) | _ADDED

    def _caller_now(self) -> Caller:
        return self._caller

    def _remove(self, names: Iterable[str]) -> None:
        for name in names:
            entry = self._names.pop(name, None)
            if entry is not None:
                self._hub.unlisten(entry.watch, self)
                self._ready.pop(name, None)

    def _drop(self, name: str) -> None:
        entry = self._names.pop(name)
        self._hub.unlisten(entry.watch, self)

    # -- names ------------------------------------------------------------------------

    async def _look(self, name: str, why: int, closing: bool) -> Event | None:
        """The event *name* calls for now, if any; a terminal one stops watching it."""
        if self._collection is not None:
            return await self._look_collection(self._collection, name)
        entry = self._names.get(name)
        if entry is None:  # removed meanwhile
            return None
        outcome = entry.watch.outcome
        if outcome is not None:  # finished here: no need to read it back
            if entry.watch.finished:
                self._reads.noticed(entry.watch.finished)
            self._drop(name)
            return Event(kind=Event.DONE, name=name, operation=outcome)
        if why == _CHANGE and not (entry.metadata or closing or self._shared is not None):
            return None  # a metadata change nobody asked about
        if self._store_failing and not closing:
            self._deferred[name] = self._deferred.get(name, 0) | why
            return None
        try:
            record = await self._reads.for_waiter(name)
        except StoreError as exc:
            if closing:  # no later: say why there is no latest state
                self._drop(name)
                return _error_event(name, exc)
            logger.debug("reading %s for a Watch stream failed (%s); reading it again", name, exc)
            self._store_failing = True
            self._deferred[name] = self._deferred.get(name, 0) | why
            return None
        except Exception as exc:
            self._drop(name)
            return _error_event(name, exc)
        if record is None or self._reads.expired(record):
            self._drop(name)
            return _error_event(name, _not_found(name))
        operation = record.operation
        if operation.done:
            if not why & _ADDED:  # it was watched as it finished
                self._reads.noticed(record.update_time)
            self._drop(name)
            return Event(kind=Event.DONE, name=name, operation=operation)
        if entry.metadata:
            fingerprint = metadata_fingerprint(operation.metadata)
            if fingerprint != entry.fingerprint:
                entry.fingerprint = fingerprint
                return Event(kind=Event.CHANGED, name=name, operation=operation)
        if closing:
            return Event(kind=Event.CHANGED, name=name, operation=operation)
        return None

    # -- a collection -----------------------------------------------------------------

    async def _watch_collection(self, request: watch_pb2.WatchRequest.Collection) -> None:
        try:
            parent = list_parent(request.parent)
            await check_access(
                self._servicer.authorize, "ListOperations", listed(parent), self._caller_now
            )
            if request.page_size < 0:
                raise InvalidArgument(f"page_size must not be negative, not {request.page_size}")
            parsed = parse_filter(request.filter)
        except RpcError as exc:
            self._fatal = exc
            return
        page_size = min(request.page_size or _DEFAULT_PAGE_SIZE, _MAX_PAGE_SIZE)
        self._collection = _Collection(parent, parsed, page_size, request.metadata_changes)
        self._snapshot_due = True
        # Changes from now on are announced; those the snapshot reads are deduplicated.
        self._hub.subscribe(self, parent=parent)

    def _signature(
        self, collection: _Collection, operation: operations_pb2.Operation
    ) -> tuple[bool, str]:
        fingerprint = metadata_fingerprint(operation.metadata) if collection.metadata else ""
        return operation.done, fingerprint

    async def _snapshot(self, collection: _Collection) -> None:
        token = ""
        text = collection.filter.text if collection.filter is not None else ""
        while True:
            operations, token = await self._manager.list(
                collection.parent, filter=text, page_size=collection.page_size, page_token=token
            )
            for operation in operations:
                self._known[operation.name] = self._signature(collection, operation)
            events = [Event(kind=Event.SNAPSHOT, name=o.name, operation=o) for o in operations]
            if not token:
                events.append(Event(kind=Event.SNAPSHOT_END))
            await self._send(events)
            if not token:
                return

    async def _relist(self, collection: _Collection) -> list[Event]:
        """Changes may have gone unannounced: list again and report the differences."""
        token, seen, events = "", set(), []
        text = collection.filter.text if collection.filter is not None else ""
        while True:
            operations, token = await self._manager.list(
                collection.parent, filter=text, page_size=_MAX_PAGE_SIZE, page_token=token
            )
            for operation in operations:
                seen.add(operation.name)
                event = self._compare(collection, operation, matches=True)
                if event is not None:
                    events.append(event)
            if not token:
                break
        for name in [name for name in self._known if name not in seen]:
            self._ready[name] = _CHANGE  # deleted or no longer matching: look again
        return events

    async def _look_collection(self, collection: _Collection, name: str) -> Event | None:
        try:
            record = await self._reads.for_waiter(name)
        except Exception as exc:
            return _error_event(name, exc)
        if record is None or self._reads.expired(record):
            if self._known.pop(name, None) is None:
                return None
            return Event(kind=Event.DELETED, name=name)
        return self._compare(collection, record.operation, matches=_matches(collection, record))

    def _compare(
        self, collection: _Collection, operation: operations_pb2.Operation, *, matches: bool
    ) -> Event | None:
        name = operation.name
        known = self._known.get(name)
        if known is None:
            if not matches:
                return None
            self._known[name] = self._signature(collection, operation)
            return Event(kind=Event.CREATED, name=name, operation=operation)
        signature = self._signature(collection, operation)
        if matches and signature == known:
            return None
        if matches:
            self._known[name] = signature
        else:
            del self._known[name]  # reported once more, then no more
        kind = Event.DONE if operation.done else Event.CHANGED
        return Event(kind=kind, name=name, operation=operation)


def _matches(collection: _Collection, record: OperationRecord) -> bool:
    if collection.parent is not None and record.parent != collection.parent:
        return False
    return collection.filter is None or collection.filter.matches(record)


def _not_found(name: str) -> OperationNotFound:
    return OperationNotFound(f"operation {name!r} not found")
