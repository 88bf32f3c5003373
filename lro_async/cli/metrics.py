"""``lro-async serve --metrics-port``: the metrics in Prometheus' text format.

lro_async answers prometheus_client's default registry itself (:func:`lro_async.telemetry.
configure` with ``prometheus_registry``), with the names, units and labels OpenTelemetry's
Prometheus exporter gives them, beside the registry's process and Python collectors;
prometheus_client serves ``/metrics`` from a thread of its own, so a scrape never waits
for the event loop (nor the loop for a scrape). The OpenTelemetry SDK is not in the way:
its histogram record costs several microseconds per RPC, lro_async's own about one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .. import telemetry
from .exits import EXIT_RPC, EXIT_USAGE, CommandError

__all__ = ["check_metrics_extra", "metrics_server"]


def check_metrics_extra() -> None:
    """Refuse ``--metrics-port`` without the otel extra, before anything starts.

    :raises CommandError: one line naming what to install (exit 2).
    """
    try:
        import opentelemetry.trace  # noqa: F401
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

    try:
        server, thread = prometheus_client.start_http_server(port, addr=host)
    except OSError as exc:
        raise CommandError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}", EXIT_RPC
        ) from exc
    configured: telemetry.Telemetry | None = None
    try:
        configured = telemetry.configure(prometheus_registry=prometheus_client.REGISTRY)
        yield f"{host}:{server.server_port}"
    finally:
        telemetry.disable()
        if configured is not None:
            configured.close()
        server.shutdown()
        server.server_close()
        thread.join(5)
