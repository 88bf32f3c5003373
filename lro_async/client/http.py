"""HttpTransport: the Operations RPCs over HTTP/JSON, with httpx (the ``http`` extra).

It speaks the routes of :mod:`lro_async.http` (and of google-api-core's REST operations
transport), so the waiting logic above the seam is the same as over gRPC:

- ``wait`` posts ``{name}:wait``, an lro_async extension; a 404 (other than lro_async's
  own "operation not found"), 405 or 501 answer means the server has no such route and
  becomes UNIMPLEMENTED, so the waiter remembers it and polls GetOperation instead;
- waiters share one Server-Sent Events stream, ``POST operations:watch`` (the Watch
  extension, see :mod:`lro_async.client.sse`), where the server has it; a 404, 405 or 501
  there is remembered per client and the waiters use ``:wait``;
- error bodies become the :class:`~lro_async.RpcError` of their ``status`` (else of the
  HTTP status: 429 RESOURCE_EXHAUSTED, 502/503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, all
  retried by the waiter); connection failures are UNAVAILABLE and timeouts
  DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import ssl
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import TypeVar

import grpc
from google.longrunning import operations_pb2
from google.rpc import error_details_pb2

from ..errors import RpcError
from ..telemetry import OPERATIONS, WATCH
from ..telemetry import current as current_telemetry

try:
    import httpx
except ModuleNotFoundError as exc:  # pragma: no cover - the extra is installed in tests
    raise ImportError("HTTP clients need the http extra: pip install 'lro-async[http]'") from exc

from ..protobuf import seconds_duration
from ..wire import (
    ERROR_DOMAIN,
    OPERATION_NOT_FOUND,
    SERVER_TIMEOUT_HEADER,
    Json,
    error_from_body,
    list_response_from_json,
    operation_from_json,
)
from . import sse
from .sse import SseWatchStream
from .transport import Metadata
from .watching import Change

__all__ = ["Clients", "HttpTransport", "map_http_errors"]

T = TypeVar("T")

# What a path segment holds as it is (RFC 3986 pchar); anything else is percent-encoded.
_SAFE = "/:@+~!$&'()*,;="
_NO_ROUTE = frozenset({404, 405, 501})
STREAM_READ_TIMEOUT = 120.0
"""Seconds without a byte (event or heartbeat) after which a Watch stream counts as dead."""


@contextlib.contextmanager
def map_http_errors() -> Iterator[None]:
    """Turn httpx's errors raised inside the block into :class:`RpcError`.

    Timeouts are DEADLINE_EXCEEDED, failed connections UNAVAILABLE (both retried by the
    waiter).
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        raise RpcError(
            f"deadline exceeded: {exc!r}", code=grpc.StatusCode.DEADLINE_EXCEEDED
        ) from exc
    except httpx.TransportError as exc:
        raise RpcError(
            f"the server is unreachable: {exc!r}", code=grpc.StatusCode.UNAVAILABLE
        ) from exc
    except httpx.HTTPError as exc:
        raise RpcError(f"the HTTP exchange failed: {exc!r}", code=grpc.StatusCode.UNKNOWN) from exc


class HttpTransport:
    """:class:`~lro_async.client.transport.OperationsTransport` over HTTP/JSON.

    With telemetry (:mod:`lro_async.telemetry`) each request has a span, whose W3C trace
    context travels in its ``traceparent`` header. Usually made by
    :meth:`AsyncOperationsClient.from_url`, which closes it.

    :param url: the server's base URL, e.g. ``http://127.0.0.1:8080``.
    :param prefix: the path in front of every route.
    :param client: an ``httpx.AsyncClient`` to send every request with (not closed by
        :meth:`aclose`); default: as many of its own as it takes, see :class:`Clients`.
    :param ssl_context: for an ``https://`` URL, verify the server with this context (and
        present the client certificate loaded into it); default: the system's CAs.
    """

    kind = "http"  # lro_async.transport of the wait spans (telemetry)

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "/v1",
        client: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"expected an http:// or https:// URL, not {url!r}")
        prefix = prefix.strip("/")
        self._base = url.rstrip("/") + (f"/{prefix}" if prefix else "")
        if ssl_context is not None and parts.scheme != "https":
            raise ValueError(f"an ssl_context needs an https:// URL, not {url!r}")
        self._clients = Clients(tls=parts.scheme == "https", given=client, ssl_context=ssl_context)
        self.telemetry = current_telemetry()

    async def aclose(self) -> None:
        """Close the httpx clients this transport made."""
        await self._clients.aclose()

    def watch_stream(self, metadata: Metadata) -> SseWatchStream:
        """The client's Watch streams (``POST operations:watch``, Server-Sent Events)."""
        return SseWatchStream(functools.partial(self._stream, metadata))

    def watch_collection(
        self,
        parent: str,
        *,
        filter: str,
        page_size: int,
        metadata_changes: bool,
        metadata: Metadata,
    ) -> AsyncGenerator[Change, None]:
        """A collection watch: ``GET {parent}/operations:watch`` (Server-Sent Events)."""
        return sse.watch_collection(
            functools.partial(self._stream, metadata),
            f"{_path(parent) if parent else '-'}/operations",
            filter=filter,
            page_size=page_size,
            metadata_changes=metadata_changes,
        )

    @contextlib.asynccontextmanager
    async def _stream(
        self,
        metadata: Metadata,
        method: str,
        path: str,
        params: dict[str, str] | None,
        body: object | None,
    ) -> AsyncIterator[httpx.Response]:
        url = f"{self._base}/{path}"
        telemetry = self.telemetry
        traced = None
        if telemetry is not None:
            # One span per stream, in a trace of its own: it serves many operations' waits.
            traced = telemetry.client_rpc(f"{WATCH}/Watch", metadata, root=True, http=(method, url))
            metadata = traced.metadata
        code, status = grpc.StatusCode.CANCELLED, None
        try:
            with map_http_errors(), self._clients.lease() as client:
                async with client.stream(
                    method,
                    url,
                    headers=[*_headers(metadata), ("accept", "text/event-stream")],
                    params=params,
                    content=None if body is None else json.dumps(body).encode(),
                    # No deadline: the server's heartbeats (every 15 s by default) show a
                    # stream that is idle but alive; two minutes of silence is a dead one.
                    timeout=httpx.Timeout(30.0, read=STREAM_READ_TIMEOUT),
                ) as response:
                    status = response.status_code
                    yield response
                    code = grpc.StatusCode.OK
        except RpcError as exc:
            code = exc.code
            raise
        finally:
            if traced is not None:
                traced.end(code, status)

    async def get(
        self, name: str, *, timeout: float | None, metadata: Metadata
    ) -> operations_pb2.Operation:
        response = await self._send("GetOperation", _path(name), timeout, metadata)
        return _read(response, operation_from_json)

    async def wait(
        self, name: str, wait: float | None, *, timeout: float | None, metadata: Metadata
    ) -> operations_pb2.Operation:
        body: Json = {}
        if wait is not None:
            body["timeout"] = seconds_duration(max(wait, 0.0)).ToJsonString()
        extra = () if timeout is None else ((SERVER_TIMEOUT_HEADER, f"{timeout:.3f}"),)
        response = await self._send(
            "WaitOperation", _path(name) + ":wait", timeout, (*metadata, *extra), body=body
        )
        return _read(response, operation_from_json)

    async def cancel(self, name: str, *, timeout: float | None, metadata: Metadata) -> None:
        await self._send("CancelOperation", _path(name) + ":cancel", timeout, metadata, body={})

    async def delete(self, name: str, *, timeout: float | None, metadata: Metadata) -> None:
        await self._send("DeleteOperation", _path(name), timeout, metadata)

    async def list(
        self,
        parent: str,
        *,
        filter: str,
        page_size: int,
        page_token: str,
        timeout: float | None,
        metadata: Metadata,
    ) -> operations_pb2.ListOperationsResponse:
        # ListOperations' name "" (every operation) has no path of its own: AIP-159's "-".
        path = f"{_path(parent) if parent else '-'}/operations"
        params: dict[str, str | int] = {}
        if filter:
            params["filter"] = filter
        if page_size:
            params["pageSize"] = page_size
        if page_token:
            params["pageToken"] = page_token
        response = await self._send("ListOperations", path, timeout, metadata, params=params)
        return _read(response, list_response_from_json)

    async def _send(
        self,
        rpc: str,
        path: str,
        timeout: float | None,
        metadata: Metadata,
        *,
        body: Json | None = None,
        params: dict[str, str | int] | None = None,
    ) -> httpx.Response:
        """Make the request of Operations method *rpc*; return its successful response.

        With telemetry, the request has a span and carries its W3C trace context.
        """
        verb = _VERBS[rpc]
        url = f"{self._base}/{path}"
        telemetry = self.telemetry
        if telemetry is None:
            response = await self._exchange(verb, url, timeout, metadata, body, params)
            return _successful(response, rpc, verb, path)
        traced = telemetry.client_rpc(f"{OPERATIONS}/{rpc}", metadata, http=(verb, url))
        code, status = grpc.StatusCode.CANCELLED, None
        try:
            response = await self._exchange(verb, url, timeout, traced.metadata, body, params)
            status = response.status_code
            _successful(response, rpc, verb, path)
            code = grpc.StatusCode.OK
            return response
        except RpcError as exc:
            code = exc.code
            raise
        finally:
            traced.end(code, status)

    async def _exchange(
        self,
        verb: str,
        url: str,
        timeout: float | None,
        metadata: Metadata,
        body: Json | None,
        params: dict[str, str | int] | None,
    ) -> httpx.Response:
        with map_http_errors(), self._clients.lease() as client:
            return await client.request(
                verb,
                url,
                headers=_headers(metadata),
                params=params,
                content=None if body is None else json.dumps(body).encode(),
                timeout=httpx.Timeout(timeout),
            )


def _successful(response: httpx.Response, rpc: str, verb: str, path: str) -> httpx.Response:
    """*response*, if it succeeded.

    :raises RpcError: the error it carries (UNIMPLEMENTED: a server without ``:wait``).
    """
    if response.is_success:
        return response
    error = error_from_body(response.status_code, response.content)
    no_route = response.status_code in _NO_ROUTE and not _missing_operation(error)
    if rpc == "WaitOperation" and no_route:
        raise RpcError(
            f"the server has no {verb} .../{path.rpartition('/')[2][:60]} "
            f"(HTTP {response.status_code}): {error.message[:200]}",
            code=grpc.StatusCode.UNIMPLEMENTED,
        ) from error
    raise error


_VERBS = {
    "GetOperation": "GET",
    "ListOperations": "GET",
    "CancelOperation": "POST",
    "DeleteOperation": "DELETE",
    "WaitOperation": "POST",
}


class Clients:
    """httpx clients of at most *size* connections each, made as they are needed.

    Over HTTP/1.1 each open long poll holds a connection, so a client awaiting thousands
    of operations holds thousands of connections; but httpcore's pool does work
    proportional to (connections x queued requests) on every request and every response,
    which at 1,000 connections costs seconds. Small pools keep that work constant.

    :param size: connections per client.
    :param tls: whether the server is ``https://`` (else no certificates are loaded).
    :param given: use only this client, never closed here.
    :param ssl_context: verify the server (and present a client certificate) with this;
        None: the system's CA certificates.
    """

    def __init__(
        self,
        size: int = 16,
        *,
        tls: bool = True,
        given: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._size = size
        self._tls = tls
        self._ssl_context = ssl_context
        self._owned = given is None
        self._clients: list[httpx.AsyncClient] = [] if given is None else [given]
        self._busy: list[int] = [0] * len(self._clients)  # requests in flight, per client
        self._closed = False

    @contextlib.contextmanager
    def lease(self) -> Iterator[httpx.AsyncClient]:
        """The client to send one request with: the first one with a free connection.

        :raises RpcError: CANCELLED once closed, also for a request cut off by closing.
        """
        if self._closed:
            raise _closed()
        index = 0
        if self._owned:
            index = next((i for i, n in enumerate(self._busy) if n < self._size), -1)
            if index < 0:
                self._clients.append(self._new())
                self._busy.append(0)
                index = len(self._clients) - 1
        client = self._clients[index]
        self._busy[index] += 1
        try:
            yield client
        except (httpx.HTTPError, RuntimeError) as exc:
            # Closed under the request, or (a given client) closed already by its owner.
            if self._closed or client.is_closed:
                raise _closed() from exc
            raise
        finally:
            self._busy[index] -= 1

    def _new(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            # Loading the CA certificates takes 50 ms: once per process, and not for http://.
            verify=(self._ssl_context or _system_ssl_context()) if self._tls else False,
            limits=httpx.Limits(
                max_connections=self._size,
                max_keepalive_connections=self._size,
                keepalive_expiry=4.0,  # below uvicorn's 5 s, so the client closes first
            ),
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._owned:
            for client in self._clients:
                await client.aclose()


def _closed() -> RpcError:
    return RpcError("the HTTP client is closed", code=grpc.StatusCode.CANCELLED)


@functools.cache
def _system_ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def _path(name: str) -> str:
    # Dot segments would be removed by URL normalisation on the way: escape them.
    return "/".join(
        "%2E" * len(segment) if segment in (".", "..") else urllib.parse.quote(segment, _SAFE)
        for segment in name.split("/")
    )


def _headers(metadata: Metadata) -> list[tuple[str, str]]:
    return [
        (key, value if isinstance(value, str) else base64.b64encode(value).decode("ascii"))
        for key, value in metadata
    ]


def _read(response: httpx.Response, parse: Callable[[object], T]) -> T:
    try:
        return parse(json.loads(response.content))
    except (ValueError, RecursionError) as exc:
        raise RpcError(
            f"the server's answer cannot be read: {exc}"[:300], code=grpc.StatusCode.INTERNAL
        ) from exc


def _missing_operation(error: RpcError) -> bool:
    """Whether *error* is lro_async's server saying the operation does not exist."""
    if error.code is not grpc.StatusCode.NOT_FOUND:
        return False
    for detail in error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.domain == ERROR_DOMAIN and info.reason == OPERATION_NOT_FOUND
    return False
