"""The telemetry mode of a benchmark process, set by its parent in :data:`MODE_ENV`.

The ``otel`` benchmark starts servers and clients with :func:`mode`; each of them calls
:func:`from_environment` first, which sets its telemetry up as the mode says:

- ``off``: ``lro_async.telemetry.disable()``, what an install without the extra runs
  (one attribute check per RPC or operation);
- ``api``: the extra installed, no SDK set up: the API's no-op providers;
- ``metrics``: the metrics answered to a ``prometheus_client`` registry by lro_async
  itself, no tracer provider: what ``lro-async serve --metrics-port`` runs;
- ``sdk-metrics``: the SDK's meter provider with a pull reader instead, what an app that
  sets OpenTelemetry's metrics up runs;
- ``sdk``: that and the SDK's tracer provider, every span sampled and handed to a batch
  span processor (whose exporter drops them).

Unset, a process keeps lro_async's default.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

__all__ = ["MODES", "MODE_ENV", "from_environment", "mode"]

MODE_ENV = "LRO_ASYNC_BENCH_TELEMETRY"
MODES = ("off", "api", "metrics", "sdk-metrics", "sdk")


def from_environment() -> None:
    """Set up this process's telemetry as :data:`MODE_ENV` says (unset: the default)."""
    name = os.environ.get(MODE_ENV, "")
    if not name:
        return
    from lro_async import telemetry

    if name == "off":
        telemetry.disable()
    elif name == "api":
        telemetry.reset()
    elif name == "metrics":
        from prometheus_client import CollectorRegistry

        telemetry.configure(prometheus_registry=CollectorRegistry())
    elif name in ("sdk-metrics", "sdk"):
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Discard(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        tracer_provider = None
        if name == "sdk":
            tracer_provider = TracerProvider()
            # A queue long enough that no span is dropped (each is paid for in full).
            tracer_provider.add_span_processor(
                BatchSpanProcessor(Discard(), max_queue_size=200_000)
            )
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        telemetry.configure(tracer_provider=tracer_provider, meter_provider=meter_provider)
    else:
        raise SystemExit(f"{MODE_ENV} must be one of {', '.join(MODES)}, not {name!r}")


@contextlib.contextmanager
def mode(name: str) -> Iterator[None]:
    """Processes started meanwhile run in telemetry mode *name*."""
    previous = os.environ.get(MODE_ENV)
    os.environ[MODE_ENV] = name
    try:
        yield
    finally:
        if previous is None:
            del os.environ[MODE_ENV]
        else:
            os.environ[MODE_ENV] = previous
