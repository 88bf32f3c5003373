"""PostgresStore: operations in PostgreSQL, shared by any number of server replicas.

Every change (create, set_metadata, finish, delete) is published with
``pg_notify(channel, name)`` in the transaction that makes it, so it is announced exactly
when it commits. Each store keeps one dedicated connection that LISTENs on the channel
and hands every name to the ``notify`` callback given to :meth:`PostgresStore.open` (its
own changes included, which is harmless). If that connection drops, a task owned by the
store reconnects with backoff; notifications sent meanwhile are lost, which is why
``recheck_interval`` makes waiters re-read periodically: a lost notification delays a
wake-up by at most that long, and never loses it.

Conditional writes are optimistic: a write reads the row and its ``version``, changes the
operation, and updates only if the version is unchanged (``WHERE version = $n``), else it
reads again. Of racing finishes on any number of replicas exactly one commits; the rest
read it done and return ``applied=False``.

Leases: an operation a replica runs carries ``lease_owner`` and ``lease_expires`` columns,
which the owner's heartbeat renews (:meth:`PostgresStore.renew`) and which a finish clears.
When a replica dies its leases expire, and any other replica finds them with
:meth:`PostgresStore.expired_leases` (and finishes them with ABORTED). Renewing a lease
changes neither the operation nor its ``version`` and announces nothing, so it never makes
a concurrent write retry or a waiter wake. The schema also holds one random 32-byte secret,
created with it under the migration lock, that every replica reads: ListOperations page
tokens signed with it are accepted by any replica.

Request ids (:meth:`PostgresStore.create_once`, AIP-155) live in a ``request_id`` column
under a partial unique index on ``(parent, request_id)``. An ``INSERT ... ON CONFLICT DO
NOTHING`` that races another with the same key waits for it to commit and inserts
nothing, then reads the winner back: of racing replicas exactly one inserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Collection
from typing import TYPE_CHECKING, Final

from ..backoff import Backoff
from ..errors import StoreError
from ..names import parent_of
from . import _pg, _sql
from ._pg import db_errors
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

__all__ = ["PostgresStore"]

logger = logging.getLogger("lro_async")

SCHEMA_VERSION: Final = _pg.SCHEMA_VERSION
_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}", re.ASCII)
_DIALECT: Final = _sql.PostgresDialect()
_RECONNECT: Final = Backoff(initial=0.1, multiplier=2.0, maximum=5.0)
_NUL: Final = "\x00"  # PostgreSQL text cannot hold it, so no stored name contains it


def _bound(name: str) -> str:
    """A string to compare names with ``>`` exactly as with *name*, but without NUL.

    For a name without NUL, ``name > prefix + NUL + rest`` holds exactly when
    ``name > prefix``: nothing NUL-free lies between them.
    """
    return name.partition(_NUL)[0]


class PostgresStore(OperationStore):
    """Keeps operations in PostgreSQL, so that many server replicas can share them.

    Any replica answers Get/List/Wait/Cancel for any operation; each one learns of the
    others' changes through LISTEN/NOTIFY. The schema is created (or migrated) on
    :meth:`open`, safely even when many replicas start at once.

    >>> import lro_async
    >>> from lro_async.stores.postgres import PostgresStore
    >>> async def serve() -> None:
    ...     store = PostgresStore("postgresql://lro@db.internal/lro", schema="lro_async")
    ...     async with lro_async.OperationManager(store=store) as manager:
    ...         ...

    :param dsn: a libpq connection string or URL.
    :param schema: the schema holding the tables (created if missing): a lowercase SQL
        identifier. Replicas serving the same operations use the same schema.
    :param channel: the NOTIFY channel (default: the schema's name).
    :param min_connections: connections the query pool keeps open.
    :param max_connections: the most connections the query pool opens; the store also
        holds one more for LISTEN.
    :param timeout: seconds any one call may take, waiting for a pooled connection
        included, before it fails with :class:`~lro_async.StoreError`.
    :param recheck_interval: seconds after which waiters re-read an operation even
        without a notification.
    :param ping_interval: seconds between health checks of an idle LISTEN connection.
    :param reconnect: delays between attempts to re-open a lost LISTEN connection.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "lro_async",
        channel: str | None = None,
        min_connections: int = 1,
        max_connections: int = 10,
        timeout: float = 10.0,
        recheck_interval: float = 1.0,
        ping_interval: float = 10.0,
        reconnect: Backoff = _RECONNECT,
    ) -> None:
        channel = schema if channel is None else channel
        for label, identifier in (("schema", schema), ("channel", channel)):
            if not _IDENTIFIER.fullmatch(identifier):
                raise ValueError(
                    f"{label} must be a lowercase SQL identifier of at most 63 characters "
                    f"([a-z_][a-z0-9_]*), not {identifier!r}"
                )
        if not 0 <= min_connections <= max_connections or max_connections < 1:
            raise ValueError(
                "need 0 <= min_connections <= max_connections and max_connections >= 1"
            )
        for label, value in (
            ("timeout", timeout),
            ("recheck_interval", recheck_interval),
            ("ping_interval", ping_interval),
        ):
            if not value > 0:
                raise ValueError(f"{label} must be positive, not {value!r}")
        self.dsn = dsn
        self.schema = schema
        self.channel = channel
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.timeout = timeout
        self.recheck_interval = recheck_interval
        # Waiters re-read every recheck_interval: a quarter of the pool is theirs, the rest
        # is left for Get, List, Cancel, Delete and the writes, however many wait.
        self.wait_reads = max(1, max_connections // 4)
        self.ping_interval = ping_interval
        self.reconnect = reconnect
        self._table = f'"{schema}".operations'
        self._pool: _pg.Pool | None = None
        self._listener: _pg.Listener | None = None
        self._closed = False
        self._secret: bytes | None = None  # read from the schema by open()

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r}, channel={self.channel!r})"

    @property
    def application_name(self) -> str:
        """The ``application_name`` of the query pool's connections (``pg_stat_activity``)."""
        return f"lro_async {self.schema}"[:63]

    @property
    def listener_application_name(self) -> str:
        """The ``application_name`` of the LISTEN connection."""
        return f"lro_async listen {self.channel}"[:63]

    # -- lifecycle --------------------------------------------------------------------

    async def open(
        self,
        notify: Callable[[str], None] | None = None,
        *,
        notify_all: Callable[[], None] | None = None,
    ) -> None:
        """Connect, create or migrate the schema, and start listening.

        :param notify: called with the name of every operation that changed (on any replica).
        :param notify_all: called when the LISTEN connection was lost and is back: changes
            made meanwhile were not announced, so every waiter should re-read (until then,
            ``recheck_interval`` bounds how late a waiter notices).
        :raises StoreError: if the database cannot be reached, the schema cannot be
            created, or it was created by a newer lro_async.
        """
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if self._pool is not None:
            return
        try:
            with db_errors(f"connect to {_pg.address(self.dsn)}", self.timeout):
                async with asyncio.timeout(self.timeout):
                    self._pool = await _pg.create_pool(
                        self.dsn,
                        min_size=self.min_connections,
                        max_size=self.max_connections,
                        timeout=self.timeout,
                        command_timeout=self.timeout,
                        server_settings={"application_name": self.application_name},
                    )
            await self._migrate()
            self._listener = _pg.Listener(
                self.dsn,
                self.channel,
                application_name=self.listener_application_name,
                timeout=self.timeout,
                ping_interval=self.ping_interval,
                reconnect=self.reconnect,
                notify=notify,
                on_reconnect=notify_all,
                owner=repr(self),
            )
            await self._listener.start()
        except BaseException:
            await self.aclose()
            self._closed = False  # a failed open may be retried
            raise

    async def aclose(self) -> None:
        """Stop listening and close every connection; idempotent."""
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.aclose()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(self.timeout):
                    await pool.close()
            except (TimeoutError, *_pg.DB_ERRORS) as exc:
                logger.warning("closing %r took too long or failed (%s); terminating", self, exc)
                pool.terminate()

    async def _migrate(self) -> None:
        async with self._connection("schema migration") as connection:
            self._secret = await _pg.migrate(connection, self.schema)

    @contextlib.asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[_pg.Connection]:
        pool = self._pool
        if pool is None:
            state = "closed" if self._closed else "not open (call open() first)"
            raise StoreError(f"{self!r} is {state}")
        with db_errors(what, self.timeout):
            async with asyncio.timeout(self.timeout), pool.acquire() as connection:
                yield connection

    # -- OperationStore ---------------------------------------------------------------

    async def create(self, record: OperationRecord, *, lease: Lease | None = None) -> None:
        async with self._connection("create") as connection:
            created = await self._insert(connection, record, lease, None)
        if not created:
            raise StoreError(f"operation {record.name!r} exists already")

    async def create_once(
        self, record: OperationRecord, request_id: str, *, lease: Lease | None = None
    ) -> Written:
        if _NUL in request_id:
            raise StoreError(f"PostgreSQL cannot store a request id with NUL: {request_id!r}")
        parent = parent_of(record.name)
        async with self._connection("create_once") as connection:
            while True:  # until this insert or another one with the request id is seen
                # A racing insert of the same (parent, request_id) makes this one wait for
                # it to commit, then insert nothing: the unique index decides, on any replica.
                if await self._insert(connection, record, lease, request_id):
                    return Written(record, applied=True)
                row = await connection.fetchrow(
                    f"SELECT operation, create_time, update_time FROM {self._table}"
                    " WHERE parent = $1 AND request_id = $2",
                    parent,
                    request_id,
                )
                if row is not None:
                    return Written(_sql.record_from_row(*row), applied=False)
                if await connection.fetchval(
                    f"SELECT 1 FROM {self._table} WHERE name = $1", record.name
                ):
                    raise StoreError(f"operation {record.name!r} exists already")
                # The operation holding the request id was deleted just now: insert again.

    async def _insert(
        self,
        connection: _pg.Connection,
        record: OperationRecord,
        lease: Lease | None,
        request_id: str | None,
    ) -> bool:
        """Insert *record* unless its name or request id is taken; return whether it was."""
        if _NUL in record.name:
            raise StoreError(f"PostgreSQL cannot store a name containing NUL: {record.name!r}")
        if lease is not None and _NUL in lease.owner:
            raise StoreError(f"PostgreSQL cannot store a lease owner with NUL: {lease.owner!r}")
        if record.done:
            lease = None  # nothing left to run, so no one to outlive
        error_code, metadata_type, response_type = _sql.derived_columns(record.operation)
        # ON CONFLICT without a target: a taken name or (parent, request_id) inserts nothing.
        row = await connection.fetchrow(
            f"WITH created AS (INSERT INTO {self._table} (name, parent, create_time,"
            " update_time, done, error_code, metadata_type, response_type, operation,"
            " lease_owner, lease_expires, request_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $11, $12, $13)"
            " ON CONFLICT DO NOTHING RETURNING name)"
            " SELECT pg_notify($10, name) FROM created",
            record.name,
            parent_of(record.name),
            record.create_time,
            record.update_time,
            record.done,
            error_code,
            metadata_type,
            response_type,
            record.operation.SerializeToString(),
            self.channel,
            None if lease is None else lease.owner,
            None if lease is None else lease.expires,
            request_id,
        )
        return row is not None

    async def get(self, name: str) -> OperationRecord | None:
        if _NUL in name:
            return None
        async with self._connection("get") as connection:
            row = await connection.fetchrow(
                f"SELECT operation, create_time, update_time FROM {self._table} WHERE name = $1",
                name,
            )
        return None if row is None else _sql.record_from_row(*row)

    async def set_metadata(
        self, name: str, metadata: any_pb2.Any, update_time: int
    ) -> Written | None:
        def change(operation: operations_pb2.Operation) -> None:
            operation.metadata.CopyFrom(metadata)

        return await self._modify("set_metadata", name, update_time, change)

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

        return await self._modify("finish", name, update_time, change)

    async def _modify(
        self,
        what: str,
        name: str,
        update_time: int,
        change: Callable[[operations_pb2.Operation], None],
    ) -> Written | None:
        if _NUL in name:
            return None
        async with self._connection(what) as connection:
            while True:  # until the row did not change between reading and writing it
                row = await connection.fetchrow(
                    f"SELECT operation, create_time, update_time, version FROM {self._table}"
                    " WHERE name = $1",
                    name,
                )
                if row is None:
                    return None
                record = _sql.record_from_row(row[0], row[1], row[2])
                if record.done:
                    return Written(record, applied=False)
                operation = record.operation  # freshly parsed: ours to change and hand out
                change(operation)
                error_code, metadata_type, response_type = _sql.derived_columns(operation)
                # A finish clears the lease: done operations have nothing to outlive.
                written = await connection.fetchrow(
                    f"WITH changed AS (UPDATE {self._table} SET done = $3, error_code = $4,"
                    " metadata_type = $5, response_type = $6, operation = $7,"
                    " update_time = greatest(update_time, $8), version = version + 1,"
                    " lease_owner = CASE WHEN $3 THEN NULL ELSE lease_owner END,"
                    " lease_expires = CASE WHEN $3 THEN NULL ELSE lease_expires END"
                    " WHERE name = $1 AND version = $2 RETURNING name, update_time)"
                    " SELECT update_time, pg_notify($9, name) FROM changed",
                    name,
                    row[3],
                    operation.done,
                    error_code,
                    metadata_type,
                    response_type,
                    operation.SerializeToString(),
                    update_time,
                    self.channel,
                )
                if written is not None:
                    record = OperationRecord(operation, record.create_time, written[0])
                    return Written(record, applied=True)

    async def delete(self, name: str) -> bool:
        if _NUL in name:
            return False
        async with self._connection("delete") as connection:
            row = await connection.fetchrow(
                f"WITH deleted AS (DELETE FROM {self._table} WHERE name = $1 RETURNING name)"
                " SELECT pg_notify($2, name) FROM deleted",
                name,
                self.channel,
            )
        return row is not None

    async def list(
        self,
        parent: str | None,
        *,
        filter: Filter | None = None,
        after: PageKey | None = None,
        limit: int,
    ) -> Records:
        if limit <= 0 or (parent is not None and _NUL in parent):
            return []
        if after is not None:
            after = (after[0], _bound(after[1]))
        query = _sql.Query(_DIALECT)
        sql, exact = _sql.list_query(query, self._table, parent, filter, after, limit)
        async with self._connection("list") as connection:
            if exact or filter is None:
                rows = await connection.fetch(sql, *query.params)
                return [_sql.record_from_row(*row) for row in rows]
            # The filter is only partly in the SQL: check each row, read on until full.
            page: Records = []
            batch = max(limit, _sql.LIST_BATCH)
            while True:
                query = _sql.Query(_DIALECT)
                sql, _ = _sql.list_query(query, self._table, parent, filter, after, batch)
                rows = await connection.fetch(sql, *query.params)
                for row in rows:
                    record = _sql.record_from_row(*row)
                    if filter.matches(record):
                        page.append(record)
                        if len(page) == limit:
                            return page
                if len(rows) < batch:
                    return page
                after = record.page_key

    async def expire(self, done_before: int, limit: int) -> int:
        if limit <= 0:
            return 0
        async with self._connection("expire") as connection:
            # SKIP LOCKED: replicas expiring at the same time take different rows.
            deleted: int = await connection.fetchval(
                f"WITH deleted AS (DELETE FROM {self._table} WHERE name IN"
                f" (SELECT name FROM {self._table} WHERE done AND update_time < $1"
                " ORDER BY update_time LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING 1)"
                " SELECT count(*) FROM deleted",
                done_before,
                limit,
            )
        return deleted

    async def running(self, limit: int, after: str | None = None) -> Records:
        if limit <= 0:
            return []
        select = f"SELECT operation, create_time, update_time FROM {self._table} WHERE NOT done"
        async with self._connection("running") as connection:
            if after is None:
                rows = await connection.fetch(f"{select} ORDER BY name LIMIT $1", limit)
            else:
                rows = await connection.fetch(
                    f"{select} AND name > $1 ORDER BY name LIMIT $2", _bound(after), limit
                )
        return [_sql.record_from_row(*row) for row in rows]

    async def renew(self, owner: str, expires: int, names: Collection[str]) -> int:
        if _NUL in owner:
            return 0  # no stored owner contains NUL
        stored = sorted({name for name in names if _NUL not in name})  # nor name
        if not stored:
            return 0
        async with self._connection("renew") as connection:
            result = await connection.execute(
                f"UPDATE {self._table} SET lease_expires = $2"
                " WHERE lease_owner = $1 AND NOT done AND name = ANY($3::text[])",
                owner,
                expires,
                stored,
            )
        return int(result.rpartition(" ")[2])  # the status is "UPDATE <count>"

    async def expired_leases(self, now: int, limit: int) -> Records:
        if limit <= 0:
            return []
        async with self._connection("expired_leases") as connection:
            rows = await connection.fetch(
                f"SELECT operation, create_time, update_time FROM {self._table}"
                " WHERE NOT done AND lease_owner IS NOT NULL AND lease_expires < $1"
                " ORDER BY name LIMIT $2",
                now,
                limit,
            )
        return [_sql.record_from_row(*row) for row in rows]

    async def shared_secret(self) -> bytes:
        """The schema's random 32-byte secret, the same for every store opened on it.

        :raises StoreError: if the store is not open.
        """
        if self._secret is None:
            state = "closed" if self._closed else "not open (call open() first)"
            raise StoreError(f"{self!r} is {state}")
        return self._secret
