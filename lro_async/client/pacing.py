"""Pacing: how many RPCs one client has in flight, and how fast it opens long polls.

A grpc.aio server accepts about 1,700 new calls a second and refuses calls beyond its
pending queue with CANCELLED, so a client that opens 10,000 WaitOperation calls at once
loses thousands of them. Short RPCs (GetOperation polls, Cancel, Delete, List pages) are
bounded by a semaphore; long polls stay open for minutes, so they cannot hold a slot
while open and are rate-limited at opening instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["Pacer"]


class Pacer:
    """Bounds the short RPCs in flight and the rate of long-poll opens of one client.

    :param max_in_flight: most short RPCs in flight at once.
    :param opens_per_second: the sustained rate of long-poll opens.
    :param open_burst: how many opens may go at once before the rate applies.
    """

    def __init__(self, max_in_flight: int, opens_per_second: float, open_burst: int) -> None:
        # asyncio primitives bind to a loop on first use, not here.
        self._slots = asyncio.Semaphore(max_in_flight)
        self._opening = asyncio.Lock()  # FIFO: only the head of the queue sleeps
        self._rate = opens_per_second
        self._burst = float(open_burst)
        self._tokens = float(open_burst)  # a token bucket, refilled at _rate up to _burst
        self._refilled: float | None = None  # loop time of the last refill

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the short-RPC slots for the duration of the block."""
        async with self._slots:
            yield

    async def open(self) -> None:
        """Return when one more long poll may be opened.

        A caller cancelled while it waits takes nothing from the bucket, so abandoned
        waits (a batch that timed out) never delay the ones that come after.
        """
        async with self._opening:
            self._refill()
            if self._tokens < 1.0:
                await asyncio.sleep((1.0 - self._tokens) / self._rate)
                self._refill()
            self._tokens -= 1.0

    def _refill(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._refilled is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
