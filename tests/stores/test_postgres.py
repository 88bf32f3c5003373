"""PostgresStore beyond the contract: replicas, NOTIFY, reconnection, failures."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

import asyncpg  # type: ignore[import-untyped]
import pytest
from google.longrunning import operations_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from lro_async import Backoff, StoreError
from lro_async.stores import Lease, OperationRecord, _pg
from lro_async.stores.postgres import PostgresStore

from ..waiting import until
from .conftest import MakePostgres, admin_connection, fresh_schema
from .test_contract import names

pytestmark = pytest.mark.postgres

_FAST_RECONNECT = Backoff(initial=0.05, multiplier=2.0, maximum=0.5)


def running(name: str, create_time: int = 1) -> OperationRecord:
    return OperationRecord(operations_pb2.Operation(name=name), create_time, create_time)


class Inbox:
    """Collects the names a store's LISTEN connection hands to ``notify``, with arrival times."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, float]] = asyncio.Queue()

    def __call__(self, name: str) -> None:
        self.queue.put_nowait((name, time.perf_counter()))

    async def next(self, name: str, timeout: float = 2.0) -> float:
        """Wait for a notification of *name* (skipping others); return when it arrived."""
        async with asyncio.timeout(timeout):
            while True:
                got, at = await self.queue.get()
                if got == name:
                    return at

    async def first(self, timeout: float = 2.0) -> str:
        """The name of the next notification, whatever it is (they come in commit order)."""
        async with asyncio.timeout(timeout):
            got, _ = await self.queue.get()
        return got


async def terminate(dsn: str, application_name: str) -> int:
    """Kill every backend with that application_name, as a DBA or a failover would."""
    admin = await admin_connection(dsn)
    try:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            application_name,
        )
    finally:
        await admin.close()
    return killed


async def pids(dsn: str, application_name: str) -> list[int]:
    """The backends with that application_name now."""
    admin = await admin_connection(dsn)
    try:
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", application_name
        )
    finally:
        await admin.close()
    return [row["pid"] for row in rows]


async def exited(dsn: str, killed: list[int]) -> None:
    """Wait until PostgreSQL has none of the *killed* backends any more."""
    admin = await admin_connection(dsn)
    left: list[int] = []

    async def gone() -> bool:
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[])", killed
        )
        left[:] = [row["pid"] for row in rows]
        return not left

    try:
        await until(gone, f"the terminated backends {killed} exited", details=lambda: left)
    finally:
        await admin.close()


async def test_changes_reach_another_replica_within_100_ms(make_postgres: MakePostgres) -> None:
    inbox = Inbox()
    writer = await make_postgres()
    await make_postgres(inbox)  # the other replica
    progress = any_pb2.Any(type_url="type.googleapis.com/x.Progress", value=b"\x08\x01")

    async def change(kind: str, name: str) -> None:
        if kind == "create":
            await writer.create(running(name))
        elif kind == "set_metadata":
            await writer.set_metadata(name, progress, 2)
        elif kind == "finish":
            await writer.finish(name, 3, error=status_pb2.Status(code=1))
        else:
            await writer.delete(name)

    latencies = []
    for i in range(50):
        name = f"projects/p/operations/{i}"
        for kind in ("create", "set_metadata", "finish", "delete"):
            started = time.perf_counter()
            await change(kind, name)
            latencies.append(await inbox.next(name) - started)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"\nNOTIFY to another replica over {len(latencies)} changes (write included): "
        f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, max {latencies[-1] * 1000:.2f} ms"
    )
    assert p99 < 0.1


async def test_a_replica_hears_its_own_changes_too(make_postgres: MakePostgres) -> None:
    inbox = Inbox()
    store = await make_postgres(inbox)
    await store.create(running("operations/a"))
    await inbox.next("operations/a")


async def test_refused_writes_are_not_announced(make_postgres: MakePostgres) -> None:
    inbox = Inbox()
    store = await make_postgres(inbox)
    await store.create(running("operations/a"))
    await store.finish("operations/a", 2, error=status_pb2.Status(code=1))
    await inbox.next("operations/a")
    await inbox.next("operations/a")
    with pytest.raises(StoreError):
        await store.create(running("operations/a"))
    written = await store.finish("operations/a", 3, error=status_pb2.Status(code=2))
    assert written is not None
    assert not written.applied
    assert not await store.delete("operations/nope")
    await store.create(running("operations/b"))
    assert await inbox.first() == "operations/b", "a refused write was announced"
    assert inbox.queue.empty()


async def test_the_listener_reconnects_after_its_connection_is_killed(
    make_postgres: MakePostgres, postgres_dsn: str
) -> None:
    inbox = Inbox()
    reconnected = asyncio.Event()
    writer = await make_postgres()
    listener = await make_postgres(inbox, reconnected.set, reconnect=_FAST_RECONNECT)
    assert await terminate(postgres_dsn, listener.listener_application_name) >= 1
    async with asyncio.timeout(5):
        await reconnected.wait()
    await writer.create(running("operations/after"))
    await inbox.next("operations/after")
    # The store's own queries were not affected.
    assert await listener.get("operations/after") is not None


async def test_a_query_on_a_killed_pool_connection_raises_store_error_then_recovers(
    make_postgres: MakePostgres, postgres_dsn: str
) -> None:
    store = await make_postgres(min_connections=1, max_connections=1)
    await store.create(running("operations/a"))
    killed = await pids(postgres_dsn, store.application_name)
    assert await terminate(postgres_dsn, store.application_name) == 1
    await exited(postgres_dsn, killed)
    with contextlib.suppress(StoreError):  # the pool may notice it only by using it
        await store.get("operations/a")
    assert await store.get("operations/a") is not None


async def test_concurrent_finishes_from_two_replicas_have_one_winner(
    make_postgres: MakePostgres,
) -> None:
    first, second = await make_postgres(), await make_postgres()
    await first.create(running("operations/race"))

    async def finish(store: PostgresStore, code: int) -> bool:
        written = await store.finish("operations/race", 10, error=status_pb2.Status(code=code))
        assert written is not None
        return written.applied

    results = await asyncio.gather(*(finish(first if i % 2 else second, i) for i in range(1, 41)))
    assert sum(results) == 1
    winner = results.index(True) + 1
    final = await second.get("operations/race")
    assert final is not None
    assert final.operation.error.code == winner


async def test_metadata_racing_a_finish_on_another_replica_is_never_lost_or_applied_late(
    make_postgres: MakePostgres,
) -> None:
    first, second = await make_postgres(), await make_postgres()
    await first.create(running("operations/a"))
    progress = [any_pb2.Any(type_url=f"t/p{i}") for i in range(30)]

    async def report(i: int) -> bool:
        written = await first.set_metadata("operations/a", progress[i], 5)
        assert written is not None
        return written.applied

    finishing = asyncio.ensure_future(
        second.finish("operations/a", 9, error=status_pb2.Status(code=4))
    )
    applied = await asyncio.gather(*(report(i) for i in range(30)))
    finished = await finishing
    assert finished is not None
    assert finished.applied
    final = await first.get("operations/a")
    assert final == finished.record  # no metadata write landed after the finish
    # The finish kept the metadata that was current when it applied.
    before = [progress[i] for i, ok in enumerate(applied) if ok]
    assert not before or final.operation.metadata in before


async def test_five_replicas_creating_the_schema_at_once_all_succeed(
    make_postgres: MakePostgres, postgres_dsn: str, pg_schema: str
) -> None:
    stores = await asyncio.gather(*(make_postgres() for _ in range(5)))
    for i, store in enumerate(stores):
        await store.create(running(f"operations/{i}"))
    assert len(await stores[0].list(None, limit=10)) == 5
    admin = await admin_connection(postgres_dsn)
    try:
        versions = await admin.fetch(f'SELECT version FROM "{pg_schema}".schema_version')
    finally:
        await admin.close()
    assert [tuple(row) for row in versions] == [(v,) for v in range(1, _pg.SCHEMA_VERSION + 1)]


async def test_a_schema_from_a_newer_version_is_refused(
    make_postgres: MakePostgres, postgres_dsn: str, pg_schema: str
) -> None:
    await make_postgres()
    admin = await admin_connection(postgres_dsn)
    try:
        await admin.execute(f'INSERT INTO "{pg_schema}".schema_version VALUES (99)')
    finally:
        await admin.close()
    with pytest.raises(StoreError, match="version 99"):
        await make_postgres()


async def test_a_call_blocked_by_a_lock_fails_after_the_timeout(
    make_postgres: MakePostgres, postgres_dsn: str, pg_schema: str
) -> None:
    store = await make_postgres(timeout=0.3)
    await store.create(running("operations/a"))
    admin = await admin_connection(postgres_dsn)
    try:
        async with admin.transaction():
            await admin.execute(
                f"SELECT 1 FROM \"{pg_schema}\".operations WHERE name = 'operations/a' FOR UPDATE"
            )
            started = time.monotonic()
            with pytest.raises(StoreError, match="finish"):
                await store.finish("operations/a", 2, error=status_pb2.Status(code=1))
            assert time.monotonic() - started < 2
    finally:
        await admin.close()
    written = await store.finish("operations/a", 2, error=status_pb2.Status(code=1))
    assert written is not None
    assert written.applied


async def test_an_unreachable_database_raises_store_error_quickly() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test", timeout=2)
    started = time.monotonic()
    with pytest.raises(StoreError, match="connect"):
        await store.open(lambda name: None)
    assert time.monotonic() - started < 3
    with pytest.raises(StoreError, match="not open"):
        await store.get("operations/a")
    await store.aclose()


async def test_using_a_closed_store_raises_store_error(make_postgres: MakePostgres) -> None:
    store = await make_postgres()
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.get("operations/a")
    with pytest.raises(StoreError, match="closed"):
        await store.open(lambda name: None)


async def test_names_with_nul_are_never_found_nor_stored(make_postgres: MakePostgres) -> None:
    store = await make_postgres()
    await store.create(running("operations/a"))
    assert await store.get("operations/a\x00") is None
    assert not await store.delete("operations/a\x00")
    assert await store.finish("operations/a\x00", 1, error=status_pb2.Status(code=1)) is None
    assert await store.list("\x00", limit=10) == []
    with pytest.raises(StoreError, match="NUL"):
        await store.create(running("operations/\x00"))


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="schema"):
        PostgresStore("postgresql://x", schema="Robert'); DROP TABLE students;--")
    with pytest.raises(ValueError, match="channel"):
        PostgresStore("postgresql://x", channel="a" * 64)
    with pytest.raises(ValueError, match="min_connections"):
        PostgresStore("postgresql://x", min_connections=5, max_connections=2)
    with pytest.raises(ValueError, match="recheck_interval"):
        PostgresStore("postgresql://x", recheck_interval=0)
    assert PostgresStore("postgresql://x").recheck_interval == 1.0


# -- leases and the shared secret ---------------------------------------------------------


async def test_replicas_on_one_schema_share_one_secret_and_other_schemas_differ(
    make_postgres: MakePostgres, postgres_dsn: str
) -> None:
    # Five replicas creating the schema at once: the migration lock makes one secret.
    stores = await asyncio.gather(*(make_postgres() for _ in range(5)))
    secrets = {await store.shared_secret() for store in stores}
    assert len(secrets) == 1
    [secret] = secrets
    assert len(secret) == 32
    later = await make_postgres()  # a replica that starts when the schema exists
    assert await later.shared_secret() == secret
    async with fresh_schema(postgres_dsn) as other_schema:
        other = PostgresStore(postgres_dsn, schema=other_schema, max_connections=2)
        async with other:
            await other.open(lambda name: None)
            assert await other.shared_secret() != secret


async def test_the_shared_secret_needs_an_open_store() -> None:
    with pytest.raises(StoreError, match="not open"):
        await PostgresStore("postgresql://x").shared_secret()


async def test_a_lease_renewed_by_one_replica_is_seen_by_another_and_not_announced(
    make_postgres: MakePostgres,
) -> None:
    inbox = Inbox()
    owner = await make_postgres()
    other = await make_postgres(inbox)
    await owner.create(running("operations/a"), lease=Lease("owner", 10))
    await inbox.next("operations/a")
    assert names(await other.expired_leases(11, 10)) == ["operations/a"]
    assert await owner.renew("owner", 20, ["operations/a"]) == 1
    assert await other.expired_leases(11, 10) == []
    # A renewal changes no operation: no one needs to wake. The next change's
    # notification is the first to come after it, as NOTIFYs arrive in commit order.
    await owner.create(running("operations/b"))
    assert await inbox.first() == "operations/b", "the renewal was announced"
    written = await other.finish("operations/a", 5, error=status_pb2.Status(code=10))
    assert written is not None
    assert written.applied
    assert await owner.renew("owner", 30, ["operations/a"]) == 0


async def test_a_version_1_schema_is_migrated_and_keeps_its_operations(
    make_postgres: MakePostgres, postgres_dsn: str, pg_schema: str
) -> None:
    quoted = f'"{pg_schema}"'
    admin = await admin_connection(postgres_dsn)
    try:
        await admin.execute(f"CREATE SCHEMA {quoted}")
        await admin.execute(f"CREATE TABLE {quoted}.schema_version (version integer)")
        for statement, args in _pg._migrations(quoted)[1]:
            await admin.execute(statement, *args)
        await admin.execute(f"INSERT INTO {quoted}.schema_version VALUES (1)")
        await admin.execute(
            f"INSERT INTO {quoted}.operations (name, parent, create_time, update_time, done,"
            " error_code, metadata_type, response_type, operation)"
            " VALUES ('operations/old', '', 1, 1, false, 0, '', '', $1)",
            operations_pb2.Operation(name="operations/old").SerializeToString(),
        )
    finally:
        await admin.close()
    store = await make_postgres()
    assert await store.get("operations/old") == running("operations/old")
    assert await store.expired_leases(10**18, 10) == []  # it never had a lease
    await store.create(running("operations/new"), lease=Lease("me", 5))
    assert names(await store.expired_leases(10**18, 10)) == ["operations/new"]
    assert len(await store.shared_secret()) == 32


async def test_a_version_2_schema_is_migrated_to_unique_request_ids(
    make_postgres: MakePostgres, postgres_dsn: str, pg_schema: str
) -> None:
    quoted = f'"{pg_schema}"'
    admin = await admin_connection(postgres_dsn)
    try:
        await admin.execute(f"CREATE SCHEMA {quoted}")
        await admin.execute(f"CREATE TABLE {quoted}.schema_version (version integer)")
        for version in (1, 2):
            for statement, args in _pg._migrations(quoted)[version]:
                await admin.execute(statement, *args)
            await admin.execute(f"INSERT INTO {quoted}.schema_version VALUES ($1)", version)
        await admin.execute(
            f"INSERT INTO {quoted}.operations (name, parent, create_time, update_time, done,"
            " error_code, metadata_type, response_type, operation)"
            " VALUES ('operations/old', '', 1, 1, false, 0, '', '', $1)",
            operations_pb2.Operation(name="operations/old").SerializeToString(),
        )
        store = await make_postgres()
        assert await store.get("operations/old") == running("operations/old")
        assert (await store.create_once(running("operations/a"), "r")).applied
        again = await store.create_once(running("operations/b"), "r")
        assert (again.applied, again.record.name) == (False, "operations/a")
        versions = await admin.fetch(f"SELECT version FROM {quoted}.schema_version")
        assert [tuple(row) for row in versions] == [(v,) for v in range(1, _pg.SCHEMA_VERSION + 1)]
        # The database itself refuses a duplicate, not only the store's code.
        with pytest.raises(asyncpg.UniqueViolationError):
            await admin.execute(
                f"UPDATE {quoted}.operations SET request_id = 'r' WHERE name = 'operations/old'"
            )
    finally:
        await admin.close()


async def test_request_ids_with_nul_are_refused(make_postgres: MakePostgres) -> None:
    store = await make_postgres()
    with pytest.raises(StoreError, match="NUL"):
        await store.create_once(running("operations/a"), "r\x00")
    assert await store.get("operations/a") is None


async def test_racing_create_once_on_two_replicas_inserts_once(make_postgres: MakePostgres) -> None:
    # Every connection open before the race, so that the inserts really overlap.
    a, b = [await make_postgres(min_connections=4, max_connections=4) for _ in range(2)]
    results = await asyncio.gather(
        *(
            (a if i % 2 else b).create_once(running(f"projects/p/operations/{i:02d}", i), "race")
            for i in range(50)
        )
    )
    winners = [written.record for written in results if written.applied]
    assert len(winners) == 1
    assert all(written.record == winners[0] for written in results)
    assert names(await a.list(None, limit=100)) == [winners[0].name]
