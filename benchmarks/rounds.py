"""Repeated rounds: every contender measured once a round, the order rotating.

A figure compared between contenders (servers, telemetry modes, ...) is measured over
several rounds; each round measures every contender back to back, and the order rotates
from one round to the next (a, b, c; b, c, a; c, a, b), so that a change in the
machine's load lands on all of them and none is always first or last. The figures are
the median over the rounds, and a ratio between two contenders is the median of each
round's ratio, since the contenders of one round are measured seconds apart.

For example, two servers over three rounds::

    measured = Rounds(("lro", "bare"), rounds=3)
    for round_, server in measured:  # lro, bare; bare, lro; lro, bare
        measured.add(round_, server, {"calls_per_s": measure(server)})
    measured.median("lro", "calls_per_s"), measured.ratio("lro", "bare", "calls_per_s")
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["Figure", "Rounds", "rotation"]

C = TypeVar("C", bound=Hashable)

#: A figure of one round's result: a key of it, or a function of it.
Figure = str | Callable[[Mapping[str, Any]], float]


def rotation(contenders: Sequence[C], round_: int) -> list[C]:
    """The order of *contenders* in round *round_*: rotated left by *round_*."""
    shift = round_ % len(contenders)
    return [*contenders[shift:], *contenders[:shift]]


class Rounds(Generic[C]):
    """Each contender's results, round by round.

    Iterating gives ``(round, contender)`` in the order to measure them; :meth:`add`
    keeps a result. Results may also come from elsewhere (a client process that ran the
    rounds itself with :func:`rotation`), added in any order.
    """

    def __init__(self, contenders: Sequence[C], rounds: int) -> None:
        self.contenders = tuple(contenders)
        self.rounds = rounds
        self._results: dict[C, dict[int, Mapping[str, Any]]] = {c: {} for c in contenders}

    def __iter__(self) -> Iterator[tuple[int, C]]:
        for round_ in range(self.rounds):
            for contender in rotation(self.contenders, round_):
                yield round_, contender

    def add(self, round_: int, contender: C, result: Mapping[str, Any]) -> None:
        self._results[contender][round_] = result

    def of(self, contender: C) -> list[Mapping[str, Any]]:
        """The results of *contender*, in round order."""
        results = self._results[contender]
        return [results[r] for r in sorted(results)]

    def values(self, contender: C, figure: Figure) -> list[float]:
        """*figure* of each of *contender*'s results, in round order."""
        read = _reader(figure)
        return [read(result) for result in self.of(contender)]

    def median(self, contender: C, figure: Figure) -> float:
        """The median of *figure* over *contender*'s rounds."""
        return statistics.median(self.values(contender, figure))

    def ratio(self, contender: C, baseline: C, figure: Figure) -> float:
        """The median over the rounds of *contender*'s *figure* / *baseline*'s."""
        read = _reader(figure)
        ours, theirs = self._results[contender], self._results[baseline]
        return statistics.median(read(ours[r]) / read(theirs[r]) for r in sorted(ours))

    def spread(self, contender: C, figure: Figure, spec: str) -> str:
        """*figure* of every round, formatted with *spec* (``".1f"``), in round order."""
        return " ".join(format(value, spec) for value in self.values(contender, figure))


def _reader(figure: Figure) -> Callable[[Mapping[str, Any]], float]:
    if isinstance(figure, str):
        return lambda result: float(result[figure])
    return figure
