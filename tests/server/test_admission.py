"""Waits and watches are admitted apart from reads: a full house of waits never starves Get.

A real grpc.aio server holds ``max_waits`` WaitOperation calls and one caller's 16 Watch
streams open (each watching 100 names with their metadata), while 20 of those operations
report progress 100 times a second and one more wait is asked again and again and refused
(RESOURCE_EXHAUSTED). Most waiters run in a process of their own (admission_load.py), so
what is measured is the server's work, not theirs; 150 of the waits share the Gets' own
channel, so an HTTP/2 stream limit shared by both would show. Through it all 200 GetOperation calls
answer, and their median latency stays within 5x of the same 200 Gets under the same
progress writes with nobody waiting, measured in the same run. Over memory, SQLite (one
worker thread) and PostgreSQL (a pool of 4, and waiters that re-read it every 50 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2, struct_pb2

import lro_async
from lro_async.server.watching import WatchServicer
from lro_async.stores import OperationStore, PostgresStore, SQLiteStore

from ..waiting import until

pytestmark = pytest.mark.timeout(120)

MAX_WAITS = 300
STREAMS = 16  # WatchServicer's default max_streams per caller
GETS = 200
SAME_CHANNEL = 150  # of the waits, held on the Gets' channel (one HTTP/2 connection)
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.asynccontextmanager
async def _store(kind: str, tmp_path: Path) -> AsyncIterator[OperationStore]:
    if kind == "memory":
        yield lro_async.stores.MemoryStore()
        return
    if kind == "sqlite":
        yield SQLiteStore(str(tmp_path / "ops.db"))
        return
    import asyncpg  # type: ignore[import-untyped]

    dsn = os.environ.get("LRO_ASYNC_POSTGRES_DSN") or DEFAULT_DSN
    try:
        connection = await asyncpg.connect(dsn, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = f"PostgreSQL at {dsn} is unavailable: {exc!r}"
        if os.environ.get("LRO_ASYNC_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (LRO_ASYNC_REQUIRE_POSTGRES=1)")
        pytest.skip(reason + " (set LRO_ASYNC_POSTGRES_DSN)")
    schema = f"lro_test_{uuid.uuid4().hex[:16]}"
    try:
        # A short recheck: 300 waiters re-read 6,000 times a second, through the same
        # pool of 4 connections that Get reads through.
        yield PostgresStore(dsn, schema=schema, max_connections=4, recheck_interval=0.05)
    finally:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await connection.close()


async def _latencies(stub: operations_pb2_grpc.OperationsStub, names: list[str]) -> list[float]:
    """The latency of each of GETS GetOperation calls, made one after another."""
    taken = []
    for i in range(GETS):
        started = time.perf_counter()
        await stub.GetOperation(
            operations_pb2.GetOperationRequest(name=names[i % len(names)]), timeout=10
        )
        taken.append(time.perf_counter() - started)
    return taken


@pytest.mark.parametrize(
    "kind", ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_get_answers_at_full_speed_with_every_wait_and_watch_open(
    kind: str, tmp_path: Path
) -> None:
    async with _store(kind, tmp_path) as store, lro_async.OperationManager(store) as manager:
        server = grpc.aio.server(options=lro_async.server_options())
        servicer = lro_async.AsyncOperationsServicer(manager, max_waits=MAX_WAITS)
        servicer.add_to_server(server)
        watches = WatchServicer(manager)
        watches.add_to_server(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=lro_async.channel_options()
        )
        tasks: list[asyncio.Task[None]] = []
        held: list[asyncio.Future[operations_pb2.Operation]] = []
        load: asyncio.subprocess.Process | None = None
        try:
            stub = operations_pb2_grpc.OperationsStub(channel)
            read = [(await manager.create(parent="projects/read")).name for _ in range(50)]
            waited = [(await manager.create(parent="projects/wait")).name for _ in range(100)]

            async def churn() -> None:  # progress of the waited operations, all along
                step = 0
                while True:
                    step += 1
                    for name in waited[:20]:
                        await manager.set_metadata(name, struct_pb2.Value(number_value=step))
                    await asyncio.sleep(0.01)  # pacing the load, not synchronisation

            tasks.append(asyncio.ensure_future(churn()))
            await _latencies(stub, read)  # warm up the channel and the store
            idle = await _latencies(stub, read)  # the same writes, nobody waiting

            load = await asyncio.create_subprocess_exec(
                sys.executable,
                str(Path(__file__).with_name("admission_load.py")),
                f"127.0.0.1:{port}",
                str(MAX_WAITS - SAME_CHANNEL),
                str(STREAMS),
                *waited,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for i in range(SAME_CHANNEL):  # and some on the Gets' own connection
                request = operations_pb2.WaitOperationRequest(
                    name=waited[i % len(waited)], timeout=duration_pb2.Duration(seconds=600)
                )
                held.append(asyncio.ensure_future(stub.WaitOperation(request, timeout=120)))
            await until(
                lambda: servicer.waiting == MAX_WAITS,
                f"{MAX_WAITS} waits open",
                timeout=30,
                details=lambda: servicer.waiting,
            )
            await until(
                lambda: watches.streams == STREAMS,
                f"{STREAMS} Watch streams open",
                timeout=30,
                details=lambda: watches.streams,
            )
            assert load.stdin is not None and load.stdout is not None
            load.stdin.write(b"go\n")
            await load.stdin.drain()
            line = await asyncio.wait_for(load.stdout.readline(), 30)
            assert line == b"refused 50\n", f"the storm of waits past the cap: {line!r}"
            loaded = await _latencies(stub, read)
            assert servicer.waiting == MAX_WAITS and watches.streams == STREAMS
            assert load.returncode is None, "the waiters' process ended"
            assert not any(wait.done() for wait in held), "a held wait ended"
        finally:
            for task in tasks:
                task.cancel()
            for wait in held:
                wait.cancel()
            if load is not None and load.returncode is None:
                load.kill()
            if load is not None:
                await load.wait()
            await asyncio.gather(*tasks, *held, return_exceptions=True)
            await channel.close()
            await server.stop(grace=None)
    ratio = statistics.median(loaded) / statistics.median(idle)
    print(
        f"{kind}: Get p50 without waits {statistics.median(idle) * 1e3:.2f} ms, "
        f"with {MAX_WAITS} waits, {STREAMS} watches and a storm open "
        f"{statistics.median(loaded) * 1e3:.2f} ms "
        f"(x{ratio:.2f}); max {max(loaded) * 1e3:.1f} ms"
    )
    assert len(loaded) == GETS  # every Get answered (a refusal would have raised)
    assert ratio < 5.0, f"Get p50 went x{ratio:.1f} with the waits open"
