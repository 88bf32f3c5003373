"""SQLiteStore beyond the contract: durability across kill -9, bad files, timeouts."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from google.longrunning import operations_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from lro_async import StoreError
from lro_async.stores import Lease, OperationRecord
from lro_async.stores.sqlite import _MIGRATIONS, SCHEMA_VERSION, SQLiteStore

VERSIONS = [(version,) for version in range(1, SCHEMA_VERSION + 1)]


def _ignore(name: str) -> None:
    pass


def running(name: str, create_time: int = 1) -> OperationRecord:
    return OperationRecord(operations_pb2.Operation(name=name), create_time, create_time)


# The child writes operations as fast as it can and prints each one the store acknowledged.
_WRITER = """
import asyncio, sys
from google.longrunning import operations_pb2
from google.rpc import status_pb2
from lro_async.stores import OperationRecord
from lro_async.stores.sqlite import SQLiteStore

async def main(path):
    async with SQLiteStore(path) as store:
        await store.open(lambda name: None)
        for i in range(10_000_000):
            name = f"operations/{i:08d}"
            await store.create(OperationRecord(operations_pb2.Operation(name=name), i, i))
            print("created", name, flush=True)
            if i % 2:
                error = status_pb2.Status(code=i % 16 + 1, message=name)
                await store.finish(name, i + 1, error=error)
                print("finished", name, flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "operations.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WRITER,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stderr is not None
    lines: list[bytes] = []
    try:
        while len(lines) < 600:
            line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
            if not line:
                pytest.fail(f"the writer died: {(await child.stderr.read()).decode()}")
            lines.append(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)  # in the middle of writing
        lines.extend((await child.stdout.read()).splitlines(keepends=True))
        await child.stderr.read()
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    acknowledged = [line.decode().split() for line in lines if line.endswith(b"\n")]
    created = {name for verb, name in acknowledged if verb == "created"}
    finished = {name for verb, name in acknowledged if verb == "finished"}
    assert len(created) >= 400

    async with SQLiteStore(path) as store:
        await store.open(_ignore)
        for name in sorted(created):
            record = await store.get(name)
            assert record is not None, f"{name} was acknowledged as created but is lost"
            i = int(name.rpartition("/")[2])
            assert record.create_time == i
            if name in finished:
                assert record.done, f"{name} was acknowledged as finished but is not done"
                error = record.operation.error
                assert (error.code, error.message) == (i % 16 + 1, name)
            else:  # killed between the finish and its acknowledgement, or running
                assert not record.done or record.operation.error.code == i % 16 + 1
        stored = {record.name for record in await store.list(None, limit=10**6)}
        assert created <= stored
        assert len(stored - created) <= 1  # at most the one being written at the kill


async def test_operations_persist_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "operations.db"
    async with SQLiteStore(path, synchronous="FULL") as store:
        await store.open(_ignore)
        await store.create(running("operations/a"))
        await store.finish("operations/a", 2, response=any_pb2.Any(type_url="t/x"))
    async with SQLiteStore(path) as store:
        await store.open(_ignore)
        record = await store.get("operations/a")
        assert record is not None
        assert record.done
        assert record.operation.response.type_url == "t/x"
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert check.execute("SELECT version FROM lro_schema_version").fetchall() == VERSIONS
    check.close()


async def test_a_schema_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "operations.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE lro_schema_version (version INTEGER)")
        setup.execute("INSERT INTO lro_schema_version VALUES (99)")
    setup.close()
    store = SQLiteStore(path)
    with pytest.raises(StoreError, match="schema version 99"):
        await store.open(_ignore)
    await store.aclose()


async def test_using_a_store_that_is_not_open_or_closed_raises_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "operations.db")
    with pytest.raises(StoreError, match="not open"):
        await store.create(running("operations/a"))
    await store.open(_ignore)
    await store.create(running("operations/a"))
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.get("operations/a")
    with pytest.raises(StoreError, match="closed"):
        await store.open(_ignore)


async def test_a_write_blocked_by_another_process_fails_after_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "operations.db"
    async with SQLiteStore(path, timeout=0.3) as store:
        await store.open(_ignore)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # holds the write lock
            started = time.monotonic()
            with pytest.raises(StoreError):
                await store.create(running("operations/a"))
            assert time.monotonic() - started < 2
            other.execute("ROLLBACK")
        finally:
            other.close()
        await store.create(running("operations/a"))
        assert await store.get("operations/a") is not None


async def test_a_statement_that_runs_too_long_is_interrupted(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "operations.db", timeout=0.3) as store:
        await store.open(_ignore)
        endless = (
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT max(i) FROM r"
        )
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"took more than 0\.3 s"):
            # No public call runs forever; reach in to give the worker one that would.
            await store._run("spin", lambda connection: connection.execute(endless).fetchone())
        assert time.monotonic() - started < 2
        await store.create(running("operations/a"))  # the worker is free again
        assert await store.get("operations/a") is not None


async def test_cancelled_calls_leave_no_transaction_open(tmp_path: Path) -> None:
    path = tmp_path / "operations.db"
    async with SQLiteStore(path) as store:
        await store.open(_ignore)
        for i in range(50):
            await store.create(running(f"operations/{i:02d}", i))
        tasks = [
            asyncio.ensure_future(
                store.finish(f"operations/{i:02d}", 100, error=status_pb2.Status(code=1))
            )
            for i in range(50)
        ]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert any(isinstance(r, asyncio.CancelledError) for r in results)
        # A call already running when cancelled still ends its transaction on the worker
        # thread (its result is dropped), so the lock is free at once or very soon.
        other = sqlite3.connect(path, isolation_level=None, timeout=2)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()
        done = [r.name for r in await store.list(None, limit=100) if r.done]
        still = await store.running(100)
        assert len(done) + len(still) == 50
        for record in still:
            written = await store.finish(record.name, 200, error=status_pb2.Status(code=2))
            assert written is not None
            assert written.applied


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        SQLiteStore(timeout=0)


async def test_a_version_1_file_is_migrated_and_keeps_its_operations(tmp_path: Path) -> None:
    path = tmp_path / "operations.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE lro_schema_version (version INTEGER)")
        for statement in _MIGRATIONS[1]:
            setup.execute(statement)
        setup.execute("INSERT INTO lro_schema_version VALUES (1)")
        setup.execute(
            "INSERT INTO lro_operations VALUES ('operations/old', '', 1, 1, 0, 0, '', '', ?)",
            (operations_pb2.Operation(name="operations/old").SerializeToString(),),
        )
    setup.close()
    async with SQLiteStore(path) as store:
        await store.open(_ignore)
        assert await store.get("operations/old") == running("operations/old")
        assert await store.expired_leases(10**18, 10) == []  # it never had a lease
        await store.create(running("operations/new"), lease=Lease("me", 5))
        [expired] = await store.expired_leases(10**18, 10)
        assert expired.name == "operations/new"
        assert await store.shared_secret() is None  # one process serves from a file
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT version FROM lro_schema_version").fetchall() == VERSIONS
    check.close()


async def test_a_version_2_file_is_migrated_to_unique_request_ids(tmp_path: Path) -> None:
    path = tmp_path / "operations.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE lro_schema_version (version INTEGER)")
        for version in (1, 2):
            for statement in _MIGRATIONS[version]:
                setup.execute(statement)
            setup.execute("INSERT INTO lro_schema_version VALUES (?)", (version,))
        setup.execute(
            "INSERT INTO lro_operations VALUES"
            " ('operations/old', '', 1, 1, 0, 0, '', '', ?, NULL, NULL)",
            (operations_pb2.Operation(name="operations/old").SerializeToString(),),
        )
    setup.close()
    async with SQLiteStore(path) as store:
        await store.open(_ignore)
        assert await store.get("operations/old") == running("operations/old")
        assert (await store.create_once(running("operations/a"), "r")).applied
        again = await store.create_once(running("operations/b"), "r")
        assert (again.applied, again.record.name) == (False, "operations/a")
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT version FROM lro_schema_version").fetchall() == VERSIONS
        # The database itself refuses a duplicate, not only the store's code.
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            check.execute(
                "UPDATE lro_operations SET request_id = 'r' WHERE name = 'operations/old'"
            )
    check.close()
