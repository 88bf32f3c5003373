"""Benchmark: the cost of the OpenTelemetry instrumentation (``--only otel``).

The same benchmarks as ``notice`` and ``throughput``, run back to back in one run with
the server and client processes in five telemetry modes (:mod:`benchmarks.telemetry`):

- ``off``: ``lro_async.telemetry.disable()``, what an install without the extra runs
  (one attribute check per RPC or operation);
- ``api``: the extra installed, no SDK set up: the API's no-op providers;
- ``metrics``: the metrics answered to a ``prometheus_client`` registry by lro_async
  itself, no tracer provider: what ``lro-async serve --metrics-port`` runs;
- ``sdk-metrics``: the SDK's meter provider with a pull reader instead, what an app that
  sets OpenTelemetry's metrics up runs;
- ``sdk``: that and the SDK's tracer provider, every span sampled and handed to a batch
  span processor (whose exporter drops them).

Then the same notice latency with every mode's server at once and one client awaiting
them all (:func:`_paired_notice`, the targets' figures): a change in the machine's speed
lands on every mode alike. Those servers also time their part of each long-polled notice
(from ``manager.complete()`` to the WaitOperation handler's answer): with caches left cold
by the idle waits between ends, it runs several times longer than the same path run back
to back, and so does what telemetry adds to it. Also, in one process without the wire,
that part and the CPU of a GetOperation's server path run back to back (warm), which the
modes differ in by microseconds where the notice's p50 across processes moves by tens
between rounds.

Figures: notice latency p50/p99 of the long-poll and Watch clients, and GetOperation
throughput at 16 in flight, each as the ratio of a mode to ``off``: the median of each
round's ratio, over rounds that alternate the modes (:mod:`benchmarks.rounds`), so a
noisy neighbour hurts them alike and a drift of the machine's speed over the run cancels.
Target: within 5 %.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Mapping
from typing import Any, cast

import grpc
from google.longrunning import operations_pb2

import lro_async
from lro_async import AsyncOperationsServicer

from . import telemetry, throughput
from .processes import ServerProcess, run_client
from .reports import Report, Target
from .rounds import Rounds, rotation
from .settings import Settings
from .tables import Table
from .telemetry import MODES

NAME = "otel"
TARGETED = ("api", "metrics")  # the 5 %; the SDK's modes are reported
NOTICE_CLIENTS = {"long-poll": "lro", "watch": "lro-watch"}


def run(settings: Settings) -> Report:
    sizes = settings.sizes or ((300,) if settings.quick else (1000,))
    rounds = settings.rounds_or(3, quick=2)
    report = Report(NAME, {"sizes": list(sizes), "rounds": rounds, "modes": list(MODES)})
    _notice(report, sizes, rounds, settings.rate)
    _paired_notice(report, sizes, rounds, settings.rate)
    _answer_path(report, rounds, 500 if settings.quick else PATH_OPERATIONS)
    _throughput(report, rounds)
    return report


PATH_OPERATIONS = 3000


def _paired_notice(report: Report, sizes: tuple[int, ...], rounds: int, rate: float) -> None:
    """Notice latency with one server per mode at once and one client awaiting them all.

    Each round starts a server in every mode and one client (telemetry off: the same for
    every server) that awaits *size* operations of each, their ends interleaved across
    the servers at *rate* a second in all. A change in the machine's speed lands on every
    mode alike within the round, which the rounds run one mode after another cannot
    promise: their p50 moves 10-20 % from round to round here. The targets are these
    ratios (the median of each round's).
    """
    table = Table(
        "otel: notice latency (ms) with every mode's server at once and one client "
        "(telemetry off) awaiting them all, median of rounds, and vs off (the median of "
        "each round's ratio)",
        ["ops", "client", "mode", "p50", "p99", "p50 / off", "p99 / off", "rounds p50"],
    )
    parts = Table(
        "otel: the server's part of a long-polled notice in those servers (us, median of each "
        "server's median, and vs off): from complete() to the WaitOperation handler's answer, "
        "in processes whose caches the idle waits between ends left cold",
        ["ops", "mode", "server part", "+ vs off", "part / off", "rounds"],
    )
    from .notice import open_delay

    runs: list[dict[str, Any]] = []
    for size in sizes:
        spread = max(1.0, size * len(MODES) / rate)
        for client, kind in NOTICE_CLIENTS.items():
            measured = Rounds(MODES, rounds)
            for round_ in range(rounds):
                order = rotation(MODES, round_)  # which server's ends come first
                with contextlib.ExitStack() as stack:
                    targets = {}
                    for mode in order:
                        with telemetry.mode(mode):
                            server = ServerProcess(kind, time_notices=True)
                            targets[mode] = stack.enter_context(server).target
                    params = {
                        "targets": targets,
                        "count": size,
                        "delay": open_delay(size * len(MODES)),
                        "spread": spread,
                    }
                    with telemetry.mode("off"):
                        result = run_client("otel", params, timeout=spread + 300)
                for mode in MODES:
                    measured.add(round_, mode, result[mode])
                    runs.append({"ops": size, "client": client, "mode": mode, **result[mode]})
                print(
                    f"  otel paired notice {size} {client}: p50 "
                    + ", ".join(f"{m} {result[m]['notice_ms']['p50']:.2f}" for m in MODES),
                    flush=True,
                )
            table.rows.extend(_notice_rows(size, client, measured))
            if client == "long-poll":
                parts.rows.extend(_part_rows(size, measured))
            for mode in TARGETED:
                report.targets.append(
                    Target(
                        f"notice p50, {client}, {size} ops, servers at once: {mode} / off",
                        measured.ratio(mode, "off", _notice_p50),
                        1.05,
                        "max",
                        "x",
                    )
                )
    report.tables.extend((table, parts))
    report.data["paired_notice"] = runs


def _part_rows(size: int, measured: Rounds[str]) -> list[list[object]]:
    """Each mode's part of a long-polled notice in the paired servers, and vs off."""
    off = measured.median("off", "server_part_us")
    return [
        [
            size,
            mode,
            measured.median(mode, "server_part_us"),
            measured.median(mode, "server_part_us") - off,
            measured.ratio(mode, "off", "server_part_us"),
            measured.spread(mode, "server_part_us", ".0f"),
        ]
        for mode in MODES
    ]


async def _paired_client(params: dict[str, Any]) -> dict[str, Any]:
    """Await *count* operations on each server of *targets*, their ends interleaved."""
    from google.protobuf import wrappers_pb2

    from .control import Control
    from .notice import noticed_at
    from .percentiles import summary
    from .settings import MESSAGE_OPTIONS

    targets: dict[str, str] = params["targets"]
    count, delay, spread = int(params["count"]), float(params["delay"]), float(params["spread"])
    channels = {
        mode: grpc.aio.insecure_channel(target, options=MESSAGE_OPTIONS)
        for mode, target in targets.items()
    }
    clients = {mode: lro_async.AsyncOperationsClient(channel) for mode, channel in channels.items()}
    try:
        controls = {mode: Control(channel) for mode, channel in channels.items()}
        names = {mode: await control.create(count) for mode, control in controls.items()}
        tasks = {
            mode: [
                asyncio.create_task(
                    noticed_at(clients[mode].operation(name, result_type=wrappers_pb2.DoubleValue))
                )
                for name in names[mode]
            ]
            for mode in targets
        }
        step = spread / count / len(targets)  # one server's end, then the next's
        for index, control in enumerate(controls.values()):
            await control.schedule(delay + index * step, spread)
        every = [task for mode_tasks in tasks.values() for task in mode_tasks]
        await asyncio.wait_for(asyncio.gather(*every), delay + spread + 180)
        parts = {mode: (await control.stats()).notice_part_us for mode, control in controls.items()}
    finally:
        for client in clients.values():
            await client.aclose()
        for channel in channels.values():
            await channel.close()
    latencies = {
        mode: [seen - finished for finished, seen in (task.result() for task in mode_tasks)]
        for mode, mode_tasks in tasks.items()
    }
    return {
        mode: {"notice_ms": summary(values, 1000.0), "server_part_us": parts[mode]}
        for mode, values in latencies.items()
    }


async def _client(params: dict[str, Any]) -> dict[str, Any]:
    """``python -m benchmarks.otel``: the paired notice client (given *targets*), or the
    in-process one."""
    if "targets" in params:
        return await _paired_client(params)
    return await _answer_client(params)


def _answer_path(report: Report, rounds: int, count: int) -> None:
    """In one process without the wire: the server's part of a notice, from
    ``manager.complete()`` to the WaitOperation handler returning its answer to grpc.aio,
    and the CPU of a GetOperation's server path.

    Across processes a notice takes about 0.4 ms, and its p50 moves 10-20 % between
    rounds here, more than telemetry could; this is the part telemetry adds to, measured
    to the microsecond.
    """
    measured = Rounds(MODES, rounds)
    for round_, mode in measured:
        with telemetry.mode(mode):
            result = run_client("otel", {"count": count}, timeout=120)
        measured.add(round_, mode, result)
    table = Table(
        f"otel: in process, without the wire (us, median of rounds): the server's part of a "
        f"notice (complete() to the WaitOperation answer, the median of {count:,}) and the CPU "
        "of a GetOperation (each call a loop turn of its own), and what each mode adds",
        ["mode", "notice part", "+ vs off", "GetOperation", "+ vs off", "rounds notice part"],
    )
    off = {figure: measured.median("off", figure) for figure in ("answer_us", "get_us")}
    for mode in MODES:
        answer, get = measured.median(mode, "answer_us"), measured.median(mode, "get_us")
        table.rows.append(
            [
                mode,
                answer,
                answer - off["answer_us"],
                get,
                get - off["get_us"],
                measured.spread(mode, "answer_us", ".1f"),
            ]
        )
    report.tables.append(table)
    report.data["answer_path"] = [
        {"mode": mode, **result} for mode in MODES for result in measured.of(mode)
    ]


class _Context:
    """What WaitOperation reads of a grpc.aio context: no metadata, no deadline."""

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def time_remaining(self) -> None:
        return None


async def _answered(
    servicer: AsyncOperationsServicer,
    request: operations_pb2.WaitOperationRequest,
    context: grpc.aio.ServicerContext[Any, Any],
) -> float:
    """``time.perf_counter()`` when WaitOperation returned its answer."""
    await servicer.WaitOperation(request, context)
    return time.perf_counter()


async def _answer_client(params: dict[str, Any]) -> dict[str, Any]:
    """``python -m benchmarks.otel``: time *count* ends, each to its waiter's answer."""
    context = cast("grpc.aio.ServicerContext[Any, Any]", _Context())
    samples: list[float] = []
    async with lro_async.OperationManager() as manager:
        servicer = lro_async.AsyncOperationsServicer(manager)
        for index in range(int(params["count"])):
            op = await manager.create()
            request = operations_pb2.WaitOperationRequest(name=op.name)
            waiter = asyncio.ensure_future(_answered(servicer, request, context))
            await asyncio.sleep(0)  # the waiter's first step: it reads, then sleeps
            assert manager.watched == 1
            started = time.perf_counter()
            await manager.complete(op.name)
            samples.append(await waiter - started)
            if index % 100 == 99:
                await asyncio.sleep(0.001)  # let deferred work and timers run, as a server idles
        # GetOperation of a done operation, each call a loop turn of its own, as a server
        # answering one call at a time runs it: CPU per call.
        get = operations_pb2.GetOperationRequest(name=op.name)
        calls = int(params["count"]) * 5
        cpu = time.process_time()
        for _ in range(calls):
            await servicer.GetOperation(get, context)
            await asyncio.sleep(0)
        get_us = (time.process_time() - cpu) / calls * 1e6
    return {"answer_us": statistics.median(samples) * 1e6, "get_us": get_us, "count": len(samples)}


def _notice(report: Report, sizes: tuple[int, ...], rounds: int, rate: float) -> None:
    from .notice import client_params

    table = Table(
        "otel: notice latency (ms, median of rounds) by telemetry mode, and vs off (the "
        "median of each round's ratio)",
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
            table.rows.extend(_notice_rows(size, client, measured))
    report.tables.append(table)
    report.data["notice"] = runs


def _notice_rows(size: int, client: str, measured: Rounds[str]) -> list[list[object]]:
    """The rows of a notice table: each mode's p50 and p99, and their ratios to off."""
    return [
        [
            size,
            client,
            mode,
            measured.median(mode, _notice_p50),
            measured.median(mode, _notice_p99),
            measured.ratio(mode, "off", _notice_p50),
            measured.ratio(mode, "off", _notice_p99),
            measured.spread(mode, _notice_p50, ".2f"),
        ]
        for mode in MODES
    ]


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


if __name__ == "__main__":
    from .processes import client_main

    client_main(_client)
