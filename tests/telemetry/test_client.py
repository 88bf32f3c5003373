"""Client telemetry: a span per awaited operation, a child per RPC, traceparent on the wire."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import lro_async
from lro_async import telemetry
from lro_async.testing import serve

from ..waiting import until
from .conftest import Otel

WAIT = "google.longrunning.Operations/WaitOperation"
WATCH = "lro_async.v1.OperationsWatch/Watch"


def _one(spans: list[ReadableSpan], kind: SpanKind) -> ReadableSpan:
    found = [span for span in spans if span.kind is kind]
    assert len(found) == 1, found
    return found[0]


async def test_the_client_span_is_the_parent_of_the_server_span_through_traceparent(
    otel: Otel,
) -> None:
    tracer = otel.telemetry.tracer
    async with serve(watch=False) as served:
        op = await served.manager.create()
        client = lro_async.AsyncOperationsClient(served.channel)
        with tracer.start_as_current_span("caller") as caller:
            awaited = asyncio.ensure_future(client.operation(op.name).result())
            await asyncio.sleep(0)  # the waiter starts under the caller's span
        await until(lambda: served.servicer.waiting == 1, "the long poll reached the server")
        await served.manager.complete(op.name)
        await awaited
        await client.aclose()

    (wait,) = otel.finished("lro_async.wait")
    rpcs = otel.finished(WAIT)
    clients = [span for span in rpcs if span.kind is SpanKind.CLIENT]
    servers = [span for span in rpcs if span.kind is SpanKind.SERVER]
    assert len(clients) == len(servers) >= 1  # the probe (no wait), then the long poll
    assert wait.parent is not None and wait.parent.span_id == caller.get_span_context().span_id
    assert wait.context is not None
    by_id = {span.context.span_id: span for span in clients if span.context is not None}
    for client_rpc in clients:
        assert client_rpc.parent is not None and client_rpc.parent.span_id == wait.context.span_id
    # The server continued the caller's trace from each request's traceparent.
    for server_rpc in servers:
        assert server_rpc.parent is not None and server_rpc.parent.is_remote
        assert server_rpc.parent.span_id in by_id
        assert server_rpc.context is not None
        assert server_rpc.context.trace_id == caller.get_span_context().trace_id
    attributes = dict(wait.attributes or {})
    assert attributes["lro_async.operation.name"] == op.name
    assert attributes["lro_async.operation.code"] == "OK"
    assert attributes["lro_async.transport"] == "grpc"
    assert attributes["lro_async.rpcs"] == len(clients)
    assert attributes["lro_async.wait.long_polled"] is True
    assert attributes["lro_async.wait.watched"] is False
    assert attributes["lro_async.wait.polled"] is False


async def test_a_wait_over_the_watch_stream_has_one_stream_span_with_an_event(
    otel: Otel,
) -> None:
    async with serve() as served:
        ops = [await served.manager.create() for _ in range(3)]
        client = lro_async.AsyncOperationsClient(served.channel)
        awaited = [asyncio.ensure_future(client.operation(op.name).result()) for op in ops]
        async with asyncio.timeout(10):
            while len(served.manager._hub) < 3:
                await asyncio.sleep(0.01)
        for op in ops:
            await served.manager.fail(op.name, grpc.StatusCode.DATA_LOSS, "gone")
        for future in awaited:
            with pytest.raises(lro_async.OperationFailed):
                await future
        await client.aclose()

    waits = otel.finished("lro_async.wait")
    assert len(waits) == 3
    for wait in waits:
        attributes = dict(wait.attributes or {})
        assert attributes["lro_async.wait.watched"] is True
        assert attributes["lro_async.wait.long_polled"] is False
        assert attributes["lro_async.rpcs"] == 0
        assert attributes["lro_async.operation.code"] == "DATA_LOSS"
        assert wait.status.status_code is StatusCode.ERROR
    streams = otel.finished(WATCH)
    client_stream = _one(streams, SpanKind.CLIENT)
    server_stream = _one(streams, SpanKind.SERVER)
    delivered = [e for e in client_stream.events if e.name == "operation"]
    assert sorted(str((e.attributes or {})["lro_async.operation.name"]) for e in delivered) == (
        sorted(op.name for op in ops)
    )
    assert client_stream.context is not None and server_stream.parent is not None
    assert server_stream.parent.span_id == client_stream.context.span_id


async def test_a_wait_whose_last_awaiter_leaves_ends_its_span_cancelled(otel: Otel) -> None:
    async with serve(watch=False) as served:
        op = await served.manager.create()
        client = lro_async.AsyncOperationsClient(served.channel)
        with pytest.raises(lro_async.OperationTimeout):
            await client.operation(op.name).result(timeout=0.2)
        await client.aclose()
    (wait,) = otel.finished("lro_async.wait")
    assert (wait.attributes or {})["lro_async.operation.code"] == "CANCELLED"


async def test_without_telemetry_nothing_is_recorded(otel: Otel) -> None:
    telemetry.disable()
    async with serve(watch=False) as served:
        op = await served.manager.start(_done)
        client = lro_async.AsyncOperationsClient(served.channel)
        await client.operation(op.name)
        await client.aclose()
    assert otel.spans.get_finished_spans() == ()
    assert otel.value("lro_async.operations.started") == 0
    assert otel.value("rpc.server.call.duration") == 0


async def _done(ctx: lro_async.OperationContext) -> None:
    return None
