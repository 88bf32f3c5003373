"""``lro-async serve --metrics-port``: the OpenTelemetry metrics in Prometheus' text format.

The SDK's meter provider reads through OpenTelemetry's Prometheus exporter, and
prometheus_client serves ``/metrics`` from a thread of its own, so a scrape never waits
for the event loop (nor the loop for a scrape).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .. import telemetry
from .exits import EXIT_RPC, EXIT_USAGE, CommandError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider

__all__ = ["check_metrics_extra", "metrics_server"]


def check_metrics_extra() -> None:
    """Refuse ``--metrics-port`` without the otel extra, before anything starts.

    :raises CommandError: one line naming what to install (exit 2).
    """
    try:
        import opentelemetry.exporter.prometheus
        import opentelemetry.sdk.metrics  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise CommandError(
            f"--metrics-port needs the otel extra: {telemetry.INSTALL_HINT}", EXIT_USAGE
        ) from exc


@contextlib.contextmanager
def metrics_server(host: str, port: int) -> Iterator[str]:
    """Serve ``/metrics`` on ``host:port`` and instrument what is made meanwhile; yield
    ``host:port`` as bound.

    :raises CommandError: if the port cannot be bound (exit 4).
    """
    import prometheus_client
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider

    try:
        server, thread = prometheus_client.start_http_server(port, addr=host)
    except OSError as exc:
        raise CommandError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}", EXIT_RPC
        ) from exc
    provider: MeterProvider | None = None
    try:
        # The reader registers with prometheus_client's default registry, which serves it.
        provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
        telemetry.configure(meter_provider=provider)
        yield f"{host}:{server.server_port}"
    finally:
        telemetry.disable()
        server.shutdown()
        server.server_close()
        thread.join(5)
        if provider is not None:
            provider.shutdown()
