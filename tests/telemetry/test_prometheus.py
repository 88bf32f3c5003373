"""Metrics answered to a prometheus_client registry by lro_async itself, without the SDK."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lro_async import telemetry
from lro_async.testing import serve

Scrape = dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]

GET = {
    "rpc_method": "google.longrunning.Operations/GetOperation",
    "rpc_system_name": "grpc",
}


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    configured = telemetry.configure(prometheus_registry=registry)
    try:
        yield registry
    finally:
        telemetry.reset()
        configured.close()


def _scrape(registry: CollectorRegistry) -> Scrape:
    """Each family by name: its type and samples, parsed back from the text format."""
    text = generate_latest(registry).decode()
    return {
        family.name: (family.type, [(s.name, s.labels, s.value) for s in family.samples])
        for family in text_string_to_metric_families(text)
    }


def _value(scrape: Scrape, family: str, sample: str, **labels: str) -> float:
    for name, found, value in scrape[family][1]:
        if name == sample and found == labels:
            return value
    return 0.0


async def test_a_scrape_shows_counts_levels_and_histograms_named_as_opentelemetry_names_them(
    registry: CollectorRegistry,
) -> None:
    async with serve() as served:
        stub = operations_pb2_grpc.OperationsStub(served.channel)
        op = await served.manager.create()
        await served.manager.complete(op.name)
        for _ in range(3):
            await stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetOperation(operations_pb2.GetOperationRequest(name="operations/none"))
        scrape = _scrape(registry)

    assert scrape["lro_async_operations_started"][0] == "counter"
    assert _value(scrape, "lro_async_operations_started", "lro_async_operations_started_total") == 1
    finished = ("lro_async_operations_finished", "lro_async_operations_finished_total")
    assert _value(scrape, *finished, code="OK") == 1
    assert scrape["lro_async_operations_running"][0] == "gauge"
    assert _value(scrape, "lro_async_operations_running", "lro_async_operations_running") == 0

    family = "rpc_server_call_duration_seconds"
    assert scrape[family][0] == "histogram"
    ok = {**GET, "rpc_response_status_code": "OK"}
    assert _value(scrape, family, f"{family}_count", **ok) == 3
    assert _value(scrape, family, f"{family}_bucket", **ok, le="+Inf") == 3
    assert _value(scrape, family, f"{family}_bucket", **ok, le="10.0") == 3
    assert 0 < _value(scrape, family, f"{family}_sum", **ok) < 3 * 10
    missing = {**GET, "rpc_response_status_code": "NOT_FOUND"}
    assert _value(scrape, family, f"{family}_count", **missing) == 1
    duration = "lro_async_operation_duration_seconds"
    assert _value(scrape, duration, f"{duration}_count", code="OK") == 1


def test_buckets_are_cumulative_and_a_bound_belongs_to_its_own_bucket(
    registry: CollectorRegistry,
) -> None:
    configured = telemetry.current()
    assert configured is not None
    for delay in (0.0005, 0.0007, 0.001, 7.0, 60.0):  # seconds
        configured.noticed(delay)
    scrape = _scrape(registry)
    family = "lro_async_notice_delay_seconds"

    def bucket(le: str) -> float:
        return _value(scrape, family, f"{family}_bucket", le=le)

    assert bucket("0.0005") == 1  # le is "less than or equal"
    assert bucket("0.001") == 3
    assert bucket("5.0") == 3
    assert bucket("10.0") == 4
    assert bucket("+Inf") == 5
    assert _value(scrape, family, f"{family}_count") == 5
    assert _value(scrape, family, f"{family}_sum") == pytest.approx(67.0022)


def test_closing_unregisters_and_a_second_telemetry_can_answer_the_same_registry() -> None:
    registry = CollectorRegistry()
    first = telemetry.Telemetry(prometheus_registry=registry)
    first.close()
    second = telemetry.Telemetry(prometheus_registry=registry)  # no duplicate names
    try:
        second.noticed(0.001)
        scrape = _scrape(registry)
        family = "lro_async_notice_delay_seconds"
        assert _value(scrape, family, f"{family}_count") == 1
    finally:
        second.close()
    assert "lro_async_notice_delay_seconds" not in _scrape(registry)


def test_a_meter_provider_and_a_registry_together_are_refused() -> None:
    provider = MeterProvider()
    try:
        with pytest.raises(ValueError, match="not both"):
            telemetry.Telemetry(meter_provider=provider, prometheus_registry=CollectorRegistry())
    finally:
        provider.shutdown()
