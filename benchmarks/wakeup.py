"""Benchmark 4: wake-up throughput, versus the bare limit.

N waiters (10,000 by default) whose operations all finish at once: the server finishes
every operation in one go and the figure is the time from the start of that until the
client has the last answer (and half of them). The bare limit is a grpc.aio WaitOperation
handler awaiting a plain ``asyncio.Event`` per operation, on which the same client waits.
The runs with lro_async's client repeat open-then-finish three times on new operations,
taking turns in an order that rotates each round (:mod:`benchmarks.rounds`; the servers
stay up, a client process per turn) so that a change in the machine's load between
rounds lands on all of them; the figure is the median of each. The raw-client runs,
which only tell which side the time goes to, run once.

Runs (server, client): (lro_async with the Watch extension, lro_async): every wait on one
stream, against the whole bare per-call stack (bare, raw grpc.aio), the Watch target;
(lro_async, lro_async) against (bare, lro_async) is the per-call target;
(lro_async, raw grpc.aio) against (bare, raw) isolates the server with the least client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .processes import ServerProcess, run_client
from .reports import Report, Target
from .rounds import Figure, Rounds
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


def run(settings: Settings) -> Report:
    sizes = settings.sizes or ((2000,) if settings.quick else (HEADLINE,))
    rounds = settings.rounds_or(ROUNDS)
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
    runs: list[dict[str, Any]] = []
    lasts: dict[tuple[int, str, str], float] = {}
    for size in sizes:
        # The raw-client runs only attribute the time to a side: one round each.
        measured = Rounds([pair for pair in RUNS if pair[1] == "lro"], rounds)
        once = Rounds([pair for pair in RUNS if pair[1] != "lro"], 1)
        with (
            ServerProcess("lro-watch", count_rpcs=True) as watch,
            ServerProcess("lro", count_rpcs=True) as lro,
            ServerProcess("bare", count_rpcs=True) as bare,
        ):
            targets = {"lro-watch": watch.target, "lro": lro.target, "bare": bare.target}
            for turns in (measured, once):
                for round_, (server_kind, client) in turns:
                    params = {
                        "client": client,
                        "count": size,
                        "idle": 0,
                        "rounds": 1,
                        "target": targets[server_kind],
                    }
                    result = run_client("waiters", params, timeout=300 + size / 100)
                    turns.add(round_, (server_kind, client), result)
        for pair in RUNS:
            server_kind, client = pair
            turns = measured if pair in measured.contenders else once
            last_answered = lasts[size, server_kind, client] = turns.median(pair, "last_answered")
            failed = sum(turns.values(pair, "failed"))
            lost = int(failed + size - min(turns.values(pair, "waiting_at_open")))
            table.rows.append(
                [
                    size,
                    LABELS[server_kind],
                    LABELS[client],
                    last_answered,
                    turns.median(pair, _wake("half_answered")),
                    turns.median(pair, _wake("complete_seconds")),
                    turns.median(pair, _wake("server_cpu")),
                    turns.median(pair, _wake("client_cpu")),
                    lost,
                    f"{turns.median(pair, _wake('gc', 'client', 'seconds')):.2f}/"
                    f"{turns.median(pair, _wake('gc', 'server', 'seconds')):.2f}",
                    turns.spread(pair, "last_answered", ".2f"),
                ]
            )
            runs.append(
                {
                    "ops": size,
                    "server": server_kind,
                    "client": client,
                    "last_answered": last_answered,
                    "lost": lost,
                    "rounds": turns.of(pair),
                }
            )
            print(
                f"  wakeup {size} {server_kind}/{client}: last answered after "
                f"{last_answered:.3f} s (median)",
                flush=True,
            )
    report.tables.append(table)
    report.data["runs"] = runs
    size = max(sizes)
    note = "" if size == HEADLINE else f"target is set at {HEADLINE:,} waiters"

    def last(server_kind: str, client: str) -> float:
        return lasts[size, server_kind, client]

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


def _wake(*keys: str) -> Figure:
    """The figure at *keys* of a round's wake-up (a client run of one round has one)."""

    def figure(result: Mapping[str, Any]) -> float:
        [value] = result["wakes"]
        for key in keys:
            value = value[key]
        return float(value)

    return figure
