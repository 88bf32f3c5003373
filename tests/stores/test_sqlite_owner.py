"""SQLiteStore: one owner per file, read-only inspection, and clear errors at open."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import status_pb2

import lro_async
from lro_async import StoreError
from lro_async.stores import OperationRecord, SQLiteStore

# The child serves from the file: it owns it, starts an operation that runs until it is
# killed, says so, and waits.
_OWNER = """
import asyncio, sys
import lro_async
from lro_async.stores import OperationRecord
from lro_async.stores.sqlite import SQLiteStore

async def main(path):
    async with lro_async.OperationManager(store=SQLiteStore(path)) as manager:
        op = await manager.create()
        print("running", op.name, flush=True)
        await asyncio.Event().wait()

asyncio.run(main(sys.argv[1]))
"""


async def _operation(path: Path, name: str) -> OperationRecord | None:
    async with SQLiteStore(path, read_only=True) as store:
        await store.open()
        return await store.get(name)


async def test_a_second_store_in_the_same_process_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ops.db"
    async with lro_async.OperationManager(store=SQLiteStore(path)) as first:
        op = await first.create()
        second = lro_async.OperationManager(store=SQLiteStore(path))
        with pytest.raises(StoreError) as caught:
            await second.open()  # without the lock: its recovery aborts first's operation
        message = str(caught.value)
        assert "\n" not in message
        assert f"SQLite store {str(path)!r} is in use by another SQLiteStore in this process" in (
            message
        )
        assert f"pid {os.getpid()}" in message
        await second.aclose()
        assert not (await first.get(op.name)).done, "the refused store aborted the operation"
        await first.complete(op.name)  # the owner still serves and writes
        assert (await first.get(op.name)).done
    assert not (tmp_path / "ops.db.lock").exists(), "a clean close removes the lock file"
    async with SQLiteStore(path) as again:  # the lock is free once the owner closed
        await again.open()
        record = await again.get(op.name)
        assert record is not None
        assert record.done


async def test_a_live_owner_process_keeps_the_file_and_kill_9_frees_it(tmp_path: Path) -> None:
    path = tmp_path / "ops.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _OWNER,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stderr is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
        if not line.startswith(b"running "):
            pytest.fail(f"the owner did not start: {(await child.stderr.read()).decode()}")
        name = line.split()[1].decode()
        with pytest.raises(StoreError) as caught:
            async with lro_async.OperationManager(store=SQLiteStore(path)):
                pass
        message = str(caught.value)
        assert "\n" not in message
        assert f"SQLite store {str(path)!r} is in use by process {child.pid} on " in message
        assert "since " in message
        record = await _operation(path, name)  # read-only inspection works meanwhile
        assert record is not None
        assert not record.done, "opening a live owner's file aborted its operation"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        await child.communicate()
    assert child.returncode == -signal.SIGKILL
    # The OS released the dead owner's lock: a new owner opens the file and recovers.
    async with lro_async.OperationManager(store=SQLiteStore(path)) as manager:
        recovered = await manager.get(name)
    assert recovered.done
    assert recovered.error.code == grpc.StatusCode.ABORTED.value[0]
    assert "restarted" in recovered.error.message


async def test_read_only_inspection_reads_a_served_file_and_writes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ops.db"
    async with lro_async.OperationManager(store=SQLiteStore(path)) as owner:
        running = await owner.create()
        finished = await owner.create()
        await owner.complete(finished.name)
        inspector = SQLiteStore(path, read_only=True)
        # A manager over it neither recovers (the running one stays running) nor sweeps
        # (with this retention, it would expire the finished one at once).
        async with lro_async.OperationManager(store=inspector, retention=1e-6) as view:
            assert not (await view.get(running.name)).done
            later = await owner.create()  # the owner's new writes are seen
            assert (await view.get(later.name)).name == later.name
            with pytest.raises(StoreError, match=r"is open read-only: create refused$"):
                await view.create()
            with pytest.raises(StoreError, match=r"is open read-only: expire refused$"):
                await view.expire()
            with pytest.raises(StoreError, match=r"is open read-only: finish refused$"):
                await inspector.finish(running.name, 1, error=status_pb2.Status(code=1))
            with pytest.raises(StoreError, match=r"is open read-only: delete refused$"):
                await inspector.delete(finished.name)
        assert not (await owner.get(running.name)).done
        assert (await owner.get(finished.name)).done
        await owner.complete(running.name)
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


async def test_read_only_needs_an_existing_lro_async_database(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreError, match=r"does not exist \(opened read-only\)$"):
        await SQLiteStore(missing, read_only=True).open()
    assert not missing.exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(StoreError, match=r"holds no lro_async operations$"):
        await SQLiteStore(other, read_only=True).open()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing folder", r"SQLite store '{path}': the folder '{tmp}/nowhere' does not exist"),
        ("a folder", r"SQLite store '{path}' is a folder, not a database file"),
        ("not a database", r"SQLite open on '{path}' failed: file is not a database"),
    ],
)
async def test_a_path_that_cannot_hold_a_database_fails_at_open_naming_it(
    tmp_path: Path, kind: str, expected: str
) -> None:
    path = {
        "missing folder": tmp_path / "nowhere" / "ops.db",
        "a folder": tmp_path,
        "not a database": tmp_path / "ops.db",
    }[kind]
    if kind == "not a database":
        path.write_bytes(b"this is not a SQLite database, just some bytes. " * 100)
    store = SQLiteStore(path)
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert str(caught.value) == expected.format(path=path, tmp=tmp_path)
    with pytest.raises(StoreError, match="not open"):
        await store.get("operations/a")
    await store.aclose()
    assert not (path.parent / (path.name + ".lock")).exists()


# Opens the store as an unprivileged process would: as root, without the capabilities that
# let root write whatever the permissions say (so that read-only means read-only).
_OPEN_UNPRIVILEGED = """
import asyncio, ctypes, os, sys
if os.geteuid() == 0 and os.environ.get("LRO_TEST_DROPPED") != "1":
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            sys.exit(f"cannot drop capability {capability}: errno {ctypes.get_errno()}")
    os.environ["LRO_TEST_DROPPED"] = "1"
    os.execv(sys.executable, [sys.executable, *sys.argv])  # now without them

import lro_async
from lro_async.stores import OperationRecord
from lro_async.stores.sqlite import SQLiteStore

async def main(path, read_only):
    store = SQLiteStore(path, read_only=read_only == "1")
    try:
        async with lro_async.OperationManager(store=store) as manager:
            operations, _ = await manager.list()
            print("opened, operations:", len(operations))
    except lro_async.StoreError as exc:
        print("StoreError:", exc)

asyncio.run(main(*sys.argv[1:]))
"""


async def _open_unprivileged(path: Path, *, read_only: bool = False) -> str:
    script = path.parent.parent / "open_unprivileged.py"  # re-executed: a file, not -c
    script.write_text(_OPEN_UNPRIVILEGED)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(path),
        "1" if read_only else "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == 0, err.decode()
    assert b"Traceback" not in err, err.decode()
    return out.decode().strip()


@pytest.fixture
async def read_only_files(tmp_path: Path) -> AsyncIterator[tuple[Path, Path]]:
    """An lro_async database file that is read-only, and one in a read-only folder."""
    file, folder = tmp_path / "file.db", tmp_path / "folder"
    folder.mkdir()
    for path in (file, folder / "ops.db"):
        async with lro_async.OperationManager(store=SQLiteStore(path)) as manager:
            await manager.create()
    file.chmod(0o444)
    folder.chmod(0o555)
    yield file, folder / "ops.db"
    folder.chmod(0o755)


async def test_a_read_only_file_or_folder_fails_at_open_with_the_reason(
    read_only_files: tuple[Path, Path],
) -> None:
    file, in_folder = read_only_files
    assert await _open_unprivileged(file) == (
        f"StoreError: SQLite store '{file}' cannot be written: the file is read-only; "
        "make it writable, or to inspect it open it read-only (read_only=True, or ?mode=ro "
        "after a sqlite: URL)"
    )
    assert await _open_unprivileged(in_folder) == (
        f"StoreError: SQLite store '{in_folder}': its folder is not writable (cannot create "
        f"its lock file '{in_folder}.lock': Permission denied)"
    )
    # Inspection still works: a read-only file, and a folder where the -shm can be made.
    in_folder.parent.chmod(0o755)
    assert await _open_unprivileged(file, read_only=True) == "opened, operations: 1"
