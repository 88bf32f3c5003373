"""The Watch extension over HTTP: the client's Server-Sent Events streams.

:class:`SseWatchStream` is the HTTP transport's :class:`~lro_async.client.watching.Multiplexer`:
every waiter of a client is carried by one ``POST {prefix}/operations:watch`` stream (one
more for waiters that follow metadata changes). SSE goes one way, so a name that joins is
not sent on the open stream: the stream is reopened with every name still wanted, a short
moment after the first newcomer so that a burst of waiters joins together. The protocol is
level-triggered, so the names re-sent miss nothing. A server without the routes (404, 405
or 501) is remembered as UNIMPLEMENTED, and the waiters use ``:wait`` instead; a stream
that breaks or ends fails its names with UNAVAILABLE, which the waiters retry with backoff.

:func:`watch_collection` is ``GET {parent}/operations:watch``, read as
:class:`~lro_async.client.watching.Change` objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc
import httpx

from ..errors import RpcError
from ..wire import error_from_body, event_from_json
from .watching import Change, Multiplexer, change_of

if TYPE_CHECKING:
    from ..v1 import watch_pb2

__all__ = ["SseWatchStream", "read_events", "watch_collection"]

logger = logging.getLogger("lro_async")

#: How long a newcomer waits for others before the stream is reopened with all of them.
REOPEN_DELAY = 0.02
_NO_ROUTE = frozenset({404, 405, 501})

#: Opens one streamed request: (method, path, params, JSON body) -> the response, as a
#: context (the transport's: its headers, its clients, httpx errors mapped).
Opener = Callable[
    [str, str, "dict[str, str] | None", "object | None"],
    "contextlib.AbstractAsyncContextManager[httpx.Response]",
]


class SseWatchStream(Multiplexer):
    """The waiters of one HTTP client, over at most two SSE names-watch streams.

    :param open: opens a streamed request (the transport's, with its headers).
    """

    def __init__(self, open: Opener) -> None:
        super().__init__()
        self._open = open
        self._runners: dict[bool, asyncio.Task[None]] = {}
        self._stale: dict[bool, asyncio.Event] = {False: asyncio.Event(), True: asyncio.Event()}
        self.opened = 0
        """Streams opened so far."""

    def _want(self, name: str, metadata: bool) -> None:
        runner = self._runners.get(metadata)
        if runner is None or runner.done():
            self._runners[metadata] = asyncio.get_running_loop().create_task(
                self._run(metadata), name="lro-async SSE Watch"
            )
        else:
            self._stale[metadata].set()  # reopen with the newcomer

    def forget(self, name: str) -> None:
        """Stop waiting for *name*; the last name of a stream closes it."""
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        if not any(e.metadata == entry.metadata for e in self._entries.values()):
            runner = self._runners.pop(entry.metadata, None)
            if runner is not None:
                runner.cancel()

    async def aclose(self) -> None:
        """Close the streams; waiters still inside :meth:`next` get UNAVAILABLE."""
        runners = list(self._runners.values())
        self._runners.clear()
        for runner in runners:
            runner.cancel()
        if runners:
            await asyncio.wait(runners)
        self._fail_all(_broken("the client closed the Watch stream"))

    # -- the streams ------------------------------------------------------------------

    def _names(self, metadata: bool) -> list[str]:
        return [name for name, entry in self._entries.items() if entry.metadata == metadata]

    async def _run(self, metadata: bool) -> None:
        stale = self._stale[metadata]
        await asyncio.sleep(0)  # the waiters started with this one add themselves first
        while names := self._names(metadata):
            stale.clear()
            reading = asyncio.get_running_loop().create_task(self._read(names, metadata))
            waking = asyncio.get_running_loop().create_task(stale.wait())
            try:
                await asyncio.wait((reading, waking), return_when=asyncio.FIRST_COMPLETED)
            finally:
                waking.cancel()
                reading.cancel()
                await asyncio.wait((reading, waking))
            if reading.done() and not reading.cancelled():
                error = reading.exception()
                if isinstance(error, RpcError):
                    self._fail(error, names)
                elif error is not None:
                    self._fail(_broken(f"the Watch stream broke: {error!r}"), names)
                else:  # ended: what it had not answered is asked again, with backoff
                    self._fail(_broken("the server ended the Watch stream"), names)
                continue  # names that joined meanwhile were not on it: a stream for them
            await asyncio.sleep(REOPEN_DELAY)  # pacing: let the burst of newcomers gather

    async def _read(self, names: list[str], metadata: bool) -> None:
        body = {"names": names, "metadataChanges": metadata}
        self.opened += 1
        async with self._open("POST", "operations:watch", None, body) as response:
            await _check(response, "POST .../operations:watch", self)
            async for event in read_events(response):
                self._dispatch(event)

    def _fail(self, error: RpcError, names: object = None) -> None:
        if error.code is grpc.StatusCode.UNIMPLEMENTED:
            if self.supported is not False:
                logger.info("the server has no Watch routes; using ':wait'")
            self.supported = False
        elif error.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
            error = _broken(f"the Watch stream broke: {error}")
        super()._fail(error, names if isinstance(names, list) else None)


async def _check(response: httpx.Response, what: str, stream: SseWatchStream | None) -> None:
    """Raise the error a non-2xx answer stands for (UNIMPLEMENTED: no such route)."""
    if response.is_success:
        if stream is not None:
            stream.supported = True
        return
    content = await response.aread()
    error = error_from_body(response.status_code, content)
    if response.status_code in _NO_ROUTE and error.code is not grpc.StatusCode.PERMISSION_DENIED:
        raise RpcError(
            f"the server has no {what} (HTTP {response.status_code}): {error.message[:200]}",
            code=grpc.StatusCode.UNIMPLEMENTED,
        ) from error
    raise error


async def read_events(response: httpx.Response) -> AsyncIterator[watch_pb2.Event]:
    """The events of an SSE response; an ``event: error`` raises its error.

    :raises RpcError: the stream's error, or INTERNAL for an event that cannot be read.
    """
    kind, data = "", ""
    async for line in response.aiter_lines():
        if line.startswith(":"):  # a heartbeat
            continue
        if line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data += line.removeprefix("data:").lstrip()
        elif not line and data:
            text, data = data, ""
            if kind == "error":
                raise _stream_error(text)
            kind = ""
            try:
                event = event_from_json(json.loads(text))
            except (ValueError, RecursionError) as exc:
                raise RpcError(
                    f"a Watch event cannot be read: {exc}"[:300], code=grpc.StatusCode.INTERNAL
                ) from exc
            yield event


def _stream_error(text: str) -> RpcError:
    try:
        status = int(json.loads(text)["error"]["code"])
    except (ValueError, KeyError, TypeError, RecursionError):
        status = 500
    return error_from_body(status, text.encode())


def _broken(message: str) -> RpcError:
    return RpcError(message, code=grpc.StatusCode.UNAVAILABLE)


async def watch_collection(
    open: Opener,
    path: str,
    *,
    filter: str,
    page_size: int,
    metadata_changes: bool,
) -> AsyncGenerator[Change, None]:
    """``GET {path}:watch``: yield the collection's changes until the server ends the stream.

    :raises RpcError: INVALID_ARGUMENT (bad parent or filter), PERMISSION_DENIED,
        UNIMPLEMENTED (no Watch routes), or the error that ended the stream.
    """
    params: dict[str, str] = {}
    if filter:
        params["filter"] = filter
    if page_size:
        params["pageSize"] = str(page_size)
    if metadata_changes:
        params["metadataChanges"] = "true"
    async with open("GET", f"{path}:watch", params, None) as response:
        await _check(response, f"GET .../{path.rpartition('/')[2]}:watch", None)
        async for event in read_events(response):
            change = change_of(event)
            if change is not None:
                yield change
