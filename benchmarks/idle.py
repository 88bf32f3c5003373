"""Benchmark 3: the idle cost of waiting, versus a bare long-poll server.

N operations each with one open WaitOperation call (10,000 by default; ``--sizes 100000``
for more): bytes of server RSS per open wait, bytes of client RSS per awaited operation,
and the CPU of both processes over ``--idle-seconds`` (10) of waiting. The bare server
awaits a plain ``asyncio.Event`` per operation in a grpc.aio WaitOperation handler.

Runs (server, client): (lro_async with the Watch extension, lro_async): every wait on one
stream; (lro_async, lro_async), (bare, lro_async) — the server compared
with the same client — and (bare, raw grpc.aio calls), the least a client can hold. All
N waits are started at once by one client; "lost" counts awaits that failed or never
opened, "refused" the calls the server turned away that the client opened again.
"""

from __future__ import annotations

from typing import Any

from .processes import ServerProcess, run_client
from .reports import Report, Target
from .settings import Settings
from .tables import Table

NAME = "idle"
RUNS = (("lro-watch", "lro"), ("lro", "lro"), ("bare", "lro"), ("bare", "raw"))
LABELS = {
    "lro-watch": "lro_async + Watch",
    "lro": "lro_async",
    "bare": "bare",
    "raw": "raw grpc.aio",
}
HEADLINE = 10_000


def run(settings: Settings) -> Report:
    sizes = settings.sizes or ((2000,) if settings.quick else (HEADLINE,))
    seconds = 2.0 if settings.quick else settings.idle
    report = Report(
        NAME, {"sizes": list(sizes), "idle_seconds": seconds, "runs": [list(r) for r in RUNS]}
    )
    table = Table(
        "idle: memory per open wait and idle CPU (% of one core)",
        [
            "ops",
            "server",
            "client",
            "open s",
            "server KB/wait",
            "client KB/wait",
            "server idle CPU %",
            "client idle CPU %",
            "Wait RPCs",
            "refused",
            "lost",
        ],
    )
    results: dict[tuple[int, str, str], dict[str, Any]] = {}
    for size in sizes:
        for server_kind, client in RUNS:
            params = {"client": client, "count": size, "idle": seconds}
            with ServerProcess(server_kind, count_rpcs=True) as server:
                params["target"] = server.target
                result = run_client("waiters", params, timeout=300 + size / 100 + seconds)
            results[size, server_kind, client] = result
            idle = result["idle"]
            table.rows.append(
                [
                    size,
                    LABELS[server_kind],
                    LABELS[client],
                    result["open_seconds"],
                    result["server_bytes_per_wait"] / 1024,
                    result["client_bytes_per_wait"] / 1024,
                    idle["server_cpu"] / idle["seconds"] * 100,
                    idle["client_cpu"] / idle["seconds"] * 100,
                    result["wait_calls_received"],
                    result["refused"],
                    _lost(result),
                ]
            )
            print(
                f"  idle {size} {server_kind}/{client}: "
                f"{result['server_bytes_per_wait'] / 1024:.1f} KB/wait server, "
                f"{result['client_bytes_per_wait'] / 1024:.1f} KB/wait client",
                flush=True,
            )
    report.tables.append(table)
    report.data["runs"] = [
        {"ops": size, "server": server_kind, "client": client, **result}
        for (size, server_kind, client), result in results.items()
    ]
    size = max(sizes)
    note = "" if size == HEADLINE else f"target is set at {HEADLINE:,} waits"
    ours, bare = results[size, "lro", "lro"], results[size, "bare", "lro"]
    raw = results[size, "bare", "raw"]
    report.targets += [
        Target(
            f"lost calls, {size:,} waits opened at once by one client",
            _lost(ours),
            0,
            "max",
            "",
            f"{ours['refused']} refused and reopened; {note}".strip("; "),
        ),
        Target(
            f"server memory per open wait, lro_async / bare ({size:,})",
            ours["server_bytes_per_wait"] / bare["server_bytes_per_wait"],
            1.3,
            "max",
            "x",
            f"{ours['server_bytes_per_wait'] / 1024:.1f} vs "
            f"{bare['server_bytes_per_wait'] / 1024:.1f} KB; {note}".strip("; "),
        ),
        Target(
            f"server idle CPU, {size:,} waiters",
            _idle(ours, "server_cpu"),
            1.0,
            "max",
            "% core",
            note,
        ),
        Target(
            f"client idle CPU, {size:,} waiters",
            _idle(ours, "client_cpu"),
            1.0,
            "max",
            "% core",
            note,
        ),
    ]
    watched = results[size, "lro-watch", "lro"]
    report.targets += [
        Target(
            f"server memory per awaited op over the Watch stream ({size:,})",
            watched["server_bytes_per_wait"] / 1024,
            3.0,
            "max",
            "KB",
            note,
        ),
        Target(
            f"client memory per awaited op over the Watch stream ({size:,})",
            watched["client_bytes_per_wait"] / 1024,
            3.0,
            "max",
            "KB",
            note,
        ),
        Target(
            f"lost waits over the Watch stream, {size:,} awaited at once",
            _lost(watched),
            0,
            "max",
            "",
            note,
        ),
    ]
    report.notes.append(
        f"client memory per awaited op: lro_async "
        f"{ours['client_bytes_per_wait'] / 1024:.1f} KB vs raw grpc.aio call "
        f"{raw['client_bytes_per_wait'] / 1024:.1f} KB "
        f"({ours['client_bytes_per_wait'] / raw['client_bytes_per_wait']:.2f}x; no target)"
    )
    return report


def _lost(result: dict[str, Any]) -> int:
    return int(result["failed"]) + int(result["count"]) - int(result["waiting_at_open"])


def _idle(result: dict[str, Any], side: str) -> float:
    return float(result["idle"][side]) / float(result["idle"]["seconds"]) * 100
