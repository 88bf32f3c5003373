"""Benchmark: the scale sweep, the Watch stream against per-operation WaitOperation.

At each size (1,000 / 10,000 / 100,000 awaited operations by default; ``--sizes`` for
others), both paths: ``watch`` (a server with the Watch extension, lro_async's client: every
wait on one stream) and ``wait`` (the same server without it: one WaitOperation per
operation). Two client processes per path and size, each against a fresh server:

- the ``waiters`` client (as ``idle``): N waits opened at once, then RSS of both processes
  per awaited operation, and their CPU over ``--idle-seconds`` (capped at 5 s here);
- the ``notice`` client (as ``notice``, paced): completion-to-notice p50/p99, and the CPU
  seconds of each process over the run divided by N (CPU per awaited operation), and the
  longest full garbage collection of each while the operations finished. The pace is
  ``--rate`` completions a second, raised so that one run finishes in 30 s.

The table is printed and drawn (``benchmarks/results/scale-<time>.png``, with matplotlib
from the ``bench`` dependency group; without it only the table is made). 100,000 takes
some 10 minutes and 6 GB on the per-operation path: run it on a quiet machine.
"""

from __future__ import annotations

import datetime
import importlib
from pathlib import Path
from typing import Any

from .notice import client_params
from .processes import ServerProcess, run_client
from .reports import Report, Target
from .settings import RESULTS, ROOT, Settings
from .tables import Table

NAME = "scale"
PATHS = {"watch": ("lro-watch", "watch"), "wait": ("lro", "long-poll")}
SIZES = (1000, 10_000, 100_000)
MAX_SPREAD = 30.0  # seconds over which one paced run finishes its operations


def run(settings: Settings) -> Report:
    sizes = settings.sizes or ((1000,) if settings.quick else SIZES)
    idle = min(settings.idle, 5.0)
    report = Report(NAME, {"sizes": list(sizes), "paths": list(PATHS), "idle_seconds": idle})
    table = Table(
        "scale: per awaited operation, the Watch stream vs WaitOperation per operation",
        [
            "ops",
            "path",
            "client KB/op",
            "server KB/op",
            "notice p50 ms",
            "notice p99 ms",
            "client CPU µs/op",
            "server CPU µs/op",
            "idle CPU % c/s",
            "full GC max ms c/s",
            "lost",
        ],
    )
    rows: list[dict[str, Any]] = []
    for size in sizes:
        for path, (server_kind, notice_client) in PATHS.items():
            row = _measure(size, server_kind, notice_client, settings.rate, idle)
            row.update(ops=size, path=path)
            rows.append(row)
            table.rows.append(
                [
                    size,
                    path,
                    row["client_kb"],
                    row["server_kb"],
                    row["p50"],
                    row["p99"],
                    row["client_us"],
                    row["server_us"],
                    f"{row['client_idle']:.2f}/{row['server_idle']:.2f}",
                    f"{row['client_gc2_ms']:.0f}/{row['server_gc2_ms']:.0f}",
                    row["lost"],
                ]
            )
            print(
                f"  scale {size} {path}: {row['client_kb']:.1f}/{row['server_kb']:.1f} KB/op, "
                f"p99 {row['p99']:.1f} ms",
                flush=True,
            )
    report.tables.append(table)
    report.data["rows"] = rows
    for row in rows:
        if row["path"] == "watch":
            report.targets += [
                Target(
                    f"client memory per awaited op, Watch stream ({row['ops']:,})",
                    row["client_kb"],
                    3.0,
                    "max",
                    "KB",
                ),
                Target(
                    f"server memory per awaited op, Watch stream ({row['ops']:,})",
                    row["server_kb"],
                    3.0,
                    "max",
                    "KB",
                ),
                Target(
                    f"longest full GC while finishing, client, Watch stream ({row['ops']:,})",
                    row["client_gc2_ms"],
                    50.0,
                    "max",
                    "ms",
                ),
            ]
    picture = _plot(rows)
    if picture is not None:
        report.notes.append(f"plot: {picture.relative_to(ROOT)}")
    else:
        report.notes.append("no plot: matplotlib is not installed (the bench group has it)")
    return report


def _measure(
    size: int, server_kind: str, notice_client: str, rate: float, idle: float
) -> dict[str, Any]:
    params: dict[str, Any] = {"client": "lro", "count": size, "idle": idle}
    with ServerProcess(server_kind, count_rpcs=True) as server:
        params["target"] = server.target
        waiting = run_client("waiters", params, timeout=300 + size / 100 + idle)
    spread = min(max(1.0, size / rate), MAX_SPREAD)
    notice_params = client_params(notice_client, size, spread)
    limit = notice_params["limit"]
    with ServerProcess(server_kind, count_rpcs=True) as server:
        notice_params["target"] = server.target
        noticed = run_client("notice", notice_params, timeout=limit + 120)
    seconds = waiting["idle"]["seconds"] or 1.0
    return {
        "client_kb": waiting["client_bytes_per_wait"] / 1024,
        "server_kb": waiting["server_bytes_per_wait"] / 1024,
        "p50": noticed["notice_ms"]["p50"],
        "p99": noticed["notice_ms"]["p99"],
        "client_us": noticed["client_cpu"] / size * 1e6,
        "server_us": noticed["server_cpu"] / size * 1e6,
        "client_idle": waiting["idle"]["client_cpu"] / seconds * 100,
        "server_idle": waiting["idle"]["server_cpu"] / seconds * 100,
        # The longest full collection of each process while the paced run finished.
        "client_gc2_ms": max(noticed["gc"]["client_finishing"]["gen2_ms"], default=0.0),
        "server_gc2_ms": max(noticed["gc"]["server_finishing"]["gen2_ms"], default=0.0),
        "lost": int(waiting["failed"])
        + size
        - int(waiting["waiting_at_open"])
        + int(noticed["failed"])
        + int(noticed["unfinished"]),
        "rate_per_s": size / spread,
    }


def _plot(rows: list[dict[str, Any]]) -> Path | None:
    """Draw memory, p99 and CPU per op against size, one line per path."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ModuleNotFoundError:
        return None
    matplotlib.use("Agg")
    pyplot: Any = importlib.import_module("matplotlib.pyplot")
    figure, axes = pyplot.subplots(1, 3, figsize=(15, 4.5))
    panels = (
        ("memory per awaited op (KB)", ("client_kb", "client"), ("server_kb", "server")),
        ("notice latency (ms)", ("p50", "p50"), ("p99", "p99")),
        ("CPU per awaited op (µs)", ("client_us", "client"), ("server_us", "server")),
    )
    for axis, (title, *series) in zip(axes, panels, strict=True):
        for kind in PATHS:
            mine = sorted((r for r in rows if r["path"] == kind), key=lambda r: r["ops"])
            for key, label in series:
                axis.plot(
                    [r["ops"] for r in mine],
                    [r[key] for r in mine],
                    marker="o",
                    linestyle="-" if key == series[0][0] else "--",
                    label=f"{kind}: {label}",
                )
        axis.set_xscale("log")
        axis.set_xlabel("awaited operations")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("lro_async: Watch stream vs WaitOperation per operation")
    figure.tight_layout()
    directory = RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"scale-{stamp}.png"
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
