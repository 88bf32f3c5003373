"""Backoff: how long to sleep between polls and retries. Pure: no I/O, no clock."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator

__all__ = ["Backoff"]


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """An exponential backoff policy with optional full jitter.

    The n-th delay (from 0) is ``min(initial * multiplier**n, maximum)``; with ``jitter`` each
    delay is drawn uniformly from ``[0, that]`` ("full jitter"), which spreads thousands of
    pollers over time instead of letting them poll in lockstep.

    >>> from itertools import islice
    >>> list(islice(Backoff(initial=1.0, multiplier=2.0, maximum=5.0, jitter=False).delays(), 5))
    [1.0, 2.0, 4.0, 5.0, 5.0]
    >>> list(islice(Backoff.instant().delays(), 3))
    [0.0, 0.0, 0.0]

    :param initial: the first delay in seconds (>= 0).
    :param multiplier: the growth factor per attempt (>= 1).
    :param maximum: the largest delay in seconds (>= initial).
    :param jitter: draw each delay uniformly from zero up to its nominal value.
    """

    initial: float = 1.0
    multiplier: float = 1.5
    maximum: float = 20.0
    jitter: bool = True

    def __post_init__(self) -> None:
        for field in ("initial", "multiplier", "maximum"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"Backoff.{field} must be a number, not {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"Backoff.{field} must be finite, not {value!r}")
        if self.initial < 0:
            raise ValueError(f"Backoff.initial must be >= 0, not {self.initial!r}")
        if self.multiplier < 1:
            raise ValueError(f"Backoff.multiplier must be >= 1, not {self.multiplier!r}")
        if self.maximum < self.initial:
            raise ValueError(
                f"Backoff.maximum ({self.maximum!r}) must be >= initial ({self.initial!r})"
            )

    @classmethod
    def instant(cls) -> Backoff:
        """A policy that never sleeps: for tests."""
        return cls(initial=0.0, multiplier=1.0, maximum=0.0, jitter=False)

    def delays(self) -> Iterator[float]:
        """Yield the delays of successive attempts, forever."""
        nominal = self.initial
        while True:
            yield random.uniform(0.0, nominal) if self.jitter else nominal
            nominal = min(nominal * self.multiplier, self.maximum)
