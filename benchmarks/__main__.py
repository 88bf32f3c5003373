"""``python -m benchmarks [--quick] [--only NAME ...] [--sizes N ...]``: run, print, write JSON.

The default sizes finish in under 10 minutes on a 2-core machine; ``--quick`` is a smoke
test of a minute or two; bigger sizes are asked for with ``--sizes`` (e.g.
``--only idle --sizes 100000``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable

from . import batch, idle, notice, otel, scale, throughput, wakeup
from .reports import Report, write_report
from .settings import Settings
from .tables import Table

BENCHMARKS: dict[str, Callable[[Settings], Report]] = {
    notice.NAME: notice.run,
    throughput.NAME: throughput.run,
    idle.NAME: idle.run,
    wakeup.NAME: wakeup.run,
    scale.NAME: scale.run,
    batch.NAME: batch.run,
    otel.NAME: otel.run,
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parse(argv: list[str] | None) -> tuple[list[str], Settings]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="lro_async benchmarks (JSON to benchmarks/results/)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        metavar="N",
        help="sizes instead of the defaults: operations (notice, idle, wakeup, scale, batch) "
        "or calls in flight (throughput)",
    )
    parser.add_argument(
        "--rate", type=float, default=Settings.rate, help="notice: paced completions per second"
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=Settings.idle,
        help="idle: seconds idle CPU is measured over",
    )
    parser.add_argument(
        "--api-core-max",
        type=int,
        default=Settings.api_core_max,
        help="notice: the largest size google-api-core's polling is run at",
    )
    parser.add_argument(
        "--rounds",
        type=_positive,
        metavar="N",
        help="otel, throughput, wakeup: rounds instead of the defaults (more on a noisy machine)",
    )
    args = parser.parse_args(argv)
    settings = Settings(
        quick=args.quick,
        sizes=tuple(args.sizes) if args.sizes else None,
        rate=args.rate,
        idle=args.idle_seconds,
        api_core_max=args.api_core_max,
        rounds=args.rounds,
    )
    return args.only or list(BENCHMARKS), settings


def main(argv: list[str] | None = None) -> int:
    names, settings = _parse(argv)
    started = time.perf_counter()
    reports: list[Report] = []
    for name in names:
        print(f"== {name}", flush=True)
        began = datetime.datetime.now(datetime.UTC)
        clock = time.perf_counter()
        report = BENCHMARKS[name](settings)
        report.seconds = time.perf_counter() - clock
        path = write_report(report, began)
        print(report.render(), flush=True)
        print(f"({name}: {report.seconds:.0f} s; {path})\n", flush=True)
        reports.append(report)
    total = time.perf_counter() - started
    summary = Table("all targets", ["benchmark", "target", "measured", "limit", "ratio", "hit"])
    for report in reports:
        for row in report.targets_table().rows:
            summary.rows.append([report.name, *row[:5]])
    print(summary.render())
    print(f"\nwhole run: {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
