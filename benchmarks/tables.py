"""Fixed-width tables of figures, as the benchmarks print them."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["Table", "cell"]


@dataclasses.dataclass
class Table:
    """Rows of figures with a title, printed as a fixed-width table."""

    title: str
    headers: list[str]
    rows: list[list[Any]] = dataclasses.field(default_factory=list)

    def render(self) -> str:
        cells = [self.headers, *([cell(v) for v in row] for row in self.rows)]
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


def cell(value: Any) -> str:
    """*value* as a table shows it: three significant-ish digits, ``-`` for none or NaN."""
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
