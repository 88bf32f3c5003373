"""The pauses of CPython's cyclic garbage collector in this process, and windows of them.

A process installs one :class:`GcPauses`; its :meth:`~GcPauses.state` travels as JSON (a
server's in the Control service's ``Stats``), and :meth:`~GcPauses.window` and
:meth:`~GcPauses.since` read two states, or one, of any process.
"""

from __future__ import annotations

import gc
import math
import time
from typing import Any

__all__ = ["GcPauses"]


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
