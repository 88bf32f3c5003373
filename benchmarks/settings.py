"""How the benchmarks are set up: the command line, the gRPC message limits, the paths.

:class:`Settings` is what ``python -m benchmarks`` was asked for, as every benchmark's
``run()`` sees it; :data:`MESSAGE_OPTIONS` are the channel and server options of every
benchmark process; :data:`ROOT` is where processes run, :data:`RESULTS` where reports go.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

__all__ = ["MESSAGE_OPTIONS", "RESULTS", "ROOT", "Settings"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

#: Channel and server options every benchmark process uses: 100,000 operation names fit
#: in one Control answer.
MESSAGE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
]


@dataclasses.dataclass(frozen=True)
class Settings:
    """The command line, as every benchmark sees it.

    :param quick: smaller sizes and shorter runs, for a smoke test of the benchmarks.
    :param sizes: the benchmark's sizes instead of its defaults (operations, or calls in
        flight for ``throughput``).
    :param rate: completions per second of ``notice``'s paced pattern.
    :param idle: seconds ``idle`` measures idle CPU over.
    :param api_core_max: the largest size google-api-core's polling is run at.
    :param rounds: rounds of the benchmarks that alternate what they compare (otel,
        throughput, wakeup) instead of their defaults: more for a noisy machine.
    """

    quick: bool = False
    sizes: tuple[int, ...] | None = None
    rate: float = 500.0
    idle: float = 10.0
    api_core_max: int = 10_000
    rounds: int | None = None

    def rounds_or(self, default: int, quick: int = 1) -> int:
        """The rounds to run: ``--rounds`` if given, else *quick* or *default*."""
        if self.rounds is not None:
            return self.rounds
        return quick if self.quick else default
