"""SQLiteStore: operations in a SQLite file. Embedded, durable; the CLI's default store.

Why not aiosqlite: every store method here is a short transaction of several statements
(read the operation, change it, write it back). aiosqlite sends each statement to its
thread separately, so statements of concurrent coroutines on the shared connection
interleave inside each other's transactions (a reader sees uncommitted writes, a writer
cancelled between BEGIN and COMMIT leaves a transaction open) unless every call is also
serialized with a lock and cleaned up with more awaits in ``finally``. Here each method
is one plain function that runs a whole transaction on a private worker thread: one
thread hop per call, atomic by construction, and a cancelled caller never leaves a
transaction half done (the function finishes or rolls back on its own).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Final, Literal, TypeVar

from ..errors import StoreError
from ..names import parent_of
from . import _sql
from ._sqlite_file import OwnerLock, check_location, unwritable
from .base import (
    Lease,
    OperationRecord,
    OperationStore,
    PageKey,
    Records,
    Written,
    check_outcome,
    mark_done,
)

if TYPE_CHECKING:
    from google.longrunning import operations_pb2
    from google.protobuf import any_pb2
    from google.rpc import status_pb2

    from ..filtering import Filter

__all__ = ["SQLiteStore"]

logger = logging.getLogger("lro_async")

T = TypeVar("T")

SCHEMA_VERSION: Final = 3
_TABLE: Final = "lro_operations"
_RENEW_BATCH: Final = 500  # names per UPDATE of renew(), well under 999 variables
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        f"""CREATE TABLE {_TABLE} (
            name TEXT NOT NULL PRIMARY KEY,
            parent TEXT NOT NULL,
            create_time INTEGER NOT NULL,
            update_time INTEGER NOT NULL,
            done INTEGER NOT NULL CHECK (done IN (0, 1)),
            error_code INTEGER NOT NULL,
            metadata_type TEXT NOT NULL,
            response_type TEXT NOT NULL,
            operation BLOB NOT NULL
        )""",
        f"CREATE INDEX lro_operations_by_parent ON {_TABLE} (parent, create_time, name)",
        f"CREATE INDEX lro_operations_by_time ON {_TABLE} (create_time, name)",
        f"CREATE INDEX lro_operations_by_done ON {_TABLE} (done, update_time)",
        f"CREATE INDEX lro_operations_running ON {_TABLE} (name) WHERE done = 0",
    ),
    2: (
        # Leases: set only on operations run under one, cleared when they finish.
        f"ALTER TABLE {_TABLE} ADD COLUMN lease_owner TEXT",
        f"ALTER TABLE {_TABLE} ADD COLUMN lease_expires INTEGER",
        f"CREATE INDEX lro_operations_lease_expiry ON {_TABLE} (lease_expires)"
        " WHERE done = 0 AND lease_owner IS NOT NULL",
        f"CREATE INDEX lro_operations_lease_owner ON {_TABLE} (lease_owner)"
        " WHERE done = 0 AND lease_owner IS NOT NULL",
    ),
    3: (
        # AIP-155 request ids: unique per parent while the operation's row lives.
        f"ALTER TABLE {_TABLE} ADD COLUMN request_id TEXT",
        f"CREATE UNIQUE INDEX lro_operations_by_request ON {_TABLE} (parent, request_id)"
        " WHERE request_id IS NOT NULL",
    ),
}
_DIALECT: Final = _sql.SQLiteDialect()
_SELECT: Final = f"SELECT operation, create_time, update_time FROM {_TABLE}"
_INSERT: Final = (
    f"INSERT INTO {_TABLE} (name, parent, create_time, update_time, done, error_code,"
    " metadata_type, response_type, operation, lease_owner, lease_expires, request_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# What a store opened read-only refuses (by the name _run is given).
_WRITES: Final = frozenset(
    {"create", "create_once", "set_metadata", "finish", "delete", "expire", "renew"}
)
_MEMORY: Final = ":memory:"


class SQLiteStore(OperationStore):
    """Keeps operations in a SQLite database file, in WAL mode.

    Durability: an operation is written and committed before any method returns, so
    whatever a client was told (created, done) survives the process being killed, even
    with ``kill -9``. With ``synchronous="NORMAL"`` (the default; in WAL mode it means a
    commit is written to the OS but fsynced only at checkpoints) a power loss or OS crash
    may lose the last few commits but never corrupts the file; ``"FULL"`` fsyncs every
    commit, surviving power loss too, at the price of one fsync per write.

    One owner at a time: :meth:`open` locks the file (an OS lock on ``<path>.lock``,
    which records the owner's host and pid and which the OS releases when the owner
    exits, ``kill -9`` included), and a second store opening it, in this process or
    another, fails with :class:`~lro_async.StoreError` naming the file and its owner, and
    changes nothing. So changes are not announced to other processes
    (``recheck_interval`` is None), and the manager does not lease the operations it runs
    here: after a restart it finishes those left running with ABORTED (or resumes them)
    instead, knowing that their previous owner is gone. The store still keeps leases given
    to :meth:`create` and answers :meth:`renew` and :meth:`expired_leases` as every store
    does, but :meth:`shared_secret` is None: no other process serves from the file.

    To inspect a file while its owner serves from it, open it with ``read_only=True``:
    no lock, no schema migration, every write refused with a StoreError, and a manager
    over it neither recovers nor expires operations.

    >>> import asyncio, lro_async, tempfile, os
    >>> from lro_async.stores.sqlite import SQLiteStore
    >>> async def main(path: str) -> None:
    ...     async with lro_async.OperationManager(store=SQLiteStore(path)) as manager:
    ...         op = await manager.create()
    ...         print(op.done)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     asyncio.run(main(os.path.join(tmp, "ops.db")))
    False

    :param path: the database file (created if missing; its folder must exist and be
        writable, for SQLite's ``-wal`` and ``-shm`` files and the lock file).
    :param synchronous: ``"NORMAL"`` or ``"FULL"``, see above.
    :param timeout: seconds any one call may take, waiting for another process's lock
        included, before it fails with :class:`~lro_async.StoreError`.
    :param read_only: open an existing file for reading only (see above).
    """

    # One worker thread runs every call in turn: waits and watches keep at most two of
    # their reads in its queue, so a GetOperation is never far from the front.
    wait_reads = 1

    def __init__(
        self,
        path: str | os.PathLike[str] = "lro_async.db",
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        timeout: float = 10.0,
        read_only: bool = False,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.path = os.fspath(path)
        self.synchronous = synchronous
        self.timeout = timeout
        self.read_only = read_only
        # Held from open() to aclose() by a store that serves (not read-only) from a file.
        self._lock: OwnerLock | None = None
        # The worker thread and the connection it alone uses; set by open(), cleared by aclose().
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- lifecycle --------------------------------------------------------------------

    async def open(
        self,
        notify: Callable[[str], None] | None = None,
        *,
        notify_all: Callable[[], None] | None = None,
    ) -> None:
        """Lock the file, switch it to WAL mode and create or migrate the schema.

        Read-only: open the file for reading, and check its schema.

        :param notify: unused: a single-process store has no one else's changes to announce.
        :param notify_all: unused, likewise.
        :raises StoreError: if another store has the file open (naming its owner); if the
            file cannot be opened, or written (unless read-only), or is not a database, or
            was written by a newer lro_async; each with the path and the reason.
        """
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if self._executor is not None:
            return
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="lro_async-sqlite"
        )
        try:
            self._connection = await self._call("open", self._connect)
            if self.read_only:
                await self._run("open", lambda c: _check_schema(c, os.path.abspath(self.path)))
            else:
                await self._run("schema migration", lambda c: _migrate(c, self.path))
        except BaseException:
            await self.aclose()
            self._closed = False  # a failed open may be retried
            raise

    def _connect(self) -> sqlite3.Connection:
        if self.path != _MEMORY:
            check_location(self.path, self.read_only)
        if self.read_only:
            uri = f"file:{urllib.parse.quote(os.path.abspath(self.path))}?mode=ro"
            return sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        if self.path != _MEMORY:
            lock = OwnerLock(os.path.abspath(self.path))
            lock.acquire()  # before touching the file: nothing changes if someone owns it
            self._lock = lock
        connection = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=True
        )
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal" and self.path != _MEMORY:
                raise StoreError(f"{self.path!r} cannot be put in WAL mode (it is in {mode!r})")
            connection.execute(f"PRAGMA synchronous = {self.synchronous}")
        except sqlite3.OperationalError as exc:
            connection.close()
            if (error := unwritable(self.path, exc)) is not None:
                raise error from exc
            raise
        except BaseException:
            connection.close()
            raise
        return connection

    async def aclose(self) -> None:
        """Close the database; idempotent. Calls made afterwards raise StoreError."""
        self._closed = True
        executor, connection, lock = self._executor, self._connection, self._lock
        self._executor = self._connection = self._lock = None
        if executor is None:
            return
        try:
            if connection is not None:
                future = executor.submit(connection.close)
                async with asyncio.timeout(self.timeout):
                    await asyncio.wrap_future(future)
        except (sqlite3.Error, TimeoutError) as exc:
            logger.warning("closing %r failed: %s", self, exc)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            if lock is not None:
                lock.release()  # after the connection is closed: the file is ours till then

    # -- the worker thread ------------------------------------------------------------

    async def _call(self, what: str, function: Callable[[], T]) -> T:
        """Run *function* on the worker thread within the timeout, mapping its errors."""
        executor = self._executor
        if executor is None:
            state = "closed" if self._closed else "not open (call open() first)"
            raise StoreError(f"{self!r} is {state}")
        future = executor.submit(function)
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.wrap_future(future)
        except TimeoutError as exc:
            # Queued: cancelled, it never runs. Running: stop its statement; the function's
            # transaction then rolls back. (Should it end just now, the interrupt may hit
            # the next call instead, which then fails too: rare, and only when stuck.)
            connection = self._connection
            if not future.cancel() and not future.done() and connection is not None:
                connection.interrupt()
            raise StoreError(
                f"SQLite {what} on {self.path!r} took more than {self.timeout} s"
            ) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite {what} on {self.path!r} failed: {exc}") from exc

    async def _run(self, what: str, job: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._connection
        if connection is None:
            state = "closed" if self._closed else "not open (call open() first)"
            raise StoreError(f"{self!r} is {state}")
        if self.read_only and what in _WRITES:
            raise StoreError(f"SQLite store {self.path!r} is open read-only: {what} refused")
        return await self._call(what, lambda: job(connection))

    # -- OperationStore ---------------------------------------------------------------

    async def create(self, record: OperationRecord, *, lease: Lease | None = None) -> None:
        row = _row(record, lease, None)
        await self._run("create", lambda connection: _insert(connection, record.name, row))

    async def create_once(
        self, record: OperationRecord, request_id: str, *, lease: Lease | None = None
    ) -> Written:
        row = _row(record, lease, request_id)

        def create_once(connection: sqlite3.Connection) -> Written:
            with _transaction(connection):  # one writer at a time: the check holds
                existing = connection.execute(
                    f"{_SELECT} WHERE parent = ? AND request_id = ?", (row[1], request_id)
                ).fetchone()
                if existing is not None:
                    return Written(_sql.record_from_row(*existing), applied=False)
                _insert(connection, record.name, row)
            return Written(record, applied=True)

        return await self._run("create_once", create_once)

    async def get(self, name: str) -> OperationRecord | None:
        return await self._run("get", lambda connection: _get(connection, name))

    async def set_metadata(
        self, name: str, metadata: any_pb2.Any, update_time: int
    ) -> Written | None:
        def change(operation: operations_pb2.Operation) -> None:
            operation.metadata.CopyFrom(metadata)

        return await self._run(
            "set_metadata", lambda connection: _modify(connection, name, update_time, change)
        )

    async def finish(
        self,
        name: str,
        update_time: int,
        *,
        response: any_pb2.Any | None = None,
        error: status_pb2.Status | None = None,
    ) -> Written | None:
        check_outcome(response, error)

        def change(operation: operations_pb2.Operation) -> None:
            mark_done(operation, response, error)

        return await self._run(
            "finish", lambda connection: _modify(connection, name, update_time, change)
        )

    async def delete(self, name: str) -> bool:
        def delete(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(f"DELETE FROM {_TABLE} WHERE name = ?", (name,))
            return cursor.rowcount > 0

        return await self._run("delete", delete)

    async def list(
        self,
        parent: str | None,
        *,
        filter: Filter | None = None,
        after: PageKey | None = None,
        limit: int,
    ) -> Records:
        if limit <= 0:
            return []
        return await self._run(
            "list", lambda connection: _list(connection, parent, filter, after, limit)
        )

    async def expire(self, done_before: int, limit: int) -> int:
        if limit <= 0:
            return 0

        def expire(connection: sqlite3.Connection) -> int:
            cursor = connection.execute(
                f"DELETE FROM {_TABLE} WHERE rowid IN (SELECT rowid FROM {_TABLE}"
                " WHERE done = 1 AND update_time < ? ORDER BY update_time LIMIT ?)",
                (done_before, limit),
            )
            return cursor.rowcount

        return await self._run("expire", expire)

    async def running(self, limit: int, after: str | None = None) -> Records:
        if limit <= 0:
            return []

        def running(connection: sqlite3.Connection) -> Records:
            if after is None:
                sql = f"{_SELECT} WHERE done = 0 ORDER BY name LIMIT ?"
                params: tuple[object, ...] = (limit,)
            else:
                sql = f"{_SELECT} WHERE done = 0 AND name > ? ORDER BY name LIMIT ?"
                params = (after, limit)
            return [_sql.record_from_row(*row) for row in connection.execute(sql, params)]

        return await self._run("running", running)

    async def renew(self, owner: str, expires: int, names: Collection[str]) -> int:
        unique = sorted(set(names))
        if not unique:
            return 0

        def renew(connection: sqlite3.Connection) -> int:
            renewed = 0
            for start in range(0, len(unique), _RENEW_BATCH):  # under SQLite's variable limit
                batch = unique[start : start + _RENEW_BATCH]
                cursor = connection.execute(
                    f"UPDATE {_TABLE} SET lease_expires = ? WHERE lease_owner = ? AND done = 0"
                    f" AND name IN ({', '.join('?' * len(batch))})",
                    (expires, owner, *batch),
                )
                renewed += cursor.rowcount
            return renewed

        return await self._run("renew", renew)

    async def expired_leases(self, now: int, limit: int) -> Records:
        if limit <= 0:
            return []

        def expired(connection: sqlite3.Connection) -> Records:
            rows = connection.execute(
                f"{_SELECT} WHERE done = 0 AND lease_owner IS NOT NULL AND lease_expires < ?"
                " ORDER BY name LIMIT ?",
                (now, limit),
            )
            return [_sql.record_from_row(*row) for row in rows]

        return await self._run("expired_leases", expired)


# -- on the worker thread ---------------------------------------------------------------


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """A write transaction: IMMEDIATE takes the write lock first, so no upgrade deadlock."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _check_schema(connection: sqlite3.Connection, path: str) -> None:
    """For a read-only store: the file holds lro_async's tables, in a version it knows."""
    try:
        row = connection.execute("SELECT max(version) FROM lro_schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY"):
            # WAL needs <path>-shm; with no server running it may not exist yet.
            raise StoreError(
                f"SQLite store {path!r} cannot be read: SQLite must create {path + '-shm'!r} "
                "to read it and its folder is read-only"
            ) from exc
        if "no such table" not in str(exc):
            raise
        raise StoreError(f"SQLite store {path!r} holds no lro_async operations") from None
    if (row[0] or 0) > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {row[0]}, newer than this lro_async "
            f"knows ({SCHEMA_VERSION}); upgrade lro_async"
        )


def _migrate(connection: sqlite3.Connection, path: str) -> None:
    """Create or migrate the schema, and check that the file can be written at all."""
    try:
        _migrate_schema(connection)
    except sqlite3.OperationalError as exc:
        if (error := unwritable(path, exc)) is not None:
            raise error from exc
        raise


def _row(
    record: OperationRecord, lease: Lease | None, request_id: str | None
) -> tuple[object, ...]:
    """The parameters of ``_INSERT`` for *record*."""
    error_code, metadata_type, response_type = _sql.derived_columns(record.operation)
    if record.done:
        lease = None  # nothing left to run, so no one to outlive
    return (
        record.name,
        parent_of(record.name),
        record.create_time,
        record.update_time,
        int(record.done),
        error_code,
        metadata_type,
        response_type,
        record.operation.SerializeToString(),
        None if lease is None else lease.owner,
        None if lease is None else lease.expires,
        request_id,
    )


def _insert(connection: sqlite3.Connection, name: str, row: tuple[object, ...]) -> None:
    try:
        connection.execute(_INSERT, row)
    except sqlite3.IntegrityError:
        raise StoreError(f"operation {name!r} exists already") from None


def _migrate_schema(connection: sqlite3.Connection) -> None:
    with _transaction(connection):
        connection.execute("CREATE TABLE IF NOT EXISTS lro_schema_version (version INTEGER)")
        row = connection.execute("SELECT max(version) FROM lro_schema_version").fetchone()
        current = row[0] or 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the database has schema version {current}, newer than this lro_async "
                f"knows ({SCHEMA_VERSION}); upgrade lro_async"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version]:
                connection.execute(statement)
            connection.execute("INSERT INTO lro_schema_version VALUES (?)", (version,))
            logger.info("SQLite store: migrated the schema to version %d", version)
        # A write that changes nothing, but that SQLite refuses at once on a read-only file
        # (a read-only file opens without complaint and reads fine: without this, only the
        # first real write would fail, e.g. every retention sweep).
        connection.execute("UPDATE lro_schema_version SET version = version WHERE 0")


def _get(connection: sqlite3.Connection, name: str) -> OperationRecord | None:
    row = connection.execute(f"{_SELECT} WHERE name = ?", (name,)).fetchone()
    return None if row is None else _sql.record_from_row(*row)


def _modify(
    connection: sqlite3.Connection,
    name: str,
    update_time: int,
    change: Callable[[operations_pb2.Operation], None],
) -> Written | None:
    with _transaction(connection):
        record = _get(connection, name)
        if record is None:
            return None
        if record.done:
            return Written(record, applied=False)
        operation = record.operation  # freshly parsed: ours to change and to hand out
        change(operation)
        error_code, metadata_type, response_type = _sql.derived_columns(operation)
        update_time = max(update_time, record.update_time)
        # A finish clears the lease: done operations have nothing to outlive. (On the
        # right of SET a column is its old value, hence the parameter.)
        connection.execute(
            f"UPDATE {_TABLE} SET done = ?, error_code = ?, metadata_type = ?,"
            " response_type = ?, update_time = ?, operation = ?,"
            " lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END,"
            " lease_expires = CASE WHEN ? THEN NULL ELSE lease_expires END"
            " WHERE name = ?",
            (
                int(operation.done),
                error_code,
                metadata_type,
                response_type,
                update_time,
                operation.SerializeToString(),
                int(operation.done),
                int(operation.done),
                name,
            ),
        )
    return Written(OperationRecord(operation, record.create_time, update_time), applied=True)


def _list(
    connection: sqlite3.Connection,
    parent: str | None,
    filter: Filter | None,
    after: PageKey | None,
    limit: int,
) -> Records:
    query = _sql.Query(_DIALECT)
    sql, exact = _sql.list_query(query, _TABLE, parent, filter, after, limit)
    if exact or filter is None:
        return [_sql.record_from_row(*row) for row in connection.execute(sql, query.params)]
    # The filter is only partly in the SQL: check each row, read on until the page is full.
    page: Records = []
    batch = max(limit, _sql.LIST_BATCH)
    while True:
        query = _sql.Query(_DIALECT)
        sql, _ = _sql.list_query(query, _TABLE, parent, filter, after, batch)
        rows = connection.execute(sql, query.params).fetchall()
        for row in rows:
            record = _sql.record_from_row(*row)
            if filter.matches(record):
                page.append(record)
                if len(page) == limit:
                    return page
        if len(rows) < batch:
            return page
        after = record.page_key
