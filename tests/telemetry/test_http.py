"""Telemetry over the HTTP/JSON face: client and server spans joined by ``traceparent``,
and ``http.server.request.duration`` by route and status."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from opentelemetry.trace import SpanKind, StatusCode

import lro_async
import lro_async.http

from ..waiting import until
from .conftest import Otel

WAIT = "google.longrunning.Operations/WaitOperation"
GET = "google.longrunning.Operations/GetOperation"
WATCH = "lro_async.v1.OperationsWatch/Watch"
OPERATION = "/v1/{name=**/operations/*}"


async def test_the_client_span_is_the_parent_of_the_server_span_through_traceparent(
    otel: Otel,
) -> None:
    tracer = otel.telemetry.tracer
    async with lro_async.OperationManager() as manager:
        app = lro_async.http.asgi_app(manager, watch=False)  # so the client long-polls :wait
        async with lro_async.http.running_http_server(app, grace=1.0) as server:
            client = lro_async.AsyncOperationsClient.from_url(server.url)
            op = await manager.create()
            with tracer.start_as_current_span("caller") as caller:
                awaited = asyncio.ensure_future(client.operation(op.name).result())
                await asyncio.sleep(0)  # the waiter starts under the caller's span
            await until(lambda: app.waiting > 0, "the client's :wait held by the server")
            await manager.complete(op.name)
            await awaited
            await client.aclose()

    (wait,) = otel.finished("lro_async.wait")
    assert dict(wait.attributes or {})["lro_async.transport"] == "http"
    assert wait.context is not None
    clients = [span for span in otel.finished(WAIT) if span.kind is SpanKind.CLIENT]
    servers = otel.finished(f"POST {OPERATION}:wait")
    assert len(clients) == len(servers) >= 1
    by_id = {span.context.span_id: span for span in clients if span.context is not None}
    for client_rpc in clients:
        assert client_rpc.parent is not None and client_rpc.parent.span_id == wait.context.span_id
        attributes = dict(client_rpc.attributes or {})
        assert attributes["rpc.method"] == WAIT
        assert attributes["http.request.method"] == "POST"
        assert str(attributes["url.full"]).endswith(f"/v1/{op.name}:wait")
        assert attributes["http.response.status_code"] == 200
        assert attributes["rpc.response.status_code"] == "OK"
    for server_rpc in servers:
        assert server_rpc.kind is SpanKind.SERVER
        assert server_rpc.parent is not None and server_rpc.parent.is_remote
        assert server_rpc.parent.span_id in by_id
        assert server_rpc.context is not None
        assert server_rpc.context.trace_id == caller.get_span_context().trace_id
        attributes = dict(server_rpc.attributes or {})
        assert attributes["http.route"] == f"{OPERATION}:wait"
        assert attributes["rpc.method"] == WAIT
        assert attributes["http.response.status_code"] == 200


async def test_requests_are_timed_by_route_and_status_and_a_refusal_is_no_server_error(
    otel: Otel,
) -> None:
    async with lro_async.OperationManager() as manager:
        app = lro_async.http.asgi_app(manager)
        async with lro_async.http.running_http_server(app, grace=1.0) as server:
            client = lro_async.AsyncOperationsClient.from_url(server.url)
            op = await manager.create()
            await client.get_operation(op.name)
            with pytest.raises(lro_async.OperationNotFound):
                await client.get_operation("operations/missing")
            await client.aclose()

    duration = "http.server.request.duration"
    route = {"http.request.method": "GET", "http.route": OPERATION}
    assert otel.value(duration, {**route, "http.response.status_code": 200}) == 1
    assert otel.value(duration, {**route, "http.response.status_code": 404}) == 1
    found, missing = otel.finished(f"GET {OPERATION}")
    assert found.status.status_code is StatusCode.UNSET
    # A 404 is the caller's mistake: not an error of the server's span (semantic
    # conventions), but an error of the client's.
    assert missing.status.status_code is StatusCode.UNSET
    assert dict(missing.attributes or {})["http.response.status_code"] == 404
    client_spans = [span for span in otel.finished(GET) if span.kind is SpanKind.CLIENT]
    assert [span.status.status_code for span in client_spans] == [
        StatusCode.UNSET,
        StatusCode.ERROR,
    ]
    assert dict(client_spans[1].attributes or {})["http.response.status_code"] == 404


async def test_a_request_that_matches_no_route_has_a_bounded_name_and_no_route(
    otel: Otel,
) -> None:
    async with lro_async.OperationManager() as manager:
        app = lro_async.http.asgi_app(manager)
        async with (
            lro_async.http.running_http_server(app, grace=1.0) as server,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            assert (await http.request("BREW", "/v1/operations/x")).status_code == 405
            assert (await http.get("/v2/elsewhere")).status_code == 404

    names = sorted(span.name for span in otel.spans.get_finished_spans())
    assert names == ["GET", "_OTHER"]
    duration = "http.server.request.duration"
    assert (
        otel.value(duration, {"http.request.method": "_OTHER", "http.response.status_code": 405})
        == 1
    )
    assert (
        otel.value(duration, {"http.request.method": "GET", "http.response.status_code": 404}) == 1
    )


async def test_a_wait_over_the_sse_watch_has_one_stream_span_on_each_side(otel: Otel) -> None:
    async with lro_async.OperationManager() as manager:
        app = lro_async.http.asgi_app(manager)
        async with lro_async.http.running_http_server(app, grace=1.0) as server:
            client = lro_async.AsyncOperationsClient.from_url(server.url)
            op = await manager.create()
            awaited = asyncio.ensure_future(client.operation(op.name).result())
            assert app.watches is not None
            await until(lambda: app.watches is not None and app.watches.opened, "a Watch stream")
            await manager.complete(op.name)
            await awaited
            await client.aclose()  # ends the stream
            await until(
                lambda: otel.finished("POST /v1/operations:watch"), "the server's stream span"
            )

    (wait,) = otel.finished("lro_async.wait")
    assert dict(wait.attributes or {})["lro_async.wait.watched"] is True
    (stream,) = [s for s in otel.finished(WATCH) if s.kind is SpanKind.CLIENT]
    assert stream.parent is None  # a trace of its own: it serves many waits
    attributes = dict(stream.attributes or {})
    assert attributes["http.request.method"] == "POST"
    assert str(attributes["url.full"]).endswith("/v1/operations:watch")
    assert attributes["http.response.status_code"] == 200
    (served,) = otel.finished("POST /v1/operations:watch")
    assert served.parent is not None and served.parent.is_remote
    assert stream.context is not None and served.parent.span_id == stream.context.span_id
    assert dict(served.attributes or {})["rpc.method"] == WATCH


async def test_a_held_wait_and_an_sse_stream_count_in_the_open_gauges(otel: Otel) -> None:
    async with lro_async.OperationManager() as manager:
        waits = lro_async.http.asgi_app(manager, watch=False)  # its client long-polls :wait
        watches = lro_async.http.asgi_app(manager)  # its client watches over SSE
        async with (
            lro_async.http.running_http_server(waits, grace=1.0) as waiting,
            lro_async.http.running_http_server(watches, grace=1.0) as watching,
        ):
            polls = lro_async.AsyncOperationsClient.from_url(waiting.url)
            streams = lro_async.AsyncOperationsClient.from_url(watching.url)
            op = await manager.create()
            polled = asyncio.ensure_future(polls.operation(op.name).result())
            watched = asyncio.ensure_future(streams.operation(op.name).result())
            await until(lambda: waits.waiting == 1, "the :wait held by the server")
            assert watches.watches is not None
            await until(lambda: watches.watches is not None and watches.watches.opened, "a stream")
            assert otel.value("lro_async.waits.open") == 1
            assert otel.value("lro_async.watches.open") == 1
            await manager.complete(op.name)
            await polled
            await watched
            await polls.aclose()
            await streams.aclose()  # ends the stream
            await until(lambda: otel.value("lro_async.watches.open") == 0, "the stream's end")
            assert otel.value("lro_async.waits.open") == 0
