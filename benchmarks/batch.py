"""Benchmark: start a batch and await it at once, in an app-sized heap.

A Google Cloud app's process: the client imports google-api-core and several
google-cloud clients first (some 45,000 objects tracked by the garbage collector, the
count is reported). The server makes 2,000 operations, and finishes them in order at
400 a second from 1 s on; the client starts awaiting all of them at once, right away, so
that its allocations (and the full collections they trigger) overlap the completions.
In the same process and run, half the operations are awaited with lro_async's
``await op`` and the other half with raw grpc.aio ``WaitOperation`` loops (a call, and
another while the answer is not done), interleaved, over the same channel.

Two runs: against a server with the Watch extension (lro_async's waiters on one stream)
and against one without it (lro_async's waiters each long-poll WaitOperation). Figures:
notice p50/p99/max of each half, the ratio of the p99s, the longest client GC pause
while operations finish.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import time
from typing import Any

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2, wrappers_pb2

from lro_async import AsyncOperationsClient

from .control import Control
from .gcpauses import GcPauses
from .percentiles import summary
from .processes import ServerProcess, client_main, run_client
from .reports import Report, Target
from .settings import MESSAGE_OPTIONS, Settings
from .tables import Table

NAME = "batch"
PATHS = {"watch": "lro-watch", "wait": "lro"}
COUNT = 2000
RATE = 400.0
DELAY = 1.0
#: What a Google Cloud app has imported before it starts a batch.
APP_MODULES = (
    "google.api_core.operations_v1",
    "google.api_core.operation_async",
    "google.cloud.redis_v1",
    "google.cloud.redis_v1.services.cloud_redis.async_client",
)


def run(settings: Settings) -> Report:
    count = (settings.sizes or (500 if settings.quick else COUNT,))[0]
    report = Report(NAME, {"count": count, "rate": RATE, "delay": DELAY, "paths": list(PATHS)})
    table = Table(
        f"batch: {count:,} operations awaited at once in an app-sized heap, finishing at "
        f"{RATE:g}/s from {DELAY:g} s on; notice latency (ms) of lro_async and of raw "
        "WaitOperation loops in the same process and run",
        [
            "path",
            "tracked objects",
            "lro p50",
            "lro p99",
            "lro max",
            "raw p50",
            "raw p99",
            "raw max",
            "p99 ratio",
            "client GC max ms",
            "failed",
        ],
    )
    for path, server_kind in PATHS.items():
        params: dict[str, Any] = {"count": count}
        with ServerProcess(server_kind, count_rpcs=True) as server:
            params["target"] = server.target
            result = run_client(NAME, params, timeout=300)
        lro, raw = result["lro_ms"], result["raw_ms"]
        ratio = lro["p99"] / raw["p99"] if raw["p99"] else float("inf")
        table.rows.append(
            [
                path,
                result["tracked_objects"],
                lro["p50"],
                lro["p99"],
                lro["max"],
                raw["p50"],
                raw["p99"],
                raw["max"],
                ratio,
                result["gc_finishing"]["max_ms"],
                result["failed"],
            ]
        )
        report.targets.append(
            Target(
                f"batch notice p99, lro_async ({path}) / raw WaitOperation loops",
                ratio,
                2.0,
                "max",
                "x",
                f"{lro['p99']:.1f} vs {raw['p99']:.1f} ms",
            )
        )
        report.data[path] = result
        print(f"  batch {path}: p99 {lro['p99']:.1f} vs raw {raw['p99']:.1f} ms", flush=True)
    report.tables.append(table)
    return report


# -- the client process -------------------------------------------------------------------


async def _client(params: dict[str, Any]) -> dict[str, Any]:
    for module in APP_MODULES:
        importlib.import_module(module)
    gc.collect()
    tracked = len(gc.get_objects())
    count = int(params["count"])
    pauses = GcPauses().install()
    async with grpc.aio.insecure_channel(params["target"], options=MESSAGE_OPTIONS) as channel:
        control = Control(channel)
        names = await control.create(count)
        first = await control.schedule(DELAY, count / RATE) + DELAY
        client = AsyncOperationsClient(channel)
        stub = operations_pb2_grpc.OperationsStub(channel)
        waits = [
            _lro_wait(client, name) if index % 2 == 0 else _raw_wait(stub, name)
            for index, name in enumerate(names)
        ]
        tasks = [asyncio.create_task(wait) for wait in waits]  # all at once, at once
        done, pending = await asyncio.wait(tasks, timeout=count / RATE + DELAY + 120)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        await client.aclose()
    ok = [t.result() for t in done if t.exception() is None]
    last = max((seen for _, seen, _ in ok), default=time.time())
    return {
        "tracked_objects": tracked,
        "lro_ms": summary([seen - end for end, seen, lro in ok if lro], 1000.0),
        "raw_ms": summary([seen - end for end, seen, lro in ok if not lro], 1000.0),
        "failed": count - len(ok),
        "gc_finishing": GcPauses.since(pauses.state(), first, last),
    }


async def _lro_wait(client: AsyncOperationsClient, name: str) -> tuple[float, float, bool]:
    response = await client.operation(name, result_type=wrappers_pb2.DoubleValue)
    return response.value, time.time(), True


async def _raw_wait(stub: Any, name: str) -> tuple[float, float, bool]:
    request = operations_pb2.WaitOperationRequest(
        name=name, timeout=duration_pb2.Duration(seconds=900)
    )
    while True:
        operation: operations_pb2.Operation = await stub.WaitOperation(request)
        if operation.done:
            value = wrappers_pb2.DoubleValue()
            operation.response.Unpack(value)
            return value.value, time.time(), False


if __name__ == "__main__":
    client_main(_client)
