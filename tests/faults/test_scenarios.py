"""Randomized fault scenarios against real ``lro-async serve`` processes.

Two replicas (A and B) on one PostgreSQL schema, or one server on SQLite restarted; a
client load awaits every operation it started while faults hit on a seeded schedule.
Process faults (kill -9, SIGSTOP, SIGTERM) hit A and every wait goes through B, so the
waits measure what B tells about A's operations; database faults hit either replica.
Each scenario prints one line: scenario, seed, acknowledged, lost, stuck, time to recovery
(from the end of the last fault until a fresh operation completed on every replica and
every operation acknowledged before it was seen done). See harness.py for the invariants.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2

import lro_async

from ..interop.test_restart import OperationsStub, demo_stub, operations_stub, sleep_request
from ..stores.conftest import fresh_schema, require_postgres
from .harness import (
    CHANNEL_OPTIONS,
    LEASE,
    POLICY,
    STORE_TIMEOUT,
    UNANNOUNCED,
    Replica,
    Run,
    Tracked,
    Window,
    finish,
    replicas,
    table_lock,
    terminate_backends,
    with_query,
)

pytestmark = pytest.mark.timeout(90)

GRACE = 1.0
SERVE_OPTIONS = ("--lease", str(LEASE), "--grace", str(GRACE))


@contextlib.asynccontextmanager
async def postgres_run(
    tmp_path: Path, scenario: str, seed: int, *, b_settings: dict[str, str] | None = None
) -> AsyncIterator[Run]:
    """Replicas A and B on a fresh schema; waits go through B."""
    dsn = await require_postgres()
    # Plaintext to the local server: asyncpg's default sslmode=prefer leaves "Future
    # exception was never retrieved" in the log when a connect is cut short during its SSL
    # negotiation (an asyncpg wart, reported apart), which would hide what this checks.
    plain = with_query(dsn, sslmode="disable") if "sslmode" not in dsn else dsn
    async with fresh_schema(dsn) as schema:
        a = Replica("a", with_query(plain, schema=schema), tmp_path, *SERVE_OPTIONS)
        b_store = with_query(plain, schema=schema, **(b_settings or {}))
        b = Replica("b", b_store, tmp_path, *SERVE_OPTIONS)
        async with replicas(a, b):
            yield Run(scenario, seed, [a, b], b, dsn_schema=(dsn, schema))


@contextlib.asynccontextmanager
async def sqlite_run(tmp_path: Path, scenario: str, seed: int) -> AsyncIterator[Run]:
    """One server on a SQLite file, restarted on the same file and port."""
    server = Replica("s", f"sqlite:///{tmp_path / 'operations.db'}", tmp_path, *SERVE_OPTIONS)
    async with replicas(server):
        yield Run(scenario, seed, [server], server)


def _application_names(run: Run) -> tuple[str, str]:
    """What PostgresStore sets as application_name on its pool and its LISTEN connection."""
    assert run.dsn_schema is not None
    schema = run.dsn_schema[1]
    return f"lro_async {schema}"[:63], f"lro_async listen {schema}"[:63]


async def _kill_and_restart(run: Run, replica: Replica) -> None:
    run.creating.discard(replica.label)
    replica.mark_down()
    await replica.kill()
    run.ended_fault()
    await asyncio.sleep(run.rng.uniform(0.1, 1.0))  # pacing: down for a while
    await _restart(run, replica)


async def _drain_and_restart(run: Run, replica: Replica) -> None:
    run.creating.discard(replica.label)
    run.drained = True
    replica.mark_down()
    code = await replica.terminate(GRACE + 15)
    assert code == 0, f"{replica.label} exited with {code} after SIGTERM"
    run.ended_fault()
    await _restart(run, replica)


async def _restart(run: Run, replica: Replica) -> None:
    # Starting a Python process takes a core for a second or two: a burst on this machine.
    burst = Window(time.time())
    run.bursts.append(burst)
    await replica.start()
    await replica.mark_up()
    burst.end = time.time() + 1.0
    run.creating.add(replica.label)


async def _drop_waits(run: Run, targets: list[Replica], count: int) -> None:
    """Open *count* waits on running operations (half raw WaitOperation calls, half
    AsyncOperation awaits of a second client), then cancel them all at once."""
    running = [t.name for t in run.tracked.values() if t.saw is None and t.seconds >= 1.0]
    if not running:
        running = [t.name for t in run.tracked.values()][-50:]
    channels = [grpc.aio.insecure_channel(r.target, options=CHANNEL_OPTIONS) for r in targets]
    client = lro_async.AsyncOperationsClient(channels[0], policy=POLICY)
    tasks: list[asyncio.Task[object]] = []
    burst = Window(time.time())
    run.bursts.append(burst)

    async def wait(stub: OperationsStub, request: operations_pb2.WaitOperationRequest) -> object:
        return await stub.WaitOperation(request, timeout=40)

    try:
        for i in range(count // 2):
            stub = operations_stub(channels[i % len(channels)])
            request = operations_pb2.WaitOperationRequest(
                name=run.rng.choice(running), timeout=duration_pb2.Duration(seconds=30)
            )
            tasks.append(asyncio.create_task(wait(stub, request)))
        for _ in range(count - count // 2):
            tasks.append(asyncio.create_task(client.operation(run.rng.choice(running)).result()))
        await asyncio.sleep(run.rng.uniform(0.5, 1.5))  # pacing: let them open
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await client.aclose()
        for channel in channels:
            await channel.close()
    burst.end = time.time() + 1.0  # and what the server has left to do for them
    run.log(f"{count} waits on {len(set(running))} operations dropped at once")
    run.ended_fault()


# -- PostgreSQL, two replicas --------------------------------------------------------------


@pytest.mark.postgres
async def test_kill_9_of_a_replica(tmp_path: Path, fault_seed: int) -> None:
    async with postgres_run(tmp_path, "pg_kill9", fault_seed) as run:

        async def faults(run: Run) -> None:
            for offset in run.schedule(2, 1.5, 9.0, gap=LEASE + 2):
                await run.at(offset)
                await _kill_and_restart(run, run.replicas[0])

        verdict = await run.run(12, faults)
        await finish(run, verdict)


@pytest.mark.postgres
async def test_sigstop_of_a_replica_past_its_lease(tmp_path: Path, fault_seed: int) -> None:
    async with postgres_run(tmp_path, "pg_sigstop", fault_seed) as run:

        async def faults(run: Run) -> None:
            a = run.replicas[0]
            await run.at(run.rng.uniform(1.5, 3.0))
            run.creating.discard("a")
            a.mark_down()
            a.signal(signal.SIGSTOP)
            await asyncio.sleep(LEASE * 1.5 + run.rng.uniform(0, 1.5))  # pacing: frozen
            a.signal(signal.SIGCONT)
            run.ended_fault()
            await a.mark_up()
            run.creating.add("a")

        verdict = await run.run(11, faults)
        await finish(run, verdict)


@pytest.mark.postgres
async def test_database_connections_terminated(tmp_path: Path, fault_seed: int) -> None:
    async with postgres_run(tmp_path, "pg_terminate", fault_seed) as run:
        names = _application_names(run)
        terminated: list[str] = []

        async def faults(run: Run) -> None:
            assert run.dsn_schema is not None
            for offset in run.schedule(4, 1.5, 10.0, gap=1.0):
                await run.at(offset)
                replica = run.rng.choice(run.replicas)
                hit = await terminate_backends(run.dsn_schema[0], replica, names)
                if replica is run.waiter and names[1] in hit:
                    now = time.time()
                    run.unannounced.append(Window(now, now + UNANNOUNCED))
                run.log(f"+{offset:.1f}s: terminated {replica.label}'s connections: {hit}")
                terminated.extend(hit)
                run.ended_fault()

        verdict = await run.run(12, faults)
        await finish(run, verdict)
    assert names[1] in terminated, "no LISTEN connection was found by its application_name"
    assert names[0] in terminated, "no pool connection was found by its application_name"


@pytest.mark.postgres
async def test_table_locked_past_the_store_timeout(tmp_path: Path, fault_seed: int) -> None:
    async with postgres_run(tmp_path, "pg_table_lock", fault_seed) as run:

        async def faults(run: Run) -> None:
            assert run.dsn_schema is not None
            await run.at(run.rng.uniform(1.5, 3.0))
            held = STORE_TIMEOUT + run.rng.uniform(0.5, 2.0)
            async with table_lock(run):
                run.log(f"table locked for {held:.1f}s")
                await asyncio.sleep(held)  # pacing: the fault's length
            run.ended_fault()

        verdict = await run.run(18, faults)
        await finish(run, verdict)


@pytest.mark.postgres
async def test_statement_timeout_on_the_database_side(tmp_path: Path, fault_seed: int) -> None:
    # B's sessions carry statement_timeout=300ms (a server setting in its DSN); short table
    # locks make B's statements exceed it, while A's merely wait.
    settings = {"statement_timeout": "300"}
    async with postgres_run(
        tmp_path, "pg_statement_timeout", fault_seed, b_settings=settings
    ) as run:

        async def faults(run: Run) -> None:
            assert run.dsn_schema is not None
            for offset in run.schedule(3, 1.5, 10.0, gap=1.5):
                await run.at(offset)
                async with table_lock(run):
                    await asyncio.sleep(run.rng.uniform(0.8, 1.5))  # pacing: the lock's length
                run.ended_fault()

        verdict = await run.run(12, faults)
        await finish(run, verdict)


@pytest.mark.postgres
async def test_sigterm_drains_of_a_replica_mid_load(tmp_path: Path, fault_seed: int) -> None:
    async with postgres_run(tmp_path, "pg_drain", fault_seed) as run:

        async def faults(run: Run) -> None:
            for offset in run.schedule(2, 1.5, 9.0, gap=3.0):
                await run.at(offset)
                await _drain_and_restart(run, run.replicas[0])

        verdict = await run.run(12, faults)
        await finish(run, verdict)


@pytest.mark.postgres
async def test_cancel_complete_delete_races_across_replicas(
    tmp_path: Path, fault_seed: int
) -> None:
    async with postgres_run(tmp_path, "pg_races", fault_seed) as run:
        a, b = run.replicas
        on_a = lro_async.AsyncOperationsClient(a.channel, policy=POLICY)
        on_b = lro_async.AsyncOperationsClient(b.channel, policy=POLICY)
        racers: list[asyncio.Task[None]] = []

        async def race(i: int) -> None:
            rng = run.load_rng
            seconds = rng.choice((0.1, 0.2, 0.3))
            request = sleep_request(run.parent, seconds, steps=1)
            started = await demo_stub(a.channel).Sleep(request, timeout=5)
            tracked = Tracked(started.name, "a", seconds, False, time.time())
            kind = rng.choice(("cancel-b", "cancel-both", "delete-b", "delete-a-cancel-b"))
            tracked.cancelled = "cancel" in kind
            run.track(tracked)
            await asyncio.sleep(seconds + rng.uniform(-0.05, 0.05))  # around the completion
            calls: list[Awaitable[object]] = []
            if "cancel" in kind:
                calls.append(on_b.cancel_operation(started.name, timeout=5))
                if kind == "cancel-both":
                    calls.append(on_a.cancel_operation(started.name, timeout=5))
            if "delete" in kind:
                tracked.deleted = True
                on = on_a if kind.startswith("delete-a") else on_b
                calls.append(on.delete_operation(started.name, timeout=5))
            for result in await asyncio.gather(*calls, return_exceptions=True):
                # NOT_FOUND: the other call deleted it first.
                if isinstance(result, BaseException):
                    assert isinstance(result, lro_async.OperationNotFound), result

        async def faults(run: Run) -> None:
            for i in range(150):
                racers.append(asyncio.create_task(race(i)))
                await asyncio.sleep(run.rng.uniform(0.0, 0.05))  # pacing
            await _drop_waits(run, [a, b], 2000)
            await asyncio.gather(*racers)

        try:
            verdict = await run.run(12, faults)
        finally:
            for task in racers:
                task.cancel()
            await asyncio.gather(*racers, return_exceptions=True)
        await finish(run, verdict)


# -- SQLite, one server restarted --------------------------------------------------------


async def test_sqlite_server_killed_and_restarted(tmp_path: Path, fault_seed: int) -> None:
    async with sqlite_run(tmp_path, "sqlite_kill9", fault_seed) as run:

        async def faults(run: Run) -> None:
            for offset in run.schedule(2, 1.5, 8.0, gap=2.5):
                await run.at(offset)
                await _kill_and_restart(run, run.replicas[0])

        verdict = await run.run(11, faults)
        await finish(run, verdict)


async def test_sqlite_waits_dropped_and_sigterm_drain(tmp_path: Path, fault_seed: int) -> None:
    async with sqlite_run(tmp_path, "sqlite_drain", fault_seed) as run:

        async def faults(run: Run) -> None:
            first, second = run.schedule(2, 2.0, 8.0, gap=3.0)
            await run.at(first)
            await _drop_waits(run, run.replicas, 2000)
            await run.at(second)
            await _drain_and_restart(run, run.replicas[0])

        verdict = await run.run(11, faults)
        await finish(run, verdict)
