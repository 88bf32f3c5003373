"""What every benchmark shares: processes, resource figures, statistics, tables and JSON.

A benchmark's orchestration runs in the ``python -m benchmarks`` process, which only
starts processes and reads their answers. Servers run as ``python -m benchmarks.server``
(:class:`ServerProcess`), clients as ``python -m benchmarks.<module> '<json params>'``
(:func:`run_client`), each in its own process so that each side's CPU is its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import resource
import selectors
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Literal

__all__ = [
    "MESSAGE_OPTIONS",
    "GcPauses",
    "RESULTS",
    "Report",
    "ServerProcess",
    "Settings",
    "Table",
    "Target",
    "client_main",
    "cpu_seconds",
    "machine",
    "percentile",
    "rss_bytes",
    "run_client",
    "summary",
    "write_report",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

#: Channel and server options every benchmark process uses: 100,000 operation names fit
#: in one Control answer.
MESSAGE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
]

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The command line, as every benchmark sees it.

    :param quick: smaller sizes and shorter runs, for a smoke test of the benchmarks.
    :param sizes: the benchmark's sizes instead of its defaults (operations, or calls in
        flight for ``throughput``).
    :param rate: completions per second of ``notice``'s paced pattern.
    :param idle: seconds ``idle`` measures idle CPU over.
    :param api_core_max: the largest size google-api-core's polling is run at.
    """

    quick: bool = False
    sizes: tuple[int, ...] | None = None
    rate: float = 500.0
    idle: float = 10.0
    api_core_max: int = 10_000


# -- this process -------------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process so far, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process now, in bytes (Linux ``/proc``)."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


class GcPauses:
    """Every pause of CPython's cyclic garbage collector in this process (``gc.callbacks``).

    Pauses of at least ``threshold`` seconds are kept as ``(end as time.time(), generation,
    seconds)``; shorter ones are only counted and summed, per generation.
    """

    def __init__(self, threshold: float = 0.001) -> None:
        self.threshold = threshold
        self.pauses: list[tuple[float, int, float]] = []
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self._start = 0.0

    def install(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        seconds = time.perf_counter() - self._start
        generation = info["generation"]
        self.count[generation] += 1
        self.total[generation] += seconds
        if seconds >= self.threshold:
            self.pauses.append((time.time(), generation, seconds))

    def state(self) -> dict[str, Any]:
        return {"count": list(self.count), "total": list(self.total), "pauses": self.pauses}

    @staticmethod
    def window(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """Collections (per generation) and seconds spent between two :meth:`state` s."""
        return {
            "collections": [a - b for a, b in zip(after["count"], before["count"], strict=True)],
            "seconds": sum(after["total"]) - sum(before["total"]),
        }

    @staticmethod
    def since(state: dict[str, Any], start: float, end: float = math.inf) -> dict[str, Any]:
        """The longest pause, and every full collection's, ending in [*start*, *end*].

        Times are ``time.time()``; a pause is counted if it ends in the interval.
        """
        pauses = [p for p in state["pauses"] if start <= p[0] <= end]
        return {
            "max_ms": max((p[2] for p in pauses), default=0.0) * 1000,
            "gen2_ms": [round(p[2] * 1000, 1) for p in pauses if p[1] == 2],
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100) of *values*, nearest rank; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """p50, p99, max and mean of *values*, each multiplied by *scale*."""
    if not values:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan, "mean": math.nan}
    return {
        "p50": percentile(values, 50) * scale,
        "p99": percentile(values, 99) * scale,
        "max": max(values) * scale,
        "mean": sum(values) / len(values) * scale,
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),  # when the report was written: how noisy it was
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": version("grpcio"),
        "protobuf": version("protobuf"),
        "google-api-core": version("google-api-core"),
        "lro-async": version("lro-async"),
    }


# -- other processes ----------------------------------------------------------------------


def _environment() -> dict[str, str]:
    environment = dict(os.environ)
    path = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    return environment


class ServerProcess:
    """A ``python -m benchmarks.server`` process, started on entry and stopped on exit.

    :param kind: one of :data:`benchmarks.server.KINDS`.
    :param count_rpcs: count the Operations RPCs it receives (an interceptor, some cost).
    :param default_options: grpc's default server options instead of ``server_options()``.
    """

    def __init__(self, kind: str, *, count_rpcs: bool = False, default_options: bool = False):
        self.kind = kind
        self.args = [sys.executable, "-m", "benchmarks.server", "--kind", kind]
        if count_rpcs:
            self.args.append("--count-rpcs")
        if default_options:
            self.args.append("--default-options")
        self._process: subprocess.Popen[str] | None = None
        self.target = ""

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> ServerProcess:
        process = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._process = process
        assert process.stdout is not None
        line = _read_line(process.stdout, timeout=60.0)
        if not line.startswith("READY "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"server {self.kind} did not start: {line!r}")
        self.target = f"127.0.0.1:{int(line.split()[1])}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


def _read_line(stream: IO[str], timeout: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return "<timeout>"
    return stream.readline().strip()


def run_client(module: str, params: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Run ``python -m benchmarks.<module> '<params as JSON>'``; return the JSON it prints.

    :raises RuntimeError: the client failed or ran out of time (its stderr is in the error).
    """
    args = [sys.executable, "-m", f"benchmarks.{module}", json.dumps(params)]
    try:
        done = subprocess.run(
            args,
            cwd=ROOT,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"client {module} ran longer than {timeout:.0f} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"client {module} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def client_main(run: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
    """The ``__main__`` of a client module: params from argv[1], the result as JSON."""
    params = json.loads(sys.argv[1])
    from .otel import from_environment

    from_environment()

    async def main() -> dict[str, Any]:
        return await run(params)

    result = asyncio.run(main())
    print(json.dumps(result), flush=True)


# -- reports ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """A figure measured against the limit the issue sets for it.

    ``ratio`` is value / limit: at most 1 is a hit for ``"max"`` targets, at least 1 for
    ``"min"`` targets.
    """

    what: str
    value: float | None
    limit: float
    kind: Literal["max", "min"]
    unit: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or math.isnan(self.value):
            return None
        if self.limit == 0:
            return 0.0 if self.value == 0 else math.inf
        return self.value / self.limit

    @property
    def hit(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value <= self.limit if self.kind == "max" else self.value >= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "ratio": self.ratio,
            "hit": self.hit,
        }


@dataclasses.dataclass
class Table:
    """Rows of figures with a title, printed as a fixed-width table."""

    title: str
    headers: list[str]
    rows: list[list[Any]] = dataclasses.field(default_factory=list)

    def render(self) -> str:
        cells = [self.headers, *([_cell(v) for v in row] for row in self.rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.headers))]
        lines = [self.title]
        for index, row in enumerate(cells):
            lines.append(
                "  ".join(
                    c.rjust(w) if i else c.ljust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        if magnitude >= 0.01 or value == 0:
            return f"{value:.3f}"
        return f"{value:.2e}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclasses.dataclass
class Report:
    """What one benchmark measured: tables to print, targets, raw data for the JSON."""

    name: str
    params: dict[str, Any]
    tables: list[Table] = dataclasses.field(default_factory=list)
    targets: list[Target] = dataclasses.field(default_factory=list)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def targets_table(self) -> Table:
        table = Table(
            f"{self.name}: targets", ["target", "measured", "limit", "ratio", "hit", "note"]
        )
        for t in self.targets:
            sign = "<=" if t.kind == "max" else ">="
            table.rows.append(
                [
                    t.what,
                    None if t.value is None else f"{_cell(t.value)} {t.unit}".strip(),
                    f"{sign} {_cell(t.limit)} {t.unit}".strip(),
                    t.ratio,
                    "n/a" if t.hit is None else "HIT" if t.hit else "MISSED",
                    t.note,
                ]
            )
        return table

    def render(self) -> str:
        parts = [table.render() for table in self.tables]
        if self.targets:
            parts.append(self.targets_table().render())
        parts.extend(f"note: {note}" for note in self.notes)
        return "\n\n".join(parts)


def write_report(report: Report, started: datetime.datetime) -> Path:
    """Write *report* to ``benchmarks/results/<name>.json``; return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{report.name}.json"
    payload = {
        "benchmark": report.name,
        "date": started.isoformat(timespec="seconds"),
        "seconds": round(report.seconds, 1),
        "machine": machine(),
        "params": report.params,
        "targets": [t.as_dict() for t in report.targets],
        "tables": [dataclasses.asdict(t) for t in report.tables],
        "notes": report.notes,
        "data": report.data,
    }
    path.write_text(json.dumps(_finite(payload), indent=2, allow_nan=False) + "\n")
    return path


def _finite(value: Any) -> Any:
    """*value* with NaN and infinities replaced by None, which JSON can carry."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
