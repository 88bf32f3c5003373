"""What a benchmark reports: its tables, its figures against their targets, its JSON.

Each benchmark's ``run()`` returns a :class:`Report`; ``python -m benchmarks`` prints it
and :func:`write_report` writes it, with the :func:`machine` it ran on, to
``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from .settings import RESULTS
from .tables import Table, cell

__all__ = ["Report", "Target", "machine", "write_report"]


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
                    None if t.value is None else f"{cell(t.value)} {t.unit}".strip(),
                    f"{sign} {cell(t.limit)} {t.unit}".strip(),
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
