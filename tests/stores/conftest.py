"""Fixtures for the store tests: every store, each on its own fresh storage.

PostgreSQL: ``LRO_ASYNC_POSTGRES_DSN``, else ``postgresql://postgres@127.0.0.1:5432/test``.
If it does not answer the tests that need it are skipped, unless
``LRO_ASYNC_REQUIRE_POSTGRES=1`` makes that a failure. Each test gets its own schema
(and so its own NOTIFY channel), dropped afterwards, so runs may repeat and overlap.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from lro_async.stores import MemoryStore, OperationStore, PostgresStore, SQLiteStore

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
_unavailable: dict[str, str | None] = {}  # DSN -> why it cannot be used (None: it can)

MakePostgres = Callable[..., Awaitable[PostgresStore]]


def _ignore(name: str) -> None:
    pass


async def require_postgres() -> str:
    """Return the DSN of a PostgreSQL that answers; skip (or fail, if required) if none."""
    dsn = os.environ.get("LRO_ASYNC_POSTGRES_DSN") or DEFAULT_DSN
    if dsn not in _unavailable:
        try:
            connection = await asyncpg.connect(dsn, timeout=3)
            await connection.close()
            _unavailable[dsn] = None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _unavailable[dsn] = f"PostgreSQL at {dsn} is unavailable: {exc!r}"
    reason = _unavailable[dsn]
    if reason is not None:
        if os.environ.get("LRO_ASYNC_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (LRO_ASYNC_REQUIRE_POSTGRES=1)")
        pytest.skip(reason + " (set LRO_ASYNC_POSTGRES_DSN)")
    return dsn


async def admin_connection(dsn: str) -> Any:
    """A plain asyncpg connection, for tests that reach behind a store's back."""
    return await asyncpg.connect(dsn, timeout=5)


@contextlib.asynccontextmanager
async def fresh_schema(dsn: str) -> AsyncIterator[str]:
    """A schema name no one uses; the schema is dropped on exit."""
    schema = f"lro_test_{uuid.uuid4().hex[:16]}"
    try:
        yield schema
    finally:
        connection = await admin_connection(dsn)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()


@pytest.fixture
async def postgres_dsn() -> str:
    return await require_postgres()


@pytest.fixture
async def pg_schema(postgres_dsn: str) -> AsyncIterator[str]:
    async with fresh_schema(postgres_dsn) as schema:
        yield schema


@pytest.fixture
async def make_postgres(postgres_dsn: str, pg_schema: str) -> AsyncIterator[MakePostgres]:
    """Open PostgresStores on this test's schema (replicas of one service); all closed after."""
    stores: list[PostgresStore] = []

    async def make(
        notify: Callable[[str], None] = _ignore,
        notify_all: Callable[[], None] | None = None,
        **options: Any,
    ) -> PostgresStore:
        options.setdefault("max_connections", 4)
        store = PostgresStore(postgres_dsn, schema=pg_schema, **options)
        stores.append(store)
        await store.open(notify, notify_all=notify_all)
        return store

    yield make
    for store in stores:
        await store.aclose()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OperationStore]:
    """Each store lro_async ships, opened on fresh storage."""
    kind: str = request.param
    if kind == "memory":
        yield MemoryStore()
    elif kind == "sqlite":
        async with SQLiteStore(tmp_path / "operations.db") as sqlite:
            await sqlite.open(_ignore)
            yield sqlite
    else:
        dsn = await require_postgres()
        async with fresh_schema(dsn) as schema, PostgresStore(dsn, schema=schema) as postgres:
            await postgres.open(_ignore)
            yield postgres
