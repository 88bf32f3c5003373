"""Replicas on one real PostgreSQL: ends written through lost connections, orphans reaped.

Two managers (replicas A and B of one service) share a fresh schema. The randomized
campaign of the same faults against ``lro-async serve`` processes is tests/faults/.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf import wrappers_pb2

import lro_async
from lro_async.stores import Lease, OperationRecord, PostgresStore

from ..stores.conftest import admin_connection, fresh_schema, require_postgres
from ..waiting import until, until_value

pytestmark = pytest.mark.postgres

ABORTED = grpc.StatusCode.ABORTED.value[0]
REPLICA_GONE = "the server replica running the operation stopped before it finished"
LEASE = 1.5


@contextlib.asynccontextmanager
async def replicas() -> AsyncIterator[
    tuple[str, str, lro_async.OperationManager, lro_async.OperationManager]
]:
    """The DSN, the schema, and managers A and B on it (each with its own store)."""
    dsn = await require_postgres()
    async with fresh_schema(dsn) as schema:
        a = lro_async.OperationManager(
            PostgresStore(dsn, schema=schema, max_connections=2), lease=LEASE
        )
        b = lro_async.OperationManager(
            PostgresStore(dsn, schema=schema, max_connections=2), lease=LEASE
        )
        async with a, b:
            yield dsn, schema, a, b


async def until_rows(admin: Any, query: str, *args: object, timeout: float = 10) -> list[Any]:
    """Run *query* until it returns rows; fail after *timeout* seconds."""

    async def rows() -> list[Any]:
        return list(await admin.fetch(query, *args))

    return await until_value(rows, f"no rows from {query}", timeout=timeout)


async def test_an_end_whose_connection_is_terminated_mid_write_is_written_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with replicas() as (dsn, schema, a, b):
        store = a.store
        assert isinstance(store, PostgresStore)
        release = asyncio.Event()

        async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.StringValue:
            await release.wait()
            return wrappers_pb2.StringValue(value="the real result")

        op = await a.start(work)
        admin = await admin_connection(dsn)
        try:
            # Hold the row, so that A's final write waits on the lock; then terminate the
            # connection it waits on, as an operator would (by pid: A and B share an
            # application_name, and B's reads are not the subject here).
            locked = admin.transaction()
            await locked.start()
            await admin.execute(
                f'SELECT 1 FROM "{schema}".operations WHERE name = $1 FOR UPDATE', op.name
            )
            release.set()
            [(pid,)] = await until_rows(
                admin,
                "SELECT pid FROM pg_stat_activity"
                " WHERE application_name = $1 AND wait_event_type = 'Lock'",
                store.application_name,
            )
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            await locked.rollback()
        finally:
            await admin.close()
        done = await b.wait(op.name, 20)
        assert done.done, "A's end was lost with its connection: the operation is stuck"
        result = wrappers_pb2.StringValue()
        assert done.response.Unpack(result), done.error
        assert result.value == "the real result"
        await until(lambda: a.running == 0, "A's task ended once its end was written")
    assert "terminating connection" in caplog.text, "the write did not lose its connection"
    assert "retrying until the store takes it" in caplog.text


async def test_an_operation_leased_to_a_live_replica_that_no_task_holds_is_reaped() -> None:
    async with replicas() as (_, _, a, b):
        release = asyncio.Event()

        async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.StringValue:
            await release.wait()
            return wrappers_pb2.StringValue(value="still A's")

        live = await a.start(work)
        # A row leased to A with no task behind it: what a task that vanished leaves.
        now = time.time_ns() // 1000
        orphan = operations_pb2.Operation(name="operations/orphan-of-a")
        await a.store.create(
            OperationRecord(orphan, now, now), lease=Lease(a.replica, now + int(LEASE * 1e6))
        )
        started = time.monotonic()
        reaped = await b.wait(orphan.name, 10 * LEASE)
        took = time.monotonic() - started
        assert reaped.done, f"A kept renewing a lease no task of its holds ({took:.1f}s)"
        assert (reaped.error.code, reaped.error.message) == (ABORTED, REPLICA_GONE)
        assert took < LEASE + 2, f"reaped {took:.1f}s after its last renewal (lease {LEASE})"
        print(f"\norphan leased to a live replica reaped after {took:.2f}s (lease {LEASE:g}s)")
        # Meanwhile A renewed what it does run.
        assert not (await b.get(live.name)).done, "A's running operation was reaped"
        release.set()
        done = await b.wait(live.name, 10)
        result = wrappers_pb2.StringValue()
        assert done.response.Unpack(result) and result.value == "still A's"


async def test_a_delete_on_one_replica_tells_the_work_on_the_other_and_cancels_nothing() -> None:
    async with replicas() as (_, _, a, b):
        told: list[bool] = []

        async def work(ctx: lro_async.OperationContext) -> None:
            await until(lambda: ctx.deleted, "B's delete reached A (by NOTIFY)")
            told.append(await ctx.set_metadata(wrappers_pb2.Int64Value(value=1)))

        op = await a.start(work)
        await b.delete(op.name)
        await until(lambda: a.running == 0, "A's work went on to its end")
        assert told == [False], "the work was cancelled, or never told of the delete"
        with pytest.raises(lro_async.OperationNotFound):
            await a.get(op.name)
