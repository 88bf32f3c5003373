"""Fixtures of the telemetry tests: the SDK's in-memory span exporter and metric reader.

The providers are passed to :func:`lro_async.telemetry.configure` explicitly (never set as
OpenTelemetry's process-wide globals), so every test has fresh ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

pytest.importorskip(
    "opentelemetry.sdk", reason="needs the otel extra: pip install 'lro-async[otel]'"
)

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from lro_async import telemetry


@dataclasses.dataclass
class Otel:
    """What the code under test reported: finished spans and metric points."""

    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    telemetry: telemetry.Telemetry

    def finished(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found

    def value(self, metric: str, attributes: Mapping[str, Any] | None = None) -> float:
        """A counter's value (a histogram's count) for exactly these attributes (0: none)."""
        wanted = dict(attributes or {})
        for point in self.points(metric):
            if dict(point.attributes or {}) == wanted:
                value = getattr(point, "value", None)
                return float(point.count if value is None else value)
        return 0.0


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    configured = telemetry.configure(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Otel(spans, reader, configured)
    finally:
        telemetry.reset()
        meter_provider.shutdown()
        tracer_provider.shutdown()
