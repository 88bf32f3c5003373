"""OperationsApp: ``google.longrunning.Operations`` over HTTP/JSON, as a plain ASGI app.

Routes (below a prefix, ``/v1`` by default), as in ``google/longrunning/operations.proto``
and google-api-core's REST operations transport:

==========================================  ===============================================
``GET    {name=**/operations/*}``            GetOperation (also ``operations/**``)
``GET    {name=**}/operations``              ListOperations; ``filter``, ``pageSize``,
                                             ``pageToken`` (or ``page_size``, ``page_token``)
``GET    operations``                        ListOperations of the top-level operations
``GET    -/operations``                      ListOperations of every operation (AIP-159)
``POST   {name=**/operations/*}:cancel``     CancelOperation
``DELETE {name=**/operations/*}``            DeleteOperation
``POST   {name=**/operations/*}:wait``       WaitOperation, body ``{"timeout": "30s"}``
``GET    {parent=**}/operations:watch``      a collection watch (Server-Sent Events)
``POST   operations:watch``                  a watch of names, body ``{"names": [...]}``
==========================================  ===============================================

The two ``:watch`` routes are the Watch extension (see :mod:`lro_async.http.watching`).

``:wait`` is an lro_async extension: Operations has no HTTP rule for WaitOperation. It is
held like the gRPC call: until the operation is done, the timeout passes, the server cap
(``max_wait``) passes, or the ``X-Server-Timeout`` header's seconds (less a margin) pass.
The ``lro-async-wait-mode: progress`` header works as over gRPC.

Errors are Google's JSON error body with the AIP-193 status of their code, carrying
``google.rpc.ErrorInfo`` as over gRPC; two HTTP-only refusals keep their own status: 405
(UNIMPLEMENTED: no such method on the path) and 413 (INVALID_ARGUMENT: the body is larger
than ``max_body_bytes``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import TYPE_CHECKING, Any

import grpc
from google.longrunning import operations_pb2

from ..names import check_name, list_parent
from ..protobuf import WAIT_MODE_HEADER, parse_progress_header
from ..server.auth import Authorizer, Caller, Rpc

# The gRPC servicer's own rules, so that both transports answer alike.
from ..server.rules import (
    check_access,
    listed,
    refuse_partial_success,
    reserve_wait,
    wait_bound,
)
from ..telemetry import OPERATIONS, WATCH
from ..wire import Json, list_response_to_json, operation_to_json
from .answers import ClientGone, Refused, error_response, read_body, respond
from .dashboard import Dashboard
from .parsing import (
    Receive,
    Scope,
    Send,
    caller_of_scope,
    list_parameters,
    no_parameters,
    parse_body,
    query_of,
    server_timeout,
)
from .watching import SseWatches

if TYPE_CHECKING:
    from ..server.manager import OperationManager

__all__ = [
    "ASGIApp",
    "OperationsApp",
    "Receive",
    "Scope",
    "Send",
    "asgi_app",
]

logger = logging.getLogger("lro_async")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_METHODS = "GET, POST, DELETE"


@dataclasses.dataclass(frozen=True, slots=True)
class _Request:
    rpc: Rpc
    name: str  # the operation's name; for ListOperations the request's ``name``
    query: list[tuple[str, str]]
    caller: Caller


@dataclasses.dataclass(frozen=True, slots=True)
class _WatchRoute:
    collection: str  # see SseWatches.route; "": a names watch


_Routed = _Request | _WatchRoute | Exception
"""What a request asks for; the error to answer when it matches no route."""

# The route templates of the requests' spans and durations (``http.route``), after the prefix.
_ROUTES: dict[str, str] = {
    "GetOperation": "/{name=**/operations/*}",
    "ListOperations": "/{name=**}/operations",
    "CancelOperation": "/{name=**/operations/*}:cancel",
    "DeleteOperation": "/{name=**/operations/*}",
    "WaitOperation": "/{name=**/operations/*}:wait",
}
_NAMES_WATCH_ROUTE = "/operations:watch"
_COLLECTION_WATCH_ROUTE = "/{name=**}/operations:watch"


class OperationsApp:
    """The ``google.longrunning.Operations`` service over HTTP/JSON, as an ASGI app.

    Serves the same :class:`~lro_async.OperationManager` as the gRPC servicer, with the
    same answers (DESIGN.md section 3), the same authorization hook (the :class:`Caller`
    has the request headers as ``metadata`` and ``transport="http"``) and the same
    per-operation events behind ``:wait``. No framework: any ASGI server runs it.

    >>> import lro_async, lro_async.http
    >>> manager = lro_async.OperationManager()
    >>> app = lro_async.http.asgi_app(manager)     # e.g. uvicorn.run(app, port=8080)

    :param manager: the operations to serve (not owned: close it yourself).
    :param prefix: the path every route starts with; ``""`` for none.
    :param authorize: who may do what (see :mod:`lro_async.server.auth`); None allows all.
    :param wait: serve the ``:wait`` long poll; without it ``:wait`` answers 501, and
        clients poll GetOperation instead.
    :param max_wait: the longest a ``:wait`` is held, in seconds, whatever it asks.
    :param deadline_margin: how long before the ``X-Server-Timeout`` deadline a ``:wait``
        answers.
    :param max_waits: most ``:wait`` requests held at once; past it 429 RESOURCE_EXHAUSTED.
    :param max_body_bytes: the largest request body accepted; past it 413.
    :param dashboard: also serve the dashboard page at ``/`` (see
        :mod:`lro_async.http.dashboard`); its routes come before the API's.
    :param watch: serve the ``:watch`` routes (Server-Sent Events); without them clients
        fall back to ``:wait``.
    :param max_watch_names: most names one watch stream watches.
    :param max_watch_streams: most watch streams one client host holds open; past it 429.
    :param heartbeat: seconds between two keep-alive comments on an idle watch stream.
    """

    def __init__(
        self,
        manager: OperationManager,
        *,
        prefix: str = "/v1",
        authorize: Authorizer | None = None,
        wait: bool = True,
        max_wait: float = 1800.0,
        deadline_margin: float = 0.2,
        max_waits: int = 200_000,
        max_body_bytes: int = 64 * 1024,
        dashboard: bool = False,
        watch: bool = True,
        max_watch_names: int = 100_000,
        max_watch_streams: int = 16,
        heartbeat: float = 15.0,
    ) -> None:
        prefix = prefix.rstrip("/")
        if prefix and not prefix.startswith("/"):
            raise ValueError(f"prefix must start with '/', not {prefix!r}")
        if not (max_wait > 0 and math.isfinite(max_wait)):
            raise ValueError(f"max_wait must be positive, not {max_wait!r}")
        if not deadline_margin >= 0:
            raise ValueError(f"deadline_margin must not be negative, not {deadline_margin!r}")
        if max_waits < 1 or max_body_bytes < 1:
            raise ValueError("max_waits and max_body_bytes must be at least 1")
        self.manager = manager
        self.prefix = prefix
        self.authorize = authorize
        self.wait = wait
        self.max_wait = max_wait
        self.deadline_margin = deadline_margin
        self.max_waits = max_waits
        self.max_body_bytes = max_body_bytes
        self.waiting = 0
        """``:wait`` requests held now."""
        if manager.telemetry is not None:
            manager.telemetry.count_open(self, waits=True)
        self.dashboard = Dashboard(self) if dashboard else None
        self.watches: SseWatches | None = None
        """The ``:watch`` routes, if served."""
        if watch:
            self.watches = SseWatches(
                manager,
                authorize=authorize,
                max_names=max_watch_names,
                max_streams=max_watch_streams,
                heartbeat=heartbeat,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)
        else:  # websocket: refuse the handshake
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1003})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.dashboard is not None and await self.dashboard.handle(scope, send):
            return
        request = self._route(scope)
        telemetry = self.manager.telemetry
        if telemetry is None or not (telemetry.recording or telemetry.tracing()):
            await self._answer(request, scope, receive, send)  # nothing would be made
            return
        if isinstance(request, _Request):
            method, route = f"{OPERATIONS}/{request.rpc}", _ROUTES[request.rpc]
        elif isinstance(request, _WatchRoute):
            method = f"{WATCH}/Watch"
            route = _COLLECTION_WATCH_ROUTE if request.collection else _NAMES_WATCH_ROUTE
        else:
            method, route = "", None
        traced = telemetry.server_request(
            method,
            scope["method"],
            None if route is None else self.prefix + route,
            (request.caller if isinstance(request, _Request) else caller_of_scope(scope)).metadata,
        )
        status = 0

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._answer(request, scope, receive, sending)
        finally:
            traced.end_http(status or None)

    async def _answer(self, request: _Routed, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request, a routed one or the error of one that matched no route."""
        if isinstance(request, _WatchRoute):
            assert self.watches is not None  # routed only then
            await self.watches.serve(scope, receive, send, request.collection)
            return
        name = ""
        headers: list[tuple[bytes, bytes]] = []
        try:
            if isinstance(request, Exception):
                raise request
            name = request.name
            body = (
                await read_body(scope, receive, self.max_body_bytes)
                if scope["method"] == "POST"
                else b""
            )
            status, payload = 200, await self._serve(request, body, receive)
        except ClientGone:
            return
        except Exception as exc:
            status, payload = error_response(exc, "an HTTP request", name)
            if status == 405:
                headers.append((b"allow", _METHODS.encode()))
        await respond(send, status, payload, headers)

    # -- reading the request ------------------------------------------------------------

    def _route(self, scope: Scope) -> _Routed:
        """What *scope* asks for; the error to answer when it matches no route."""
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        method: str = scope["method"]
        if not path.startswith(self.prefix + "/"):
            return _no_route(method, path)
        path = path[len(self.prefix) + 1 :]
        collection = SseWatches.route(method, path)
        if collection is not None:
            if self.watches is None:
                return Refused(
                    "this server does not serve ':watch'; wait with ':wait' or poll instead",
                    code=grpc.StatusCode.UNIMPLEMENTED,
                    reason="WATCH_NOT_SERVED",
                )
            return _WatchRoute(collection)
        try:
            return self._operations_route(scope, method, path)
        except Exception as exc:  # answered as an error
            return exc

    def _operations_route(self, scope: Scope, method: str, path: str) -> _Request:
        rpc: Rpc
        if method == "GET":
            if path == "operations":
                rpc, name = "ListOperations", "operations"
            elif path.endswith("/operations"):
                rpc, name = "ListOperations", path.removesuffix("/operations")
                name = "" if name == "-" else name
            else:
                rpc, name = "GetOperation", path
        elif method == "DELETE":
            rpc, name = "DeleteOperation", path
        elif method == "POST":
            name, _, verb = path.rpartition(":")
            if verb == "cancel":
                rpc = "CancelOperation"
            elif verb == "wait":
                rpc = "WaitOperation"
            else:
                raise _no_route(method, path)
        else:
            raise Refused(
                f"method {method[:20]} is not allowed; use {_METHODS}",
                code=grpc.StatusCode.UNIMPLEMENTED,
                reason="METHOD_NOT_ALLOWED",
                http_status=405,
            )
        return _Request(rpc, name, query_of(scope), caller_of_scope(scope))

    # -- answering ----------------------------------------------------------------------

    async def _serve(self, request: _Request, body: bytes, receive: Receive) -> Json:
        rpc, name = request.rpc, request.name
        if rpc == "ListOperations":
            return await self._list(request)
        if rpc == "WaitOperation":
            return await self._wait(request, body, receive)
        no_parameters(request.query)
        if rpc == "CancelOperation":
            parse_body(body, operations_pb2.CancelOperationRequest(), name)
        await self._allow(rpc, check_name(name), request.caller)
        if rpc == "GetOperation":
            return operation_to_json(await self.manager.get(name))
        if rpc == "CancelOperation":
            await self.manager.cancel(name)
        else:
            await self.manager.delete(name)
        return {}

    async def _list(self, request: _Request) -> Json:
        parameters = list_parameters(request.query)
        refuse_partial_success(parameters.return_partial_success)
        parent = list_parent(request.name)
        await self._allow("ListOperations", listed(parent), request.caller)
        operations, token = await self.manager.list(
            parent,
            filter=parameters.filter,
            page_size=parameters.page_size,
            page_token=parameters.page_token,
        )
        response = operations_pb2.ListOperationsResponse(
            operations=operations, next_page_token=token
        )
        return list_response_to_json(response)

    async def _wait(self, request: _Request, body: bytes, receive: Receive) -> Json:
        if not self.wait:
            raise Refused(
                "this server does not serve ':wait'; poll GetOperation instead",
                code=grpc.StatusCode.UNIMPLEMENTED,
                reason="WAIT_NOT_SERVED",
            )
        no_parameters(request.query)
        parsed = parse_body(body, operations_pb2.WaitOperationRequest(), request.name)
        deadline = server_timeout(request.caller)
        await self._allow("WaitOperation", check_name(request.name), request.caller)
        timeout = parsed.timeout if parsed.HasField("timeout") else None
        bound = wait_bound(self.max_wait, timeout, deadline, self.deadline_margin)
        reserve_wait(self.waiting, self.max_waits, "':wait' requests")
        mode = request.caller.metadata.get(WAIT_MODE_HEADER)
        progress = parse_progress_header(mode) if mode is not None else None
        self.waiting += 1
        try:
            waited = self.manager.wait(request.name, bound, progress=progress)
            return operation_to_json(await _unless_disconnected(waited, receive))
        finally:
            self.waiting -= 1

    async def _allow(self, rpc: Rpc, resource: str, caller: Caller) -> None:
        await check_access(self.authorize, rpc, resource, lambda: caller)


def asgi_app(
    manager: OperationManager,
    *,
    prefix: str = "/v1",
    authorize: Authorizer | None = None,
    wait: bool = True,
    max_wait: float = 1800.0,
    deadline_margin: float = 0.2,
    max_waits: int = 200_000,
    max_body_bytes: int = 64 * 1024,
    dashboard: bool = False,
    watch: bool = True,
    max_watch_names: int = 100_000,
    max_watch_streams: int = 16,
    heartbeat: float = 15.0,
) -> OperationsApp:
    """Serve *manager*'s operations over HTTP/JSON: return an ASGI app.

    See :class:`OperationsApp` for the parameters and the module docstring for the routes.
    """
    return OperationsApp(
        manager,
        prefix=prefix,
        authorize=authorize,
        wait=wait,
        max_wait=max_wait,
        deadline_margin=deadline_margin,
        max_waits=max_waits,
        max_body_bytes=max_body_bytes,
        dashboard=dashboard,
        watch=watch,
        max_watch_names=max_watch_names,
        max_watch_streams=max_watch_streams,
        heartbeat=heartbeat,
    )


# -- helpers ------------------------------------------------------------------------------


def _no_route(method: str, path: str) -> Refused:
    return Refused(
        f"no route for {method[:20]} {path[:100]!r}",
        code=grpc.StatusCode.NOT_FOUND,
        reason="NO_ROUTE",
    )


async def _unless_disconnected(
    waited: Coroutine[Any, Any, operations_pb2.Operation], receive: Receive
) -> operations_pb2.Operation:
    """Await *waited*, or stop and raise :class:`ClientGone` if the client leaves first.

    An abandoned long poll must not hold its place (and its count) for minutes.
    """
    loop = asyncio.get_running_loop()
    waiting = loop.create_task(waited, name="lro_async:http-wait")
    watching = loop.create_task(_disconnected(receive), name="lro_async:http-disconnect")
    try:
        await asyncio.wait([waiting, watching], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        watching.cancel()
        await asyncio.wait([waiting, watching])
    if waiting.cancelled():
        raise ClientGone
    return waiting.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
