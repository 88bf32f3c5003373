"""Load and faults on a real server, over loopback; every test stops by itself.

- A soak: ten thousand operations awaited through lro_async's client at once, finished
  in random order while a steady stream of other operations is started, completed,
  failed and cancelled, for ``LRO_ASYNC_SOAK_SECONDS`` (default 60) in two equal rounds.
  Every waiter gets the state the store recorded, nothing is left behind after a round,
  and the second round ends with no more objects and about the same memory as the first.
- A thousand clients leaving mid-wait (connections dropped, awaiting tasks cancelled):
  the server lets go of every wait.
- Cancel, complete and fail racing from many tasks: one end per operation, written once.
- SIGTERM to ``lro-async serve --store sqlite:///...`` under load: health NOT_SERVING while
  it drains, waiters answered at once, and after a restart every acknowledged operation
  is there and finished.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import os
import random
import resource
import signal
import statistics
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import wrappers_pb2
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

import lro_async
from lro_async.errors import status_code
from lro_async.stores import MemoryStore, Written
from lro_async.testing import Served, serve

from ..interop.test_restart import (
    CREATORS,
    PARENT,
    RESTARTED,
    Observed,
    _create,
    _watch,
    demo_stub,
    list_all,
    operations_stub,
)
from ..interop.test_restart import serve as serve_cli
from ..waiting import until
from .rpc import wait_request

SOAK_SECONDS = float(os.environ.get("LRO_ASYNC_SOAK_SECONDS", "60"))
HELD = 10_000
STREAM_PER_SECOND = 40.0
ABORTED = grpc.StatusCode.ABORTED
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


Seen = tuple[Any, ...]


async def outcome_of(op: lro_async.AsyncOperation[wrappers_pb2.Int64Value, Any]) -> Seen:
    """What a client sees when it awaits *op*: its value, or how it failed."""
    try:
        return ("value", (await op).value)
    except lro_async.OperationCancelled:
        return ("cancelled",)
    except lro_async.OperationFailed as exc:
        return ("failed", exc.code, exc.message)


def recorded(operation: operations_pb2.Operation) -> Seen:
    """The same, from the operation as the store recorded it."""
    assert operation.done and operation.HasField("response") != operation.HasField("error")
    if operation.HasField("response"):
        value = wrappers_pb2.Int64Value()
        assert operation.response.Unpack(value)
        return ("value", value.value)
    if operation.error.code == grpc.StatusCode.CANCELLED.value[0]:
        return ("cancelled",)
    return ("failed", status_code(operation.error.code), operation.error.message)


# -- the soak ----------------------------------------------------------------------------


@dataclasses.dataclass
class Round:
    """What one round did and what it left."""

    seconds: float = 0.0
    open_seconds: float = 0.0  # until all HELD waits were open on the server
    peak_waiting: int = 0  # WaitOperation calls open at once on the server
    held_open: int = 0  # of them, held ones, once all were open
    held_answered: int = 0
    stream_started: int = 0
    stream_answered: int = 0
    cancels_sent: int = 0
    latencies: list[float] = dataclasses.field(default_factory=list)  # finish -> answer
    rss_mb: float = 0.0
    objects: int = 0


class Stream:
    """A steady stream of operations: started, then completed, failed or cancelled."""

    def __init__(
        self,
        manager: lro_async.OperationManager,
        client: lro_async.AsyncOperationsClient,
        rng: random.Random,
        stats: Round,
    ) -> None:
        self.manager, self.client, self.rng, self.stats = manager, client, rng, stats
        self.names: list[str] = []
        self.followers: set[asyncio.Task[None]] = set()

    def following(self) -> int:
        return sum(not follower.done() for follower in self.followers)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while not stop.is_set():
            await self._start_one()
            due += 1 / STREAM_PER_SECOND
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def _start_one(self) -> None:
        index = len(self.names)
        plan = self.rng.choice(("complete", "fail", "cancel"))
        delay, cancel_after = self.rng.uniform(0, 0.3), self.rng.uniform(0, 0.3)

        async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.Int64Value:
            await asyncio.sleep(delay)
            if plan == "fail":
                raise lro_async.OperationFailed(FAILED_PRECONDITION, f"stream {index}")
            return wrappers_pb2.Int64Value(value=index)

        op = await self.manager.start(work, parent="projects/stream")
        self.names.append(op.name)
        self.stats.stream_started += 1
        follower = asyncio.create_task(self._follow(op.name, index, plan, cancel_after))
        self.followers.add(follower)

    async def _follow(self, name: str, index: int, plan: str, cancel_after: float) -> None:
        op = self.client.operation(name, result_type=wrappers_pb2.Int64Value)
        seen = asyncio.create_task(outcome_of(op))
        if plan == "cancel":
            await asyncio.sleep(cancel_after)
            await self.client.cancel_operation(name)
            self.stats.cancels_sent += 1
        got = await seen
        truth = recorded(await self.manager.get(name))
        assert got == truth, (name, got, truth)
        allowed: dict[str, list[Seen]] = {
            "complete": [("value", index)],
            "fail": [("failed", FAILED_PRECONDITION, f"stream {index}")],
            "cancel": [("value", index), ("cancelled",)],
        }
        assert truth in allowed[plan], (plan, truth)
        self.stats.stream_answered += 1


def _held_plan(index: int) -> Seen:
    return [("value", index), ("failed", ABORTED, f"held {index}"), ("cancelled",)][index % 3]


async def _finish_held(manager: lro_async.OperationManager, name: str, index: int) -> None:
    match index % 3:
        case 0:
            assert await manager.complete(name, wrappers_pb2.Int64Value(value=index))
        case 1:
            assert await manager.fail(name, ABORTED, f"held {index}")
        case _:
            assert await manager.cancel(name)


async def soak_round(
    served: Served,
    held_client: lro_async.AsyncOperationsClient,
    stream_client: lro_async.AsyncOperationsClient,
    seconds: float,
    seed: int,
) -> Round:
    loop = asyncio.get_running_loop()
    manager, servicer = served.manager, served.servicer
    await manager.open()  # its background tasks belong to it, not to the round
    baseline = set(asyncio.all_tasks())
    stats, rng, stop = Round(), random.Random(seed), asyncio.Event()
    started = loop.time()

    async def sample() -> None:
        while True:
            stats.peak_waiting = max(stats.peak_waiting, servicer.waiting)
            await asyncio.sleep(0.05)

    stream = Stream(manager, stream_client, rng, stats)
    churn = asyncio.create_task(stream.run(stop))
    sampler = asyncio.create_task(sample())
    held: list[asyncio.Task[tuple[Seen, float]]] = []
    try:
        names = [(await manager.create(parent="projects/soak")).name for _ in range(HELD)]

        async def hold(index: int) -> tuple[Seen, float]:
            op = held_client.operation(names[index], result_type=wrappers_pb2.Int64Value)
            seen = await outcome_of(op)
            return seen, loop.time()

        def all_held() -> bool:
            # The stream has at most one wait open per operation it still follows.
            return servicer.waiting - stream.following() >= HELD

        held += [asyncio.create_task(hold(index)) for index in range(HELD)]
        await until(all_held, f"{HELD} held waits open", timeout=seconds + 60)
        stats.open_seconds = loop.time() - started
        stats.held_open = servicer.waiting - stream.following()

        # Finish the held operations in random order, evenly over what is left of the round.
        order = list(range(HELD))
        rng.shuffle(order)
        window = max(started + seconds - 6.0 - loop.time(), 3.0)  # time left to answer
        begin, batch, finished_at = loop.time(), 50, [0.0] * HELD
        for first in range(0, HELD, batch):
            await asyncio.sleep(max(0.0, begin + window * first / HELD - loop.time()))
            for index in order[first : first + batch]:
                await _finish_held(manager, names[index], index)
                finished_at[index] = loop.time()
        answers = await asyncio.wait_for(asyncio.gather(*held), timeout=60)
        for index, (seen, answered_at) in enumerate(answers):
            assert seen == _held_plan(index), (index, seen)
            stats.latencies.append(answered_at - finished_at[index])
        stats.held_answered = len(answers)

        await asyncio.sleep(max(0.0, started + seconds - loop.time()))
        stop.set()
        await churn
        await asyncio.wait_for(asyncio.gather(*stream.followers), timeout=60)
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        stats.seconds = loop.time() - started
    finally:  # on a failure too: the round ends what it started
        stop.set()
        pending = [churn, sampler, *held, *stream.followers]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # Nothing left behind: no open call, no watched operation, no running work, no task.
    await until(lambda: servicer.waiting == 0, "servicer.waiting == 0")
    await until(lambda: manager.watched == 0, "manager.watched == 0")
    await until(lambda: manager.running == 0, "manager.running == 0")
    current = asyncio.current_task()

    def leftovers() -> list[str]:
        return sorted(
            repr(task)
            for task in asyncio.all_tasks() - baseline
            if task is not current and not _is_grpc_accept_loop(task)
        )

    await until(
        lambda: not leftovers(), "no task left from the round", details=lambda: leftovers()[:20]
    )
    for name in names + stream.names:
        await manager.delete(name)
    assert (await manager.list())[0] == []
    del held, answers
    stream.followers.clear()
    gc.collect()
    stats.rss_mb, stats.objects = rss_mb(), len(gc.get_objects())
    return stats


def _is_grpc_accept_loop(task: asyncio.Task[Any]) -> bool:
    """grpc.aio's server always has one task waiting for the next call, renewed per call."""
    return "AioServer._request_call" in getattr(task.get_coro(), "__qualname__", "")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.mark.slow
@pytest.mark.timeout(int(SOAK_SECONDS * 2 + 180))
async def test_ten_thousand_waiters_under_churn_all_get_their_end_and_memory_stays_flat(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with (
        serve(watch=False) as served,  # WaitOperation calls, one per wait
        lro_async.AsyncOperationsClient(served.channel) as held_client,
        lro_async.AsyncOperationsClient(served.channel) as stream_client,
    ):
        first = await soak_round(served, held_client, stream_client, SOAK_SECONDS / 2, seed=1)
        second = await soak_round(served, held_client, stream_client, SOAK_SECONDS / 2, seed=2)

    with capsys.disabled():
        for number, stats in enumerate((first, second), 1):
            finished = stats.held_answered + stats.stream_answered
            print(
                f"\nsoak round {number}: {stats.seconds:.1f}s, {stats.held_open} held waits "
                f"open after {stats.open_seconds:.1f}s (peak {stats.peak_waiting} "
                f"WaitOperation calls open); {stats.stream_started} streamed "
                f"({stats.stream_started / stats.seconds:.0f}/s started, "
                f"{stats.cancels_sent} cancels sent); {finished} finished and answered "
                f"({finished / stats.seconds:.0f}/s); finish->answer p50 "
                f"{statistics.median(stats.latencies) * 1000:.0f} ms, p99 "
                f"{_percentile(stats.latencies, 0.99) * 1000:.0f} ms, max "
                f"{max(stats.latencies) * 1000:.0f} ms; RSS after {stats.rss_mb:.0f} MB, "
                f"{stats.objects} objects"
            )
        print(f"soak: peak RSS {peak_rss_mb():.0f} MB")

    for stats in (first, second):
        assert stats.held_answered == HELD
        assert stats.stream_answered == stats.stream_started > 0
        assert stats.held_open >= HELD
        # Long polls last 900 s: an answer long after its finish would be a lost wake-up.
        assert max(stats.latencies) < 30
    assert second.objects - first.objects < 2_000, "objects left over by a round"
    assert second.rss_mb - first.rss_mb < 64, "memory grows round after round"


# -- clients leaving mid-wait ------------------------------------------------------------


async def test_a_thousand_clients_leaving_mid_wait_leave_nothing_behind() -> None:
    async with serve(watch=False) as served:  # WaitOperation calls, one per wait
        manager = served.manager
        ops = [(await manager.create(parent="projects/leave")).name for _ in range(100)]
        before = [await manager.get(name) for name in ops]
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel
        channels = [grpc.aio.insecure_channel(served.target, options=options) for _ in range(50)]
        raw_calls: list[Awaitable[operations_pb2.Operation]] = []
        for number, channel in enumerate(channels[:25]):
            stub = operations_pb2_grpc.OperationsStub(channel)
            raw_calls += [
                stub.WaitOperation(wait_request(ops[(number * 20 + k) % 100], 60), timeout=90)
                for k in range(20)
            ]
        clients = [lro_async.AsyncOperationsClient(channel) for channel in channels[25:]]
        awaiting = [
            asyncio.create_task(client.operation(ops[(number * 20 + k) % 100]).result())
            for number, client in enumerate(clients)
            for k in range(20)
        ]
        await until(lambda: served.servicer.waiting == 1000, "1000 waits open", timeout=30)
        assert manager.watched == 100

        # All at once: 25 connections dropped with their calls, 500 awaiting tasks cancelled.
        loop = asyncio.get_running_loop()
        left = loop.time()
        for task in awaiting:
            task.cancel()
        await asyncio.gather(*(channel.close() for channel in channels[:25]))
        await asyncio.gather(*awaiting, return_exceptions=True)
        for client, channel in zip(clients, channels[25:], strict=True):
            await client.aclose()
            await channel.close()
        await until(lambda: served.servicer.waiting == 0, "servicer.waiting == 0")
        await until(lambda: manager.watched == 0, "manager.watched == 0")
        cleaned = loop.time() - left
        results = await asyncio.gather(*raw_calls, return_exceptions=True)
        assert all(isinstance(r, BaseException) for r in results), "no call was answered"

        assert [await manager.get(name) for name in ops] == before, "leaving changed nothing"
        stub = operations_pb2_grpc.OperationsStub(served.channel)
        call = stub.WaitOperation(wait_request(ops[0], 30), timeout=40)
        await until(lambda: manager.watched == 1, "a new wait is open")
        await manager.complete(ops[0], wrappers_pb2.Int64Value(value=1))
        assert (await call).done, "the server still serves waits"
    print(f"\n1000 waits dropped by 50 clients: the server let go of all in {cleaned:.2f}s")


# -- cancel racing complete ----------------------------------------------------------------


class CountingStore(MemoryStore):
    """Counts each operation's applied finishes; yields first, so racers interleave."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: collections.Counter[str] = collections.Counter()
        self.refused = 0

    async def finish(
        self,
        name: str,
        update_time: int,
        *,
        response: Any = None,
        error: status_pb2.Status | None = None,
    ) -> Written | None:
        await asyncio.sleep(0)
        written = await super().finish(name, update_time, response=response, error=error)
        if written is not None:
            if written.applied:
                self.applied[name] += 1
            else:
                self.refused += 1
        return written


async def test_cancel_complete_and_fail_racing_from_many_tasks_end_each_operation_once() -> None:
    store = CountingStore()
    rng = random.Random(6)
    async with serve(lro_async.OperationManager(store=store)) as served:
        manager = served.manager
        stub = operations_pb2_grpc.OperationsStub(served.channel)

        async def race(name: str, kind: str, index: int) -> tuple[str, int, Any]:
            await asyncio.sleep(rng.uniform(0, 0.005))
            if kind == "complete":
                return (
                    kind,
                    index,
                    await manager.complete(name, wrappers_pb2.Int64Value(value=index)),
                )
            if kind == "fail":
                return kind, index, await manager.fail(name, ABORTED, f"racer {index}")
            if kind == "cancel":
                return kind, index, await manager.cancel(name)
            if kind == "rpc-cancel":
                request = operations_pb2.CancelOperationRequest(name=name)
                return kind, index, await stub.CancelOperation(request, timeout=10)
            return kind, index, await stub.WaitOperation(wait_request(name, 30), timeout=40)

        # Operations finished by hand: four kinds of finish, three racers of each, and waiters.
        hand = [(await manager.create(parent="projects/race")).name for _ in range(200)]
        kinds = ["complete", "fail", "cancel", "rpc-cancel", "wait"] * 3
        jobs = []
        for name in hand:
            rng.shuffle(kinds)
            jobs.append(asyncio.gather(*(race(name, k, i) for i, k in enumerate(kinds))))
        for name, results in zip(hand, await asyncio.gather(*jobs), strict=True):
            final = await manager.get(name)
            assert store.applied[name] == 1, name
            won = [(kind, i) for kind, i, applied in results if applied is True]
            assert len(won) <= 1, won
            if final.HasField("response"):
                assert won and won[0][0] == "complete"
                assert recorded(final) == ("value", won[0][1])
            elif final.error.code == ABORTED.value[0]:
                assert won and won[0][0] == "fail"
                assert final.error.message == f"racer {won[0][1]}"
            else:
                assert final.error.code == grpc.StatusCode.CANCELLED.value[0]
                assert all(kind == "cancel" for kind, _ in won), won  # or a CancelOperation
            waits = [result for kind, _, result in results if kind == "wait"]
            assert waits and all(w == final for w in waits), "every waiter saw the one end"

        # Running operations whose work ends just as the cancels arrive.
        finished_work: dict[str, bool] = {}

        def make_work(
            seconds: float,
        ) -> Callable[[lro_async.OperationContext], Awaitable[wrappers_pb2.Int64Value]]:
            async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.Int64Value:
                await asyncio.sleep(seconds)
                finished_work[ctx.name] = True
                return wrappers_pb2.Int64Value(value=7)

            return work

        started = [
            (await manager.start(make_work(rng.uniform(0, 0.01)), parent="projects/race")).name
            for _ in range(100)
        ]
        await asyncio.gather(
            *(
                race(name, kind, i)
                for name in started
                for i, kind in enumerate(["cancel", "rpc-cancel", "cancel", "rpc-cancel", "wait"])
            )
        )
        await until(lambda: manager.running == 0, "every task has ended")
        for name in started:
            final = await manager.get(name)
            assert store.applied[name] == 1, name
            if final.HasField("response"):
                assert finished_work.get(name), "a response only from work that returned"
            else:
                assert final.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert sum(store.applied.values()) == 300
    print(
        f"\nraces: 300 operations, {len(kinds) * 200 + 500} racing calls, 300 ends applied "
        f"once each, {store.refused} later finishes refused"
    )


# -- SIGTERM under load ----------------------------------------------------------------------


async def _poll_health(
    check: grpc.aio.UnaryUnaryMultiCallable[
        health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    ],
    seen: list[tuple[float, str]],
) -> None:
    """Ask for health every 20 ms; note each answer (a status name or an error code)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            reply = await check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            answer = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.aio.AioRpcError as exc:
            answer = exc.code().name
        seen.append((loop.time(), answer))
        if answer == "UNAVAILABLE":
            return  # the server has stopped
        await asyncio.sleep(0.02)


_METRICS = ("--metrics-port", "0")


def _waits_open(url: str) -> int:
    """The server's ``lro_async_waits_open``: WaitOperation calls it holds now."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1
    with opener.open(url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "lro_async_waits_open":
                return int(sample.value)
    return 0


async def test_sigterm_under_load_reports_not_serving_drains_and_loses_nothing(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'operations.db'}"
    grace = 3.0
    loop = asyncio.get_running_loop()
    observed, health = Observed(), list[tuple[float, str]]()
    async with (
        serve_cli(store, tmp_path / "first.log", "--grace", str(grace), *_METRICS) as server,
        grpc.aio.insecure_channel(server.target) as channel,
    ):
        demo, operations = demo_stub(channel), operations_stub(channel)
        check: grpc.aio.UnaryUnaryMultiCallable[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ] = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        clients = [asyncio.create_task(_create(demo, observed, i)) for i in range(CREATORS)]
        clients.append(asyncio.create_task(_watch(operations, observed)))
        checker = asyncio.create_task(_poll_health(check, health))
        waits: dict[str, asyncio.Task[operations_pb2.Operation]] = {}

        async def wait(name: str) -> operations_pb2.Operation:
            return await operations.WaitOperation(wait_request(name, 60), timeout=90)

        def loaded() -> bool:  # and a wait on each operation acknowledged so far
            for name in list(observed.created)[len(waits) :]:
                waits[name] = asyncio.create_task(wait(name))
            return len(observed.created) >= 200 and len(observed.done) >= 40

        opened = [0]

        async def all_open() -> bool:
            assert server.metrics is not None
            opened[0] = await asyncio.to_thread(_waits_open, server.metrics)
            return opened[0] + sum(task.done() for task in waits.values()) >= len(waits)

        try:
            await until(
                loaded,
                "200 operations acknowledged and 40 seen done",
                timeout=30,
                details=lambda: (len(observed.created), len(observed.done)),
            )
            await until(
                all_open,
                f"each of the {len(waits)} waits open on the server, or answered",
                details=lambda: f"{opened[0]} open, {sum(t.done() for t in waits.values())} done",
            )
            term = loop.time()
            server.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(grace + 15):
                exit_code = await server.process.wait()
            exited = loop.time()
            async with asyncio.timeout(10):
                await asyncio.gather(*clients, checker)
            answered = await asyncio.gather(*waits.values(), return_exceptions=True)
        finally:
            for task in [*clients, checker, *waits.values()]:
                task.cancel()
            await asyncio.gather(*clients, checker, *waits.values(), return_exceptions=True)
    assert exit_code == 0

    # Health: SERVING until the signal, then NOT_SERVING while draining, never back.
    before = {answer for at, answer in health if at < term}
    after = [answer for at, answer in health if at > term]
    assert before == {"SERVING"}, before
    assert "NOT_SERVING" in after, after[:20]
    first_not_serving = after.index("NOT_SERVING")
    assert "SERVING" not in after[first_not_serving:], after

    # Every wait open at the signal was answered (latest state, or UNAVAILABLE) at once.
    for result in answered:
        if isinstance(result, grpc.aio.AioRpcError):
            assert result.code() == grpc.StatusCode.UNAVAILABLE, result
        else:
            assert isinstance(result, operations_pb2.Operation), result
    assert exited - term < grace + 5

    async with (
        serve_cli(store, tmp_path / "second.log", "--grace", "1") as second,
        grpc.aio.insecure_channel(second.target) as channel,
    ):
        stored = {op.name: op for op in await list_all(operations_stub(channel), PARENT)}
        assert await second.stop(15) == 0
    missing = set(observed.created) - set(stored)
    assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
    changed = [name for name, op in observed.done.items() if stored[name] != op]
    assert not changed, f"seen done, then changed: {changed[:5]}"
    assert all(op.done for op in stored.values()), "still running after the restart"
    restarted = [name for name, op in stored.items() if op.error.message == RESTARTED]
    assert not restarted, "a graceful drain leaves nothing for the restart to abort"
    for name, seconds in observed.created.items():
        if seconds <= 1.0:  # well within the grace: finished, not cut short
            assert stored[name].HasField("response"), (name, seconds, stored[name].error)
        elif seconds == 60.0:
            assert stored[name].error.code == grpc.StatusCode.ABORTED.value[0], name
    not_serving = after.count("NOT_SERVING")
    print(
        f"\nSIGTERM under load: {len(observed.created)} acknowledged, all there after a "
        f"restart; {len(waits)} open waits answered; {not_serving} health checks said "
        f"NOT_SERVING during the {exited - term:.1f}s drain"
    )
