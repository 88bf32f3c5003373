"""Benchmark 1: completion-to-notice latency and RPC cost with many operations.

A server makes M operations and finishes them after a delay, either paced (in order,
``Settings.rate`` a second) or all at once (burst); each response holds the server's
``time.time()`` at the moment it finished the operation. A client in another process
awaits all M, one task each, and notes ``time.time()`` when each await returns.

Clients:

- ``watch``: lro_async's ``await op`` against a server with the Watch extension: every
  wait on one stream;
- ``long-poll``: lro_async's ``await op`` (WaitOperation long polls);
- ``polling``: lro_async against a server whose WaitOperation is UNIMPLEMENTED, so it
  falls back to polling GetOperation with its default backoff;
- ``api-core``: google-api-core's ``operation_async.from_gapic`` over
  ``operations_v1.OperationsAsyncClient``, with its default polling.

The delay before the first completion leaves time for the long-poll client to open every
wait at its default pacing (1,000 opens a second), so that latency is measured from calls
already open. Figures: latency p50/p99/max, Operations RPCs the server received per
operation (an interceptor counts them), CPU seconds of each process over the run, and
the longest pause of each process's garbage collector between the first completion and
the last notice (a full collection over the objects of 10,000 open calls holds every
notice that falls due meanwhile).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import grpc
from google.longrunning import operations_pb2
from google.protobuf import wrappers_pb2

from lro_async import AsyncOperationsClient

from .control import Control
from .gcpauses import GcPauses
from .percentiles import summary
from .processes import ServerProcess, client_main, run_client
from .reports import Report, Target
from .resources import cpu_seconds
from .settings import MESSAGE_OPTIONS, Settings
from .tables import Table

NAME = "notice"
CLIENTS = ("watch", "long-poll", "polling", "api-core")
SERVER_FOR = {
    "watch": "lro-watch",
    "long-poll": "lro",
    "polling": "lro-nowait",
    "api-core": "lro",
}
PATTERNS = ("paced", "burst")
HEADLINE = 10_000
GIVE_UP = 180.0  # seconds a client may keep waiting after the last completion


def open_delay(size: int) -> float:
    """Seconds before the first completion: the long-poll client opens 1,000 waits/s."""
    return 1.0 + size * 1.05 / 1000


def client_params(client: str, size: int, spread: float) -> dict[str, Any]:
    """The notice client's parameters (``limit``: seconds it may run, its give-up time
    included); ``otel`` and ``scale`` run the same client."""
    return {
        "client": client,
        "count": size,
        "delay": open_delay(size),
        "spread": spread,
        "limit": open_delay(size) + spread + GIVE_UP,
    }


def run(settings: Settings) -> Report:
    sizes = settings.sizes or ((100, 1000) if settings.quick else (100, 1000, HEADLINE))
    report = Report(
        NAME,
        {
            "sizes": list(sizes),
            "patterns": list(PATTERNS),
            "clients": list(CLIENTS),
            "paced_rate_per_s": settings.rate,
            "api_core_max": settings.api_core_max,
        },
    )
    table = Table(
        f"notice: completion-to-notice latency (ms), RPCs per operation, CPU seconds "
        f"(paced: {settings.rate:g} completions/s; GC pause: the longest garbage-collector "
        "pause of client/server between the first completion and the last notice)",
        [
            "ops",
            "pattern",
            "client",
            "p50",
            "p99",
            "max",
            "RPCs/op",
            "client CPU",
            "server CPU",
            "wall s",
            "failed",
            "GC pause ms c/s",
        ],
    )
    results: dict[tuple[int, str, str], dict[str, Any]] = {}
    for size in sizes:
        for pattern in PATTERNS:
            spread = max(1.0, size / settings.rate) if pattern == "paced" else 0.0
            for client in CLIENTS:
                if client == "api-core" and size > settings.api_core_max:
                    report.notes.append(f"api-core not run at {size} (--api-core-max)")
                    continue
                params = client_params(client, size, spread)
                limit = params["limit"]
                with ServerProcess(SERVER_FOR[client], count_rpcs=True) as server:
                    params["target"] = server.target
                    result = run_client(NAME, params, timeout=limit + 120)
                results[size, pattern, client] = result
                latency = result["notice_ms"]
                table.rows.append(
                    [
                        size,
                        pattern,
                        client,
                        latency["p50"],
                        latency["p99"],
                        latency["max"],
                        result["rpcs_per_op"],
                        result["client_cpu"],
                        result["server_cpu"],
                        result["wall"],
                        result["failed"] + result["unfinished"],
                        f"{result['gc']['client_finishing']['max_ms']:.0f}/"
                        f"{result['gc']['server_finishing']['max_ms']:.0f}",
                    ]
                )
                if result["unfinished"]:
                    report.notes.append(
                        f"{client} at {size} {pattern}: {result['unfinished']} operations "
                        f"not noticed within {GIVE_UP:.0f} s of the last completion"
                    )
                print(
                    f"  notice {size} {pattern} {client}: p50 {latency['p50']:.1f} ms, "
                    f"p99 {latency['p99']:.1f} ms, {result['rpcs_per_op']:.2f} RPCs/op",
                    flush=True,
                )
    report.tables.append(table)
    report.tables.append(_ratios(results, sizes))
    report.targets.extend(_targets(results, sizes))
    report.data["runs"] = [
        {"ops": size, "pattern": pattern, "client": client, **result}
        for (size, pattern, client), result in results.items()
    ]
    return report


def _ratios(results: dict[tuple[int, str, str], dict[str, Any]], sizes: tuple[int, ...]) -> Table:
    table = Table(
        "notice: google-api-core polling / lro_async long poll (same run)",
        ["ops", "pattern", "p50 ratio", "p99 ratio", "RPCs ratio", "client CPU ratio"],
    )
    for size in sizes:
        for pattern in PATTERNS:
            long_poll = results.get((size, pattern, "long-poll"))
            api_core = results.get((size, pattern, "api-core"))
            if long_poll is None or api_core is None:
                continue
            table.rows.append(
                [
                    size,
                    pattern,
                    _div(api_core["notice_ms"]["p50"], long_poll["notice_ms"]["p50"]),
                    _div(api_core["notice_ms"]["p99"], long_poll["notice_ms"]["p99"]),
                    _div(api_core["rpcs_per_op"], long_poll["rpcs_per_op"]),
                    _div(api_core["client_cpu"], long_poll["client_cpu"]),
                ]
            )
    return table


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan


def _targets(
    results: dict[tuple[int, str, str], dict[str, Any]], sizes: tuple[int, ...]
) -> list[Target]:
    size = max(sizes)
    where = f"{size:,} ops, paced"
    note = "" if size == HEADLINE else f"target is set at {HEADLINE:,} ops"
    long_poll = results.get((size, "paced", "long-poll"))
    api_core = results.get((size, "paced", "api-core"))
    watch = results.get((size, "paced", "watch"))
    targets = [
        Target(
            f"Watch-stream notice p99 ({where})",
            None if watch is None else watch["notice_ms"]["p99"],
            5.0,
            "max",
            "ms",
            note,
        ),
        Target(
            f"long-poll notice p99 ({where})",
            None if long_poll is None else long_poll["notice_ms"]["p99"],
            5.0,
            "max",
            "ms",
            note,
        ),
        Target(
            f"api-core p50 / long-poll p50 ({where})",
            None
            if long_poll is None or api_core is None
            else _div(api_core["notice_ms"]["p50"], long_poll["notice_ms"]["p50"]),
            100.0,
            "min",
            "x",
            note,
        ),
        Target(
            f"long-poll RPCs per completed op ({where})",
            None if long_poll is None else long_poll["rpcs_per_op"],
            1.1,
            "max",
            "",
            note,
        ),
    ]
    burst = results.get((size, "burst", "long-poll"))
    if burst is not None:
        targets.append(
            Target(
                f"long-poll RPCs per completed op ({size:,} ops, burst)",
                burst["rpcs_per_op"],
                1.1,
                "max",
                "",
                note,
            )
        )
    return targets


# -- the client process -------------------------------------------------------------------


async def _client(params: dict[str, Any]) -> dict[str, Any]:
    kind, count = params["client"], int(params["count"])
    pauses = GcPauses().install()
    async with grpc.aio.insecure_channel(params["target"], options=MESSAGE_OPTIONS) as channel:
        control = Control(channel)
        names = await control.create(count)
        first = await control.schedule(params["delay"], params["spread"]) + params["delay"]
        before = await control.stats()
        cpu_before, started, gc_before = cpu_seconds(), time.time(), pauses.state()
        lro_client = AsyncOperationsClient(channel)
        if kind == "api-core":
            operations = _api_core_client(channel)
            waits = [_api_core_wait(operations, name) for name in names]
        else:
            waits = [
                noticed_at(lro_client.operation(name, result_type=wrappers_pb2.DoubleValue))
                for name in names
            ]
        tasks = [asyncio.create_task(wait) for wait in waits]
        done, pending = await asyncio.wait(tasks, timeout=params["limit"])
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        cpu_after, ended = cpu_seconds(), time.time()
        after = await control.stats()
        await lro_client.aclose()
    noticed = [t.result() for t in done if t.exception() is None]
    latencies = [seen - finished for finished, seen in noticed]
    last = max((seen for _, seen in noticed), default=ended)
    failures = [repr(t.exception()) for t in done if t.exception() is not None]
    rpcs = after.rpcs_since(before)
    return {
        "notice_ms": summary(latencies, 1000.0),
        "noticed": len(latencies),
        "failed": len(failures),
        "failures": failures[:5],
        "unfinished": len(pending),
        "rpcs": rpcs,
        "rpcs_per_op": sum(rpcs.values()) / count,
        "client_cpu": cpu_after - cpu_before,
        "server_cpu": after.cpu - before.cpu,
        "wall": ended - started,
        # Collections from the start of the waits, and pauses from the first completion
        # to the last notice: those that can delay a notice.
        "gc": {
            "client": GcPauses.window(gc_before, pauses.state()),
            "server": GcPauses.window(before.gc, after.gc),
            "client_finishing": GcPauses.since(pauses.state(), first, last),
            "server_finishing": GcPauses.since(after.gc, first, last),
        },
    }


async def noticed_at(op: Any) -> tuple[float, float]:
    """When the server finished the operation, and when the await returned."""
    response: wrappers_pb2.DoubleValue = await op
    return response.value, time.time()


def _api_core_client(channel: grpc.aio.Channel) -> Any:
    from google.api_core import operations_v1

    return operations_v1.OperationsAsyncClient(channel)  # type: ignore[no-untyped-call]


async def _api_core_wait(operations: Any, name: str) -> tuple[float, float]:
    from google.api_core import operation_async

    future = operation_async.from_gapic(  # type: ignore[no-untyped-call]
        operations_pb2.Operation(name=name), operations, wrappers_pb2.DoubleValue
    )
    response: wrappers_pb2.DoubleValue = await future.result()
    return response.value, time.time()


if __name__ == "__main__":
    client_main(_client)
