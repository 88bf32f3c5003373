"""The client of ``idle`` and ``wakeup``: opens N waits at once, idles, wakes them all.

``python -m benchmarks.waiters '<json>'`` with ``target``, ``client`` (``lro``: one task
per operation doing lro_async's ``await op``; ``raw``: one task per operation making a
plain grpc.aio WaitOperation call, reopened at once if the server refuses it), ``count``,
``idle`` (seconds; 0 skips the idle phase) and ``rounds`` (how many times phases 1, 2 and
5 are repeated, on new operations; memory and idle CPU are those of the first round).

Phases:

1. the server makes N operations; both processes' RSS is read (the baseline);
2. N waits are started at once; the phase ends when the server has N open;
3. after a second to settle, both RSS are read again: bytes per open wait;
4. idle: both processes' CPU over ``idle`` seconds of doing nothing;
5. the server finishes every operation in one go (``CompleteAll``): the time from its
   start until the client has the last answer, and until it has half of them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import statistics
import time
from typing import Any

import grpc
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from lro_async import AsyncOperationsClient

from .control import Control, Stats
from .gcpauses import GcPauses
from .percentiles import percentile
from .processes import client_main
from .resources import cpu_seconds, rss_bytes
from .settings import MESSAGE_OPTIONS

_LONG_POLL = 900  # seconds a raw wait asks for, as lro_async's default WaitPolicy does
_REFUSED = (
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


class _RetryCounter(logging.Handler):
    """Counts lro_async's "retrying ..." debug records: calls the server refused."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("retrying"):
            self.count += 1


class _Waits:
    """Opens one wait per operation name with lro_async or raw grpc.aio calls."""

    def __init__(self, channel: grpc.aio.Channel, kind: str) -> None:
        self.kind = kind
        self.refused = 0  # raw calls the server refused (reopened)
        self.lro = AsyncOperationsClient(channel)
        self._wait: grpc.aio.UnaryUnaryMultiCallable[
            operations_pb2.WaitOperationRequest, operations_pb2.Operation
        ] = channel.unary_unary(
            "/google.longrunning.Operations/WaitOperation",
            request_serializer=operations_pb2.WaitOperationRequest.SerializeToString,
            response_deserializer=operations_pb2.Operation.FromString,
        )

    def start(self, names: list[str], received: list[float]) -> list[asyncio.Task[None]]:
        """A task per name, noting ``time.time()`` in *received* when its answer is in."""
        wait = self._lro_wait if self.kind == "lro" else self._raw_wait
        return [asyncio.create_task(wait(name, received, i)) for i, name in enumerate(names)]

    async def _lro_wait(self, name: str, received: list[float], index: int) -> None:
        await self.lro.operation(name, result_type=wrappers_pb2.DoubleValue)
        received[index] = time.time()

    async def _raw_wait(self, name: str, received: list[float], index: int) -> None:
        request = operations_pb2.WaitOperationRequest(
            name=name, timeout=duration_pb2.Duration(seconds=_LONG_POLL)
        )
        while True:
            try:
                answer = await self._wait(request, timeout=_LONG_POLL + 2)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _REFUSED:
                    raise
                self.refused += 1
                await asyncio.sleep(0.05)  # the server is full: let it drain a little
                continue
            if answer.done:
                break
        received[index] = time.time()


async def _client(params: dict[str, Any]) -> dict[str, Any]:
    count, rounds = int(params["count"]), int(params.get("rounds", 1))
    retries = _RetryCounter()
    pauses = GcPauses().install()
    logger = logging.getLogger("lro_async")
    logger.addHandler(retries)
    logger.setLevel(logging.DEBUG)
    async with grpc.aio.insecure_channel(params["target"], options=MESSAGE_OPTIONS) as channel:
        control = Control(channel)
        waits = _Waits(channel, params["client"])
        result: dict[str, Any] = {"count": count, "failures": [], "failed": 0, "wakes": []}
        for round_ in range(rounds):
            names = await control.create(count)
            gc.collect()
            base, client_base = await control.stats(), rss_bytes()
            received = [0.0] * count
            opened_at = time.time()
            tasks = waits.start(names, received)
            opened, waiting = await _until_open(control, tasks, count)
            open_seconds = time.time() - opened_at
            await asyncio.sleep(1.0)
            gc.collect()
            open_stats, client_open = await control.stats(), rss_bytes()
            if round_ == 0:
                result |= {
                    "opened": opened,
                    "open_seconds": open_seconds,
                    "waiting_at_open": waiting,
                    "server_bytes_per_wait": (open_stats.rss - base.rss) / count,
                    "client_bytes_per_wait": (client_open - client_base) / count,
                    "server_rss": {"base": base.rss, "open": open_stats.rss},
                    "client_rss": {"base": client_base, "open": client_open},
                    "wait_calls_received": open_stats.rpcs_since(base).get("WaitOperation", 0),
                    "idle": await _idle(control, open_stats, float(params["idle"])),
                }
            else:
                result["waiting_at_open"] = min(result["waiting_at_open"], waiting)
            wake, failures = await _wake(control, tasks, received, pauses)
            result["wakes"].append(wake)
            result["failed"] += len(failures)
            result["failures"] = (result["failures"] + failures)[:5]
        await waits.lro.aclose()
    result["refused"] = waits.refused + retries.count
    lasts = [w["last_answered"] for w in result["wakes"] if w["last_answered"] is not None]
    result["last_answered"] = statistics.median(lasts) if lasts else None
    return result


async def _idle(control: Control, open_stats: Stats, seconds: float) -> dict[str, float]:
    """CPU of both sides over *seconds* of doing nothing but holding the waits open."""
    if seconds <= 0:
        return {}
    cpu_before = cpu_seconds()
    await asyncio.sleep(seconds)
    idle_stats = await control.stats()
    return {
        "seconds": seconds,
        "server_cpu": idle_stats.cpu - open_stats.cpu,
        "client_cpu": cpu_seconds() - cpu_before,
        "server_rpcs": sum(idle_stats.rpcs_since(open_stats).values()),
    }


async def _wake(
    control: Control, tasks: list[asyncio.Task[None]], received: list[float], pauses: GcPauses
) -> tuple[dict[str, Any], list[str]]:
    """Finish every operation at once; time the answers."""
    cpu_before, start_stats = cpu_seconds(), await control.stats()
    gc_before = pauses.state()
    start, end = await control.complete_all()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cpu_after, end_stats = cpu_seconds(), await control.stats()
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    answered = sorted(t - start for t in received if t)
    wake = {
        "complete_seconds": end - start,
        "half_answered": percentile(answered, 50),
        "last_answered": answered[-1] if answered else None,
        "answered": len(answered),
        "server_cpu": end_stats.cpu - start_stats.cpu,
        "client_cpu": cpu_after - cpu_before,
        "gc": {
            "client": {
                **GcPauses.window(gc_before, pauses.state()),
                **GcPauses.since(pauses.state(), start),
            },
            "server": {
                **GcPauses.window(start_stats.gc, end_stats.gc),
                **GcPauses.since(end_stats.gc, start),
            },
        },
    }
    return wake, failures


async def _until_open(
    control: Control, tasks: list[asyncio.Task[None]], count: int
) -> tuple[int, int]:
    """Wait until the server holds *count* open waits (or no task can open one any more)."""
    deadline = time.time() + 60 + count / 200
    while True:
        stats = await control.stats()
        alive = sum(not t.done() for t in tasks)
        if stats.waiting >= count or stats.waiting >= alive or time.time() > deadline:
            return alive, stats.waiting
        await asyncio.sleep(0.25)


if __name__ == "__main__":
    client_main(_client)
