"""Benchmark 4: wake-up throughput, versus the bare limit.

N waiters (10,000 by default) whose operations all finish at once: the server finishes
every operation in one go and the figure is the time from the start of that until the
client has the last answer (and half of them). The bare limit is a grpc.aio WaitOperation
handler awaiting a plain ``asyncio.Event`` per operation, on which the same client waits.
The two runs of the target repeat open-then-finish three times on new operations, taking
turns (lro_async, bare, lro_async, ...: both servers stay up, a client process per round)
so that a change in the machine's load between rounds lands on both; the figure is the
median of each. The raw-client runs, which only tell which side the time goes to, run once.

Runs (server, client): (lro_async with the Watch extension, lro_async): every wait on one
stream, against the whole bare per-call stack (bare, raw grpc.aio), the Watch target;
(lro_async, lro_async) against (bare, lro_async) is the per-call target;
(lro_async, raw grpc.aio) against (bare, raw) isolates the server with the least client.
"""

from __future__ import annotations

import statistics
from typing import Any

from .processes import ServerProcess, run_client
from .reports import Report, Target
from .settings import Settings
from .tables import Table

NAME = "wakeup"
RUNS = (
    ("lro-watch", "lro"),
    ("lro", "lro"),
    ("bare", "lro"),
    ("lro", "raw"),
    ("bare", "raw"),
)
LABELS = {
    "lro-watch": "lro_async + Watch",
    "lro": "lro_async",
    "bare": "bare",
    "raw": "raw grpc.aio",
}
HEADLINE = 10_000
ROUNDS = 3


def _merge(into: dict[str, Any], result: dict[str, Any]) -> None:
    """Add one client run (one round) to the rounds of its (server, client) pair."""
    if not into:
        into.update(result)
        return
    into["wakes"] = into["wakes"] + result["wakes"]
    into["failed"] += result["failed"]
    into["failures"] = (into["failures"] + result["failures"])[:5]
    into["waiting_at_open"] = min(into["waiting_at_open"], result["waiting_at_open"])
    lasts = [w["last_answered"] for w in into["wakes"] if w["last_answered"] is not None]
    into["last_answered"] = statistics.median(lasts) if lasts else None


def run(settings: Settings) -> Report:
    sizes = settings.sizes or ((2000,) if settings.quick else (HEADLINE,))
    rounds = 1 if settings.quick else ROUNDS
    report = Report(NAME, {"sizes": list(sizes), "rounds": rounds, "runs": [list(r) for r in RUNS]})
    table = Table(
        "wakeup: every operation finishes at once: seconds from the server's first finish "
        f"until the client has the last (median of {rounds} for lro_async clients) and half "
        "of the answers",
        [
            "ops",
            "server",
            "client",
            "last answered",
            "half answered",
            "server finishing",
            "server CPU",
            "client CPU",
            "lost",
            "GC s c/s",
            "rounds: last answered",
        ],
    )
    results: dict[tuple[int, str, str], dict[str, Any]] = {}
    for size in sizes:
        with (
            ServerProcess("lro-watch", count_rpcs=True) as watch,
            ServerProcess("lro", count_rpcs=True) as lro,
            ServerProcess("bare", count_rpcs=True) as bare,
        ):
            targets = {"lro-watch": watch.target, "lro": lro.target, "bare": bare.target}
            # The raw-client runs only attribute the time to a side: one round each.
            turns = [run for _ in range(rounds) for run in RUNS if run[1] == "lro"]
            turns += [run for run in RUNS if run[1] != "lro"]
            for server_kind, client in turns:
                params = {
                    "client": client,
                    "count": size,
                    "idle": 0,
                    "rounds": 1,
                    "target": targets[server_kind],
                }
                result = run_client("waiters", params, timeout=300 + size / 100)
                _merge(results.setdefault((size, server_kind, client), {}), result)
        for server_kind, client in RUNS:
            result = results[size, server_kind, client]
            wakes = result["wakes"]

            def median(key: str, wakes: list[dict[str, Any]] = wakes) -> float:
                return statistics.median(float(w[key]) for w in wakes)

            table.rows.append(
                [
                    size,
                    LABELS[server_kind],
                    LABELS[client],
                    result["last_answered"],
                    median("half_answered"),
                    median("complete_seconds"),
                    median("server_cpu"),
                    median("client_cpu"),
                    result["failed"] + size - result["waiting_at_open"],
                    f"{statistics.median(w['gc']['client']['seconds'] for w in wakes):.2f}/"
                    f"{statistics.median(w['gc']['server']['seconds'] for w in wakes):.2f}",
                    " ".join(f"{w['last_answered']:.2f}" for w in wakes),
                ]
            )
            print(
                f"  wakeup {size} {server_kind}/{client}: last answered after "
                f"{result['last_answered']:.3f} s (median)",
                flush=True,
            )
    report.tables.append(table)
    report.data["runs"] = [
        {"ops": size, "server": server_kind, "client": client, **result}
        for (size, server_kind, client), result in results.items()
    ]
    size = max(sizes)
    note = "" if size == HEADLINE else f"target is set at {HEADLINE:,} waiters"

    def last(server_kind: str, client: str) -> float:
        return float(results[size, server_kind, client]["last_answered"])

    report.targets.append(
        Target(
            f"{size:,} simultaneous completions, last answered: lro_async / bare server",
            last("lro", "lro") / last("bare", "lro"),
            1.3,
            "max",
            "x",
            f"{last('lro', 'lro'):.3f} vs {last('bare', 'lro'):.3f} s, lro_async client; "
            f"{note}".strip("; "),
        )
    )
    report.targets.append(
        Target(
            f"{size:,} simultaneous completions, last answered: lro_async over the Watch "
            "stream / bare per-call stack (bare server, raw client)",
            last("lro-watch", "lro") / last("bare", "raw"),
            0.5,
            "max",
            "x",
            f"{last('lro-watch', 'lro'):.3f} vs {last('bare', 'raw'):.3f} s; {note}".strip("; "),
        )
    )
    report.notes.append(
        f"with raw grpc.aio clients: lro_async server {last('lro', 'raw'):.3f} s vs bare "
        f"{last('bare', 'raw'):.3f} s ({last('lro', 'raw') / last('bare', 'raw'):.2f}x); "
        f"the whole lro_async stack vs the whole bare stack: "
        f"{last('lro', 'lro') / last('bare', 'raw'):.2f}x"
    )
    return report
