"""Server telemetry: a real grpc.aio server, the SDK's in-memory exporter and reader."""

from __future__ import annotations

import asyncio
from typing import cast

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2, wrappers_pb2
from opentelemetry.trace import SpanKind, StatusCode

import lro_async
from lro_async.demo import demo_pb2, demo_pb2_grpc
from lro_async.demo.service import DemoService
from lro_async.testing import serve

from ..waiting import until
from .conftest import Otel


async def test_a_finished_operation_is_counted_once_and_a_failed_one_under_its_code(
    otel: Otel,
) -> None:
    release = asyncio.Event()

    async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.Int64Value:
        await release.wait()
        return wrappers_pb2.Int64Value(value=1)

    async def failing(ctx: lro_async.OperationContext) -> None:
        raise lro_async.OperationFailed(grpc.StatusCode.FAILED_PRECONDITION, "no")

    async with lro_async.OperationManager() as manager:
        ok = await manager.start(work)
        assert otel.value("lro_async.operations.started") == 1
        assert otel.value("lro_async.operations.running") == 1
        failed = await manager.start(failing)
        await manager.wait(failed.name)
        release.set()
        await manager.wait(ok.name)
        # The same end refused a second time is not counted again.
        assert not await manager.complete(ok.name)
        await until(lambda: otel.value("lro_async.operations.running") == 0, "running -> 0")

    assert otel.value("lro_async.operations.started") == 2
    assert otel.value("lro_async.operations.finished", {"code": "OK"}) == 1
    assert otel.value("lro_async.operations.finished", {"code": "FAILED_PRECONDITION"}) == 1
    assert otel.value("lro_async.operation.duration", {"code": "OK"}) == 1
    lives = {
        str((span.attributes or {})["lro_async.operation.name"]): span
        for span in otel.finished("lro_async.operation")
    }
    assert set(lives) == {ok.name, failed.name}
    assert (lives[ok.name].attributes or {})["lro_async.operation.code"] == "OK"
    assert lives[ok.name].status.status_code is StatusCode.UNSET
    failed_code = (lives[failed.name].attributes or {})["lro_async.operation.code"]
    assert failed_code == "FAILED_PRECONDITION"
    assert lives[failed.name].status.status_code is StatusCode.ERROR
    assert lives[failed.name].status.description == "no"


async def test_each_rpc_has_a_server_span_and_a_duration_by_method_and_status(otel: Otel) -> None:
    async with serve() as served:
        stub = operations_pb2_grpc.OperationsStub(served.channel)
        op = await served.manager.create(parent="projects/p")
        await stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetOperation(
                operations_pb2.GetOperationRequest(name="projects/p/operations/missing")
            )

    method = "google.longrunning.Operations/GetOperation"
    base = {"rpc.system.name": "grpc", "rpc.method": method}
    assert otel.value("rpc.server.call.duration", {**base, "rpc.response.status_code": "OK"}) == 1
    assert (
        otel.value("rpc.server.call.duration", {**base, "rpc.response.status_code": "NOT_FOUND"})
        == 1
    )
    spans = otel.finished(method)
    assert len(spans) == 2
    assert {span.kind for span in spans} == {SpanKind.SERVER}
    codes = sorted(str((span.attributes or {})["rpc.response.status_code"]) for span in spans)
    assert codes == ["NOT_FOUND", "OK"]


async def test_the_operation_span_is_linked_to_the_rpc_that_started_it(otel: Otel) -> None:
    manager = lro_async.OperationManager()
    demo_service = DemoService(manager)
    async with serve(manager, register=demo_service.add_to_server) as served:
        demo = cast("demo_pb2_grpc.DemoAsyncStub", demo_pb2_grpc.DemoStub(served.channel))
        started = await demo.Sleep(
            demo_pb2.SleepRequest(
                parent="projects/p",
                duration=duration_pb2.Duration(nanos=10_000_000),
                steps=1,
                failure=demo_pb2.Failure(code=grpc.StatusCode.ABORTED.value[0], message="boom"),
            )
        )
        await served.manager.wait(started.name)
        await until(lambda: otel.finished("lro_async.operation"), "the operation span ends")

    (rpc,) = otel.finished("lro_async.demo.v1.Demo/Sleep")
    (life,) = otel.finished("lro_async.operation")
    assert rpc.context is not None and life.context is not None
    assert [link.context.span_id for link in life.links] == [rpc.context.span_id]
    assert life.context.trace_id != rpc.context.trace_id  # a trace of its own, linked
    assert life.status.status_code is StatusCode.ERROR
    assert (life.attributes or {})["lro_async.operation.code"] == "ABORTED"


async def test_open_waits_and_the_notice_delay(otel: Otel) -> None:
    async with serve(watch=False) as served:
        stub = operations_pb2_grpc.OperationsStub(served.channel)
        op = await served.manager.create()
        request = operations_pb2.WaitOperationRequest(name=op.name)
        request.timeout.seconds = 30
        waiting = asyncio.ensure_future(stub.WaitOperation(request))
        await until(lambda: served.servicer.waiting == 1, "the WaitOperation call is open")
        assert otel.value("lro_async.waits.open") == 1
        assert otel.value("lro_async.notice.delay") == 0
        await served.manager.complete(op.name)
        answer = await waiting
        assert answer.done
        assert otel.value("lro_async.waits.open") == 0
        # A wait on an operation done long before is no notice at all: not measured.
        await stub.WaitOperation(request)
    (delay,) = otel.points("lro_async.notice.delay")
    assert delay.count == 1
    assert 0 <= delay.sum < 5


async def test_open_watch_streams_are_counted(otel: Otel) -> None:
    async with serve() as served:
        op = await served.manager.create()
        client = lro_async.AsyncOperationsClient(served.channel)
        awaited = asyncio.ensure_future(client.operation(op.name).result())
        await until(lambda: otel.value("lro_async.watches.open") == 1, "a Watch stream is open")
        # The stream may be open before its add arrives; an end before it is no notice.
        await until(lambda: served.manager.watched == 1, "the name watched on the stream")
        await served.manager.complete(op.name)
        await awaited
        await client.aclose()
        await until(lambda: otel.value("lro_async.watches.open") == 0, "the stream closed")
    assert otel.value("lro_async.notice.delay") == 1
    streams = otel.finished("lro_async.v1.OperationsWatch/Watch")
    assert sorted(str(span.kind) for span in streams) == ["SpanKind.CLIENT", "SpanKind.SERVER"]


class _FlakyStore(lro_async.stores.MemoryStore):
    """A MemoryStore whose reads fail while ``failing`` is set (and so may stall, as a
    store on a network: guarded and measured)."""

    may_stall = True
    failing = False

    async def get(self, name: str) -> lro_async.stores.OperationRecord | None:
        if self.failing:
            raise OSError("the disk went away")
        return await super().get(name)


async def test_store_calls_are_timed_and_failures_counted(otel: Otel) -> None:
    store = _FlakyStore()
    async with lro_async.OperationManager(store) as manager:
        op = await manager.create()
        await manager.get(op.name)
        store.failing = True
        with pytest.raises(lro_async.StoreError):
            await manager.get(op.name)
    assert otel.value("lro_async.store.call.duration", {"method": "get"}) == 2
    assert otel.value("lro_async.store.call.duration", {"method": "create"}) == 1
    assert otel.value("lro_async.store.errors", {"method": "get"}) == 1
    assert otel.value("lro_async.store.errors", {"method": "create"}) == 0
