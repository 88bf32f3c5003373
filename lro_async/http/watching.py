"""The Watch extension over HTTP: Server-Sent Events of proto3 JSON ``Event`` objects.

Two routes (below the app's prefix), AIP-136 custom methods on the operations collection:

=============================================  ==============================================
``GET  {parent=**}/operations:watch``           a collection watch: ``filter``, ``pageSize``,
                                                ``metadataChanges``; ``-/operations:watch``
                                                watches every operation, ``operations:watch``
                                                the top-level ones
``POST operations:watch``                       a watch of names: the body is the JSON of
                                                ``WatchRequest.Add``,
                                                ``{"names": [...], "metadataChanges": false}``
=============================================  ==============================================

The answer is ``text/event-stream``: one ``data:`` line per event, the proto3 JSON of
``lro_async.v1.Event`` (``{"kind": "DONE", "name": ..., "operation": {...}}``), with the kinds,
per-name errors and batching of the gRPC stream; an SSE comment (``: keep-alive``) every
``heartbeat`` seconds keeps proxies from closing an idle stream. A names watch ends once
every name is answered for good (done, or an error event); drain ends every stream with the
latest state of its operations. A refusal before the stream starts is Google's JSON error
body with its status (400 a bad filter, 403, 429 RESOURCE_EXHAUSTED past the streams per
caller); one after it is an ``event: error`` whose data is that body, and the stream ends.

The stream logic is the gRPC servicer's (:class:`~lro_async.server.watching.WatchServicer`):
this module only reads the request, writes the events and watches for the client leaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ..errors import InvalidArgument
from ..server.auth import Caller
from ..server.watching import WatchServicer
from ..v1 import watch_pb2
from ..wire import dumps, event_to_json
from .answers import ClientGone, error_response, read_body, respond
from .parsing import Receive, Scope, Send, caller_of_scope, parse_body, query_of

if TYPE_CHECKING:
    from ..server.auth import Authorizer
    from ..server.manager import OperationManager

__all__ = ["SSE_CONTENT_TYPE", "SseWatches", "WATCH_VERB"]

logger = logging.getLogger("lro_async")


SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
WATCH_VERB = ":watch"
_QUERY = {
    "filter": "filter",
    "pageSize": "page_size",
    "page_size": "page_size",
    "metadataChanges": "metadata_changes",
    "metadata_changes": "metadata_changes",
}
_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def _host(caller: Caller) -> str:
    """One caller over HTTP is one client host: each SSE stream is a connection of its own."""
    return caller.peer.rpartition(":")[0] or caller.peer


class SseWatches:
    """The Watch routes of an :class:`~lro_async.http.OperationsApp`.

    :param manager: the operations to watch.
    :param authorize: asked per name as for WaitOperation, and for a collection as for
        ListOperations of its parent.
    :param max_names: most names one stream watches; past it, per-name RESOURCE_EXHAUSTED.
    :param max_streams: most streams one client host holds open; past it 429.
    :param heartbeat: seconds between two keep-alive comments on an idle stream.
    :param max_body_bytes: the largest names-watch body accepted; past it 413.
    """

    def __init__(
        self,
        manager: OperationManager,
        *,
        authorize: Authorizer | None,
        max_names: int = 100_000,
        max_streams: int = 16,
        heartbeat: float = 15.0,
        max_body_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        if not heartbeat > 0:
            raise ValueError(f"heartbeat must be positive, not {heartbeat!r}")
        self.servicer = WatchServicer(
            manager,
            authorize=authorize,
            max_names=max_names,
            max_streams=max_streams,
            caller_key=_host,
        )
        self.heartbeat = heartbeat
        self.max_body_bytes = max_body_bytes
        self.opened = 0
        """Watch streams opened since the app began (for tests and operators)."""

    @property
    def streams(self) -> int:
        """Watch streams open now."""
        return self.servicer.streams

    @staticmethod
    def route(method: str, path: str) -> str | None:
        """The collection's name (``"operations"`` for the top level, ``"-"`` for all) or
        ``""`` for a names watch, if *path* (below the prefix) is a Watch route."""
        if not path.endswith("operations" + WATCH_VERB):
            return None
        collection = path.removesuffix(WATCH_VERB)
        if method == "POST":
            return "" if collection == "operations" else None
        if method == "GET":
            if collection == "operations":
                return "operations"
            return collection.removesuffix("/operations") if "/" in collection else None
        return None

    async def serve(self, scope: Scope, receive: Receive, send: Send, collection: str) -> None:
        """Answer one Watch request (errors included) until the stream ends."""
        caller = caller_of_scope(scope)
        stream = _SseStream(send, self.heartbeat)
        try:
            first = await self._request(scope, receive, collection)
            async with self.servicer.admit(caller):
                self.opened += 1
                if first.HasField("add"):
                    await stream.start()  # a names watch answers at once, even if idle
                await _until_gone(self._run(caller, first, stream), receive)
        except ClientGone:
            return
        except Exception as exc:
            await stream.fail(exc, "" if collection in ("", "-") else collection)
            return
        finally:
            stream.stop()
        await stream.end()

    async def _request(
        self, scope: Scope, receive: Receive, collection: str
    ) -> watch_pb2.WatchRequest:
        if collection:  # GET: the query
            request = watch_pb2.WatchRequest.Collection(
                parent="" if collection == "-" else collection
            )
            for key, value in query_of(scope):
                field = _QUERY.get(key)
                if field is None:
                    raise InvalidArgument(f"unknown query parameter {key[:50]!r}")
                if field == "filter":
                    request.filter = value
                elif field == "page_size":
                    if not value.isdigit() or int(value) >= 2**31:
                        raise InvalidArgument(f"pageSize must be an integer, not {value[:20]!r}")
                    request.page_size = int(value)
                else:
                    if value not in _BOOLS:
                        raise InvalidArgument(f"{key} must be true or false, not {value[:20]!r}")
                    request.metadata_changes = _BOOLS[value]
            return watch_pb2.WatchRequest(collection=request)
        if query_of(scope):
            raise InvalidArgument("a names watch takes its names in the body, not the query")
        body = await read_body(scope, receive, self.max_body_bytes)
        add = parse_body(body, watch_pb2.WatchRequest.Add(), "")
        return watch_pb2.WatchRequest(add=add)

    async def _run(self, caller: Caller, first: watch_pb2.WatchRequest, stream: _SseStream) -> None:
        requests = [first]

        async def read() -> object:
            return requests.pop() if requests else None  # one request, then no more

        await self.servicer.serve(caller, read, stream.write)


async def _until_gone(serving: Awaitable[None], receive: Receive) -> None:
    """Serve until the stream ends, or stop (raising :class:`ClientGone`) when the client leaves."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(_awaited(serving), name="lro_async:sse-watch")
    gone = loop.create_task(_disconnected(receive), name="lro_async:sse-disconnect")
    try:
        await asyncio.wait([task, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        gone.cancel()
        await asyncio.wait([task, gone])
    if task.cancelled():
        raise ClientGone
    task.result()


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _SseStream:
    """The response: started on the first write (or at once), then SSE chunks and
    heartbeats, never two sends at a time."""

    def __init__(self, send: Send, heartbeat: float) -> None:
        self._send = send
        self._heartbeat = heartbeat
        self._lock = asyncio.Lock()
        self._started = False
        self._beating: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", SSE_CONTENT_TYPE.encode()),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
                ],
            }
        )
        self._beating = asyncio.get_running_loop().create_task(
            self._beat(), name="lro_async:sse-heartbeat"
        )

    async def write(self, response: watch_pb2.WatchResponse) -> None:
        chunk = b"".join(b"data: %s\n\n" % dumps(event_to_json(e)) for e in response.events)
        await self._chunk(chunk)

    async def _chunk(self, chunk: bytes) -> None:
        async with self._lock:
            await self.start()
            await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)  # pacing: an idle stream's keep-alive
            await self._chunk(b": keep-alive\n\n")

    def stop(self) -> None:
        if self._beating is not None:
            self._beating.cancel()

    async def end(self) -> None:
        async with self._lock:
            await self.start()
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def fail(self, exc: Exception, name: str) -> None:
        """Answer *exc*: as an error response, or as the stream's last event if it started."""
        status, body = error_response(exc, "a Watch request", name)
        with contextlib.suppress(Exception):  # the client may have gone meanwhile
            if self._started:
                await self._chunk(b"event: error\ndata: %s\n\n" % dumps(body))
                await self.end()
            else:
                await respond(self._send, status, body)
