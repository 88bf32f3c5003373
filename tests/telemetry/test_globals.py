"""OpenTelemetry's global providers, set after lro_async started, are used within a second.

A process sets its global providers once, for good, so each case runs in a process of
its own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip(
    "opentelemetry.sdk", reason="needs the otel extra: pip install 'lro-async[otel]'"
)

# What both scripts start with: a metric's count (a histogram's) as a reader reads it now.
COUNT = textwrap.dedent(
    """
    def count(reader, name):
        data = reader.get_metrics_data()
        return sum(
            point.count
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ) if data else 0
    """
)

SCRIPT = textwrap.dedent(
    """
    import asyncio, time

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import lro_async
    from lro_async import telemetry

    async def main():
        assert telemetry.current() is not None
        async with lro_async.OperationManager() as manager:
            before = await manager.create()
            await manager.complete(before.name)  # no provider yet: nothing to see
            reader = InMemoryMetricReader()
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
            spans = InMemorySpanExporter()
            tracer_provider = TracerProvider()
            tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
            trace.set_tracer_provider(tracer_provider)
            give_up = time.monotonic() + 5
            while time.monotonic() < give_up:
                op = await manager.start(lambda ctx: asyncio.sleep(0))
                await manager.wait(op.name)
                if count(reader, "lro_async.operation.duration") and spans.get_finished_spans():
                    print("seen after", round(time.monotonic() - give_up + 5, 2), "s")
                    return
                await asyncio.sleep(0.01)
            raise SystemExit("the global providers were never used")

    asyncio.run(main())
    """
)


# A server that only answers RPCs and waits (no operation ends of its own to drain): with
# no meter provider it measures none of them; one set later is used from its reader's
# first collections on.
SERVED = textwrap.dedent(
    """
    import asyncio, time

    from google.longrunning import operations_pb2, operations_pb2_grpc
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import lro_async.testing
    from lro_async import telemetry

    async def main():
        async with lro_async.testing.serve() as served:
            stub = operations_pb2_grpc.OperationsStub(served.channel)
            op = await served.manager.create()
            get = operations_pb2.GetOperationRequest(name=op.name)
            await stub.GetOperation(get)
            assert telemetry.current().recording is False
            reader = InMemoryMetricReader()
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
            give_up = time.monotonic() + 5
            while time.monotonic() < give_up:
                await stub.GetOperation(get)
                if count(reader, "rpc.server.call.duration"):
                    break
                await asyncio.sleep(0.01)
            else:
                raise SystemExit("RPCs were never measured")
            waited = asyncio.ensure_future(
                stub.WaitOperation(operations_pb2.WaitOperationRequest(name=op.name))
            )
            while served.servicer.waiting == 0:
                await asyncio.sleep(0.001)
            await served.manager.complete(op.name)
            await waited
            if count(reader, "lro_async.notice.delay") != 1:
                raise SystemExit("the notice was not measured")
            print("seen after", round(time.monotonic() - give_up + 5, 2), "s")

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("script", [SCRIPT, SERVED], ids=["operations", "served-rpcs"])
def test_global_providers_set_later_are_used_within_a_second(script: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", COUNT + script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    seconds = float(done.stdout.split()[2])
    assert seconds < 3, done.stdout
