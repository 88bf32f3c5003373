"""Benchmark 2: GetOperation throughput through lro_async versus a bare grpc.aio handler.

Three servers run side by side, each in its own process: lro_async's servicer over a
``MemoryStore``, the same over a ``SQLiteStore``, and a bare handler that returns a
constant Operation (the physical limit). A client process keeps 1, 16 or 128
GetOperation calls in flight against one server at a time, for a warm-up and then a
measured interval, and does so for every server in turn, round after round (the order
rotates), so that a noisy neighbour hurts every server alike. Figures: calls a second
(the median of the rounds), the ratio to bare (the median of each round's ratio, as the
servers of one round are measured seconds apart), and CPU milliseconds per call of each
side.

The client is a plain grpc.aio stub, so that what differs between rows is the server.
The operation read is a done one, with a response, as a poll of a finished job reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
from google.longrunning import operations_pb2

from .control import Control
from .processes import ServerProcess, client_main, run_client
from .reports import Report, Target
from .resources import cpu_seconds
from .rounds import Rounds, rotation
from .settings import MESSAGE_OPTIONS, Settings
from .tables import Table

NAME = "throughput"
SERVERS = ("lro", "lro-sqlite", "bare")
LABELS = {"lro": "lro_async + MemoryStore", "lro-sqlite": "lro_async + SQLite", "bare": "bare"}
HEADLINE = 16


def run(settings: Settings) -> Report:
    concurrency = settings.sizes or (1, 16, 128)
    rounds, warmup, duration = settings.rounds_or(4), 0.3, 1.0
    report = Report(
        NAME,
        {
            "in_flight": list(concurrency),
            "rounds": rounds,
            "warmup_s": warmup,
            "measure_s": duration,
            "servers": list(SERVERS),
        },
    )
    with (
        ServerProcess("lro") as lro,
        ServerProcess("lro-sqlite") as sqlite,
        ServerProcess("bare") as bare,
    ):
        targets = {"lro": lro.target, "lro-sqlite": sqlite.target, "bare": bare.target}
        params = {
            "targets": targets,
            "in_flight": list(concurrency),
            "rounds": rounds,
            "warmup": warmup,
            "duration": duration,
        }
        budget = rounds * len(SERVERS) * len(concurrency) * (warmup + duration + 5) + 60
        result = run_client(NAME, params, timeout=budget)
    measurements: list[dict[str, Any]] = result["measurements"]
    report.data["measurements"] = measurements
    table = Table(
        "throughput: GetOperation calls/s (median of rounds), vs bare (median of the rounds' "
        "ratios: each round measures every server back to back), CPU ms per call",
        [
            "server",
            "in flight",
            "calls/s",
            "vs bare",
            "server CPU ms/call",
            "client CPU ms/call",
            "rounds calls/s",
        ],
    )
    ratios: dict[tuple[str, int], float] = {}
    for c in concurrency:
        measured = rounds_of(measurements, SERVERS, rounds, c)
        for server in SERVERS:
            ratios[server, c] = measured.ratio(server, "bare", "calls_per_s")
            table.rows.append(
                [
                    LABELS[server],
                    c,
                    measured.median(server, "calls_per_s"),
                    ratios[server, c],
                    measured.median(server, "server_cpu_ms_per_call"),
                    measured.median(server, "client_cpu_ms_per_call"),
                    measured.spread(server, "calls_per_s", ".0f"),
                ]
            )
    report.tables.append(table)
    c = HEADLINE if HEADLINE in concurrency else max(concurrency)
    note = "" if c == HEADLINE else f"target is set at {HEADLINE} in flight"
    report.targets.append(
        Target(
            f"GetOperation throughput, MemoryStore / bare ({c} in flight)",
            ratios["lro", c],
            0.85,
            "min",
            "x",
            note,
        )
    )
    report.targets.append(
        Target(
            f"GetOperation throughput, SQLite / bare ({c} in flight)",
            ratios["lro-sqlite", c],
            0.85,
            "min",
            "x",
            note or "the issue's target names no store: reported for SQLite too",
        )
    )
    return report


def rounds_of(
    measurements: list[dict[str, Any]], servers: Sequence[str], rounds: int, in_flight: int
) -> Rounds[str]:
    """The client's *measurements* at *in_flight* calls in flight, by server and round."""
    measured = Rounds(servers, rounds)
    for m in measurements:
        if m["in_flight"] == in_flight:
            measured.add(int(m["round"]), str(m["server"]), m)
    return measured


# -- the client process -------------------------------------------------------------------


async def _client(params: dict[str, Any]) -> dict[str, Any]:
    channels = {
        server: grpc.aio.insecure_channel(target, options=MESSAGE_OPTIONS)
        for server, target in params["targets"].items()
    }
    try:
        names: dict[str, str] = {}
        for server, channel in channels.items():
            control = Control(channel)
            [names[server]] = await control.create(1)
            await control.complete_all()
        measurements = []
        servers = list(channels)
        for round_ in range(int(params["rounds"])):
            for c in params["in_flight"]:
                for server in rotation(servers, round_):
                    measured = await _measure(
                        channels[server],
                        names[server],
                        int(c),
                        float(params["warmup"]),
                        float(params["duration"]),
                    )
                    measurements.append(
                        {"server": server, "in_flight": c, "round": round_, **measured}
                    )
    finally:
        for channel in channels.values():
            await channel.close()
    return {"measurements": measurements}


async def _measure(
    channel: grpc.aio.Channel, name: str, in_flight: int, warmup: float, duration: float
) -> dict[str, float]:
    get: grpc.aio.UnaryUnaryMultiCallable[
        operations_pb2.GetOperationRequest, operations_pb2.Operation
    ] = channel.unary_unary(
        "/google.longrunning.Operations/GetOperation",
        request_serializer=operations_pb2.GetOperationRequest.SerializeToString,
        response_deserializer=operations_pb2.Operation.FromString,
    )
    control = Control(channel)
    loop = asyncio.get_running_loop()
    request = operations_pb2.GetOperationRequest(name=name)
    counted = total = 0
    before = await control.stats()
    cpu_before, start = cpu_seconds(), loop.time()
    begin, end = start + warmup, start + warmup + duration

    async def worker() -> None:
        nonlocal counted, total
        while True:
            await get(request, timeout=30.0)
            total += 1
            now = loop.time()
            if now >= end:
                return
            if now >= begin:
                counted += 1

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    cpu_after, stop = cpu_seconds(), loop.time()
    after = await control.stats()
    return {
        "calls_per_s": counted / duration,
        "calls": total,
        "seconds": stop - start,
        "server_cpu_ms_per_call": (after.cpu - before.cpu) * 1000 / total,
        "client_cpu_ms_per_call": (cpu_after - cpu_before) * 1000 / total,
    }


if __name__ == "__main__":
    client_main(_client)
