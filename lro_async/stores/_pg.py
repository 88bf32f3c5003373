"""asyncpg for PostgresStore: typed handles, error mapping, the schema and its migrations,
and the LISTEN connection."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, Protocol

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no types

from ..errors import StoreError

if TYPE_CHECKING:
    from ..backoff import Backoff

__all__ = [
    "DB_ERRORS",
    "SCHEMA_VERSION",
    "Connection",
    "Listener",
    "Pool",
    "connect",
    "create_pool",
    "db_errors",
    "migrate",
]

logger = logging.getLogger("lro_async")

DB_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)
"""What asyncpg raises when the database or the connection to it fails."""

SCHEMA_VERSION: Final = 3
SECRET_BYTES: Final = 32


# asyncpg ships no type information: these protocols name the little of it used here.
class Connection(Protocol):
    async def fetch(self, query: str, *args: object) -> list[Sequence[Any]]: ...
    async def fetchrow(self, query: str, *args: object) -> Sequence[Any] | None: ...
    async def fetchval(self, query: str, *args: object) -> Any: ...
    async def execute(self, query: str, *args: object) -> str: ...
    def transaction(self) -> AbstractAsyncContextManager[object]: ...
    async def add_listener(self, channel: str, callback: Callable[..., None]) -> None: ...
    def add_termination_listener(self, callback: Callable[[object], None]) -> None: ...
    async def close(self, *, timeout: float | None = None) -> None: ...
    def terminate(self) -> None: ...


class Pool(Protocol):
    def acquire(self) -> AbstractAsyncContextManager[Connection]: ...
    async def close(self) -> None: ...
    def terminate(self) -> None: ...


create_pool: Callable[..., Awaitable[Pool]] = asyncpg.create_pool
connect: Callable[..., Awaitable[Connection]] = asyncpg.connect


@contextlib.contextmanager
def db_errors(what: str, timeout: float) -> Iterator[None]:
    """Turn database failures and timeouts inside the block into :class:`StoreError`."""
    try:
        yield
    except TimeoutError as exc:
        raise StoreError(f"PostgreSQL {what} took more than {timeout} s") from exc
    except DB_ERRORS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__  # one line
        raise StoreError(f"PostgreSQL {what} failed: {reason}") from exc


def address(dsn: str) -> str:
    """``host:port/database`` of a libpq URL or ``key=value`` string, for messages.

    Best effort (never the password); what libpq would default to is shown as such.
    """
    if "://" in dsn:
        parts = urllib.parse.urlsplit(dsn)
        query = dict(urllib.parse.parse_qsl(parts.query))
        try:
            port = str(parts.port or query.get("port", "5432"))
        except ValueError:  # not a number: shown as written
            port = parts.netloc.rpartition(":")[2]
        host = parts.hostname or query.get("host", "localhost")
        database = parts.path.lstrip("/")
    else:
        pairs = dict(re.findall(r"(\w+)\s*=\s*('[^']*'|\S+)", dsn))
        host = pairs.get("host", "localhost").strip("'")
        port = pairs.get("port", "5432").strip("'")
        database = pairs.get("dbname", "").strip("'")
    return f"{host}:{port}" + (f"/{database}" if database else "")


Statement = tuple[str, tuple[object, ...]]  # SQL and its parameters


def _migrations(schema: str) -> dict[int, tuple[Statement, ...]]:
    """The statements that bring a schema from the version before each key to that key.

    *schema* is a quoted identifier. Each version runs in the transaction that holds the
    migration lock, so replicas starting at once see it applied entirely or not at all.
    """
    table = f"{schema}.operations"
    return {
        1: (
            # COLLATE "C": order and compare names by code point, as Python (and every
            # other store) does, whatever the database's default collation.
            (
                f"""CREATE TABLE {table} (
                    name text COLLATE "C" PRIMARY KEY,
                    parent text COLLATE "C" NOT NULL,
                    create_time bigint NOT NULL,
                    update_time bigint NOT NULL,
                    done boolean NOT NULL,
                    error_code integer NOT NULL,
                    metadata_type text COLLATE "C" NOT NULL,
                    response_type text COLLATE "C" NOT NULL,
                    version bigint NOT NULL DEFAULT 0,
                    operation bytea NOT NULL
                )""",
                (),
            ),
            (f"CREATE INDEX operations_by_parent ON {table} (parent, create_time, name)", ()),
            (f"CREATE INDEX operations_by_time ON {table} (create_time, name)", ()),
            (f"CREATE INDEX operations_by_done ON {table} (done, update_time)", ()),
            (f"CREATE INDEX operations_running ON {table} (name) WHERE NOT done", ()),
        ),
        2: (
            # Leases: set only on operations a replica runs, cleared when they finish.
            # Nullable without a default, so adding them rewrites no row.
            (
                f'ALTER TABLE {table} ADD COLUMN lease_owner text COLLATE "C",'
                " ADD COLUMN lease_expires bigint",
                (),
            ),
            # expired_leases() and renew(): small indexes over running leased operations.
            (
                f"CREATE INDEX operations_lease_expiry ON {table} (lease_expires)"
                " WHERE NOT done AND lease_owner IS NOT NULL",
                (),
            ),
            (
                f"CREATE INDEX operations_lease_owner ON {table} (lease_owner)"
                " WHERE NOT done AND lease_owner IS NOT NULL",
                (),
            ),
            # One row, written once with the schema: every replica reads the same secret.
            (
                f"""CREATE TABLE {schema}.shared_secret (
                    one boolean PRIMARY KEY DEFAULT true CHECK (one),
                    secret bytea NOT NULL CHECK (octet_length(secret) = {SECRET_BYTES})
                )""",
                (),
            ),
            (
                f"INSERT INTO {schema}.shared_secret (secret) VALUES ($1)",
                (secrets.token_bytes(SECRET_BYTES),),
            ),
        ),
        3: (
            # AIP-155 request ids: unique per parent while the operation's row lives.
            # Nullable without a default (no row rewritten); the partial index holds only
            # the operations created with one.
            (f'ALTER TABLE {table} ADD COLUMN request_id text COLLATE "C"', ()),
            (
                f"CREATE UNIQUE INDEX operations_by_request ON {table} (parent, request_id)"
                " WHERE request_id IS NOT NULL",
                (),
            ),
        ),
    }


async def migrate(connection: Connection, schema: str) -> bytes:
    """Create *schema* or bring it to :data:`SCHEMA_VERSION`; return its shared secret.

    Replicas starting at once queue on a transaction-scoped advisory lock named after the
    schema: the first one migrates, the others then find nothing left to do.

    :param schema: the schema's (unquoted) name.
    :raises StoreError: if the schema has a newer version than this code knows.
    """
    quoted = f'"{schema}"'
    digest = hashlib.blake2b(f"lro_async schema {schema}".encode(), digest_size=8)
    lock = int.from_bytes(digest.digest(), "big", signed=True)
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", lock)
        current = 0
        if await connection.fetchval("SELECT to_regclass($1)", f"{quoted}.schema_version"):
            current = await connection.fetchval(f"SELECT max(version) FROM {quoted}.schema_version")
        else:
            if not await connection.fetchval("SELECT to_regnamespace($1)", quoted):
                await connection.execute(f"CREATE SCHEMA {quoted}")
            await connection.execute(f"CREATE TABLE {quoted}.schema_version (version integer)")
        current = current or 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"schema {schema!r} has version {current}, newer than this lro_async "
                f"knows ({SCHEMA_VERSION}); upgrade lro_async"
            )
        migrations = _migrations(quoted)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement, args in migrations[version]:
                await connection.execute(statement, *args)
            await connection.execute(f"INSERT INTO {quoted}.schema_version VALUES ($1)", version)
            logger.info("PostgresStore: migrated %r to schema version %d", schema, version)
        secret: bytes | None = await connection.fetchval(
            f"SELECT secret FROM {quoted}.shared_secret"
        )
    if secret is None:
        raise StoreError(f"schema {schema!r} lost its shared secret (its one row was deleted)")
    return secret


class Listener:
    """A connection that LISTENs on a channel, re-opened with backoff whenever it is lost.

    :meth:`start` connects (raising :class:`StoreError` if it cannot) and starts the one
    task this object owns, which watches the connection (it learns of a close at once, and
    pings an idle one every *ping_interval*) and replaces it when lost; :meth:`aclose`
    ends that task and closes the connection.
    """

    def __init__(
        self,
        dsn: str,
        channel: str,
        *,
        application_name: str,
        timeout: float,
        ping_interval: float,
        reconnect: Backoff,
        notify: Callable[[str], None] | None,
        on_reconnect: Callable[[], None] | None,
        owner: str,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._application_name = application_name
        self._timeout = timeout
        self._ping_interval = ping_interval
        self._reconnect = reconnect
        self._notify = notify
        self._on_reconnect = on_reconnect
        self._owner = owner  # for log messages
        self._connection: Connection | None = None  # the current LISTEN connection
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        connection, lost = await self._listen()
        self._connection = connection
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(connection, lost), name=f"lro_async:listen:{self._channel}"
        )

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close(timeout=self._timeout)
            except (TimeoutError, *DB_ERRORS):
                connection.terminate()

    async def _listen(self) -> tuple[Connection, asyncio.Event]:
        """Open a connection that LISTENs; the event is set when the connection is lost."""
        lost = asyncio.Event()
        with db_errors("LISTEN", self._timeout):
            async with asyncio.timeout(self._timeout):
                connection = await connect(
                    self._dsn,
                    timeout=self._timeout,
                    server_settings={"application_name": self._application_name},
                )
                try:
                    connection.add_termination_listener(lambda _: lost.set())
                    await connection.add_listener(self._channel, self._on_notification)
                except BaseException:
                    connection.terminate()
                    raise
        return connection, lost

    def _on_notification(self, connection: object, pid: int, channel: str, name: str) -> None:
        if self._notify is None:
            return
        try:
            self._notify(name)
        except Exception:
            logger.exception("the notify callback of %s failed for %r", self._owner, name)

    async def _supervise(self, connection: Connection, lost: asyncio.Event) -> None:
        while True:
            try:
                await self._watch(connection, lost)
            except Exception:  # a bug must not end listening for good
                logger.exception("%s: watching the LISTEN connection failed", self._owner)
            logger.warning(
                "%s lost its LISTEN connection; reconnecting (changes made meanwhile are "
                "noticed when waiters recheck)",
                self._owner,
            )
            self._connection = None
            connection.terminate()
            connection, lost = await self._relisten()
            self._connection = connection
            logger.info("%s is listening again", self._owner)
            if self._on_reconnect is not None:
                try:
                    self._on_reconnect()
                except Exception:
                    logger.exception("the on_reconnect callback of %s failed", self._owner)

    async def _watch(self, connection: Connection, lost: asyncio.Event) -> None:
        """Return once *connection* is closed, or does not answer a ping in time."""
        while True:
            try:
                async with asyncio.timeout(self._ping_interval):
                    await lost.wait()
                return
            except TimeoutError:
                pass
            try:
                async with asyncio.timeout(self._timeout):
                    await connection.execute("SELECT 1")
            except (TimeoutError, *DB_ERRORS):
                return

    async def _relisten(self) -> tuple[Connection, asyncio.Event]:
        for delay in self._reconnect.delays():
            await asyncio.sleep(delay)
            try:
                return await self._listen()
            except Exception as exc:
                logger.warning("%s could not listen again: %s; retrying", self._owner, exc)
        raise AssertionError("Backoff.delays() never ends")
