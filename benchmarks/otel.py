"""Benchmark: the cost of the OpenTelemetry instrumentation (``--only otel``).

The same benchmarks as ``notice`` and ``throughput``, run back to back in one run with
the server and client processes in four telemetry modes (:mod:`benchmarks.telemetry`):

- ``off``: ``lro_async.telemetry.disable()``, what an install without the extra runs
  (one attribute check per RPC or operation);
- ``api``: the extra installed, no SDK set up: the API's no-op providers;
- ``metrics``: the SDK's meter provider with a pull reader, no tracer provider: what
  ``lro-async serve --metrics-port`` runs;
- ``sdk``: that and the SDK's tracer provider, every span sampled and handed to a batch
  span processor (whose exporter drops them).

Figures: notice latency p50/p99 of the long-poll and Watch clients, and GetOperation
throughput at 16 in flight, each as the ratio of a mode to ``off`` (medians over rounds
that alternate the modes, so a noisy neighbour hurts them alike). Target: within 5 %.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from . import telemetry, throughput
from .processes import ServerProcess, run_client
from .reports import Report, Target
from .rounds import Rounds
from .settings import Settings
from .tables import Table
from .telemetry import MODES

NAME = "otel"
TARGETED = ("api", "metrics")  # the 5 %; sdk (every span sampled) is reported
NOTICE_CLIENTS = {"long-poll": "lro", "watch": "lro-watch"}


def run(settings: Settings) -> Report:
    sizes = settings.sizes or ((300,) if settings.quick else (1000,))
    rounds = settings.rounds_or(3, quick=2)
    report = Report(NAME, {"sizes": list(sizes), "rounds": rounds, "modes": list(MODES)})
    _notice(report, sizes, rounds, settings.rate)
    _throughput(report, rounds)
    return report


def _notice(report: Report, sizes: tuple[int, ...], rounds: int, rate: float) -> None:
    from .notice import client_params

    table = Table(
        "otel: notice latency (ms, median of rounds) by telemetry mode, and vs off",
        ["ops", "client", "mode", "p50", "p99", "p50 / off", "p99 / off", "rounds p50"],
    )
    runs: list[dict[str, Any]] = []
    for size in sizes:
        spread = max(1.0, size / rate)
        for client, kind in NOTICE_CLIENTS.items():
            measured = Rounds(MODES, rounds)
            for round_, mode in measured:
                params = client_params(client, size, spread)
                limit = params["limit"]
                with telemetry.mode(mode), ServerProcess(kind) as server:
                    params["target"] = server.target
                    result = run_client("notice", params, timeout=limit + 120)
                measured.add(round_, mode, result)
                runs.append({"ops": size, "client": client, "mode": mode, **result})
                print(
                    f"  otel notice {size} {client} {mode}: "
                    f"p50 {result['notice_ms']['p50']:.1f} ms, "
                    f"p99 {result['notice_ms']['p99']:.1f} ms",
                    flush=True,
                )
            p50 = {m: measured.median(m, _notice_p50) for m in MODES}
            p99 = {m: measured.median(m, _notice_p99) for m in MODES}
            for mode in MODES:
                table.rows.append(
                    [
                        size,
                        client,
                        mode,
                        p50[mode],
                        p99[mode],
                        p50[mode] / p50["off"],
                        p99[mode] / p99["off"],
                        measured.spread(mode, _notice_p50, ".1f"),
                    ]
                )
            for mode in TARGETED:
                report.targets.append(
                    Target(
                        f"notice p50, {client}, {size} ops: {mode} / off",
                        p50[mode] / p50["off"],
                        1.05,
                        "max",
                        "x",
                    )
                )
    report.tables.append(table)
    report.data["notice"] = runs


def _notice_p50(result: Mapping[str, Any]) -> float:
    return float(result["notice_ms"]["p50"])


def _notice_p99(result: Mapping[str, Any]) -> float:
    return float(result["notice_ms"]["p99"])


def _throughput(report: Report, rounds: int) -> None:
    in_flight = 16
    with contextlib.ExitStack() as stack:
        targets = {}
        for mode in MODES:
            with telemetry.mode(mode):
                targets[mode] = stack.enter_context(ServerProcess("lro")).target
        params = {
            "targets": targets,
            "in_flight": [in_flight],
            "rounds": rounds * 2,
            "warmup": 0.3,
            "duration": 1.0,
        }
        result = run_client("throughput", params, timeout=rounds * 2 * 3 * 7 + 60)
    measurements: list[dict[str, Any]] = result["measurements"]
    report.data["throughput"] = measurements
    measured = throughput.rounds_of(measurements, MODES, rounds * 2, in_flight)
    table = Table(
        f"otel: GetOperation calls/s at {in_flight} in flight (server instrumented; the "
        "client is a bare stub), median of rounds, and the median of each round's ratio",
        ["mode", "calls/s", "vs off", "server CPU ms/call", "rounds calls/s"],
    )
    for mode in MODES:
        ratio = measured.ratio(mode, "off", "calls_per_s")
        table.rows.append(
            [
                mode,
                measured.median(mode, "calls_per_s"),
                ratio,
                measured.median(mode, "server_cpu_ms_per_call"),
                measured.spread(mode, "calls_per_s", ".0f"),
            ]
        )
        if mode in TARGETED:
            report.targets.append(
                Target(f"GetOperation throughput: {mode} / off", ratio, 0.95, "min", "x")
            )
    report.tables.append(table)
