"""Idempotent starts (AIP-155): a repeated request id returns the first operation.

Through the manager over every store, across two PostgreSQL replicas, and through the
demo service over a real grpc.aio server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2, wrappers_pb2

import lro_async
from lro_async.demo import demo_pb2, demo_pb2_grpc
from lro_async.demo.service import DemoService
from lro_async.stores import (
    MemoryStore,
    OperationRecord,
    OperationStore,
    PostgresStore,
    SQLiteStore,
)
from lro_async.testing import serve

from ..stores.conftest import fresh_schema, require_postgres
from ..waiting import until
from .rpc import rpc_fails

REQUEST_ID = "0b4f3c2e-9a57-4d1e-8c55-2f6a1d7e9b30"


class Runs:
    """Work that counts its runs and stays running until released."""

    def __init__(self) -> None:
        self.count = 0
        self.release = asyncio.Event()

    async def __call__(self, ctx: lro_async.OperationContext) -> wrappers_pb2.Int64Value:
        self.count += 1
        await self.release.wait()
        return wrappers_pb2.Int64Value(value=self.count)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OperationStore]:
    """Each store lro_async ships, on fresh storage, not open yet."""
    kind: str = request.param
    async with contextlib.AsyncExitStack() as stack:
        if kind == "memory":
            yield MemoryStore()
        elif kind == "sqlite":
            yield await stack.enter_async_context(SQLiteStore(tmp_path / "operations.db"))
        else:
            dsn = await require_postgres()
            schema = await stack.enter_async_context(fresh_schema(dsn))
            yield await stack.enter_async_context(PostgresStore(dsn, schema=schema))


@pytest.fixture
async def manager(store: OperationStore) -> AsyncIterator[lro_async.OperationManager]:
    async with lro_async.OperationManager(store=store) as opened:
        yield opened


async def test_fifty_racing_starts_with_one_request_id_run_the_work_once(
    manager: lro_async.OperationManager,
) -> None:
    work = Runs()
    started = await asyncio.gather(
        *(manager.start(work, parent="projects/p", request_id=REQUEST_ID) for _ in range(50))
    )
    assert len({op.name for op in started}) == 1
    work.release.set()
    done = await manager.wait(started[0].name, timeout=10)
    assert done.done, "the one operation never finished"
    assert work.count == 1
    operations, _ = await manager.list("projects/p")
    assert [op.name for op in operations] == [started[0].name]
    again = await manager.start(work, parent="projects/p", request_id=REQUEST_ID)
    assert again == done  # a retry after the end gets the end, and runs nothing
    assert work.count == 1


async def test_the_same_request_id_under_two_parents_starts_two_operations(
    manager: lro_async.OperationManager,
) -> None:
    work = Runs()
    work.release.set()
    first = await manager.start(work, parent="projects/a", request_id=REQUEST_ID)
    second = await manager.start(work, parent="projects/b", request_id=REQUEST_ID)
    top = await manager.start(work, request_id=REQUEST_ID)
    assert len({first.name, second.name, top.name}) == 3
    for op in (first, second, top):
        assert (await manager.wait(op.name, timeout=10)).done
    assert work.count == 3


async def test_create_and_start_share_request_ids(manager: lro_async.OperationManager) -> None:
    created = await manager.create(parent="projects/p", request_id="by-hand")
    await manager.complete(created.name, wrappers_pb2.StringValue(value="finished by hand"))
    work = Runs()
    started = await manager.start(work, parent="projects/p", request_id="by-hand")
    assert started.name == created.name and started.done
    assert (await manager.create(parent="projects/p", request_id="by-hand")) == started
    assert work.count == 0


async def test_no_request_id_or_an_empty_one_starts_every_time(
    manager: lro_async.OperationManager,
) -> None:
    ops = [await manager.create(parent="projects/p", request_id=rid) for rid in ("", "", None)]
    assert len({op.name for op in ops}) == 3


async def test_a_deleted_operation_frees_its_request_id(
    manager: lro_async.OperationManager,
) -> None:
    first = await manager.create(request_id=REQUEST_ID)
    await manager.delete(first.name)
    second = await manager.create(request_id=REQUEST_ID)
    assert second.name != first.name
    assert (await manager.get(second.name)).name == second.name


async def test_an_expired_operation_not_yet_swept_frees_its_request_id(
    store: OperationStore,
) -> None:
    # Done long ago (1 us after the epoch): past any retention. The retention sweeper's
    # pass at startup deletes such operations (the next pass is an hour away): let it
    # delete a first one, then add the one with the request id behind its back.
    old = operations_pb2.Operation(name="projects/p/operations/swept", done=True)
    old.response.Pack(empty_pb2.Empty())
    await store.open()  # before the manager, so that the sweeper finds the first one
    await store.create(OperationRecord(old, 1, 1))
    async with lro_async.OperationManager(store=store) as manager:

        async def swept() -> bool:
            return await store.get(old.name) is None

        await until(swept, "the sweeper deleted the operation done long ago")
        old.name = "projects/p/operations/old"
        await store.create_once(OperationRecord(old, 1, 1), REQUEST_ID)
        work = Runs()
        work.release.set()
        new = await manager.start(work, parent="projects/p", request_id=REQUEST_ID)
        assert new.name != old.name
        assert (await manager.wait(new.name, timeout=10)).done
        assert work.count == 1
        assert await store.get(old.name) is None


@pytest.mark.parametrize(
    "request_id",
    [
        "x" * 65,
        "has space",
        "a/b",
        "a.b",
        "ünïcode",
        "new\nline",
        "nul\x00",
        "{0b4f3c2e-9a57-4d1e-8c55-2f6a1d7e9b30}",
        42,
    ],
)
async def test_a_malformed_request_id_is_invalid_argument_and_starts_nothing(
    manager: lro_async.OperationManager, request_id: object
) -> None:
    work = Runs()
    with pytest.raises(lro_async.InvalidArgument, match="request id"):
        await manager.start(work, parent="projects/p", request_id=request_id)  # type: ignore[arg-type]
    with pytest.raises(lro_async.InvalidArgument, match="request id"):
        await manager.create(request_id=request_id)  # type: ignore[arg-type]
    assert await manager.list() == ([], "")
    assert work.count == 0


@pytest.mark.parametrize(
    "request_id",
    [
        REQUEST_ID,
        "0b4f3c2e9a574d1e8c552f6a1d7e9b30",
        REQUEST_ID.upper(),
        "x" * 64,
        "a",
        "_-",
        "01HGW2N7Z9KXQ5T0",
    ],
)
async def test_uuid_like_request_ids_are_accepted(
    manager: lro_async.OperationManager, request_id: str
) -> None:
    first = await manager.create(request_id=request_id)
    assert (await manager.create(request_id=request_id)).name == first.name


async def test_a_store_without_create_once_refuses_request_ids_clearly() -> None:
    class OldStore(MemoryStore):
        create_once = OperationStore.create_once  # as a custom store written before them

    async with lro_async.OperationManager(store=OldStore()) as manager:
        assert not (await manager.create()).done  # starts without a request id still work
        with pytest.raises(lro_async.StoreError, match="OldStore does not keep request ids"):
            await manager.create(request_id=REQUEST_ID)
        operations, _ = await manager.list()
        assert len(operations) == 1


# -- two PostgreSQL replicas --------------------------------------------------------------


@pytest.mark.postgres
async def test_racing_starts_on_two_postgres_replicas_run_the_work_once_in_total() -> None:
    dsn = await require_postgres()
    async with (
        fresh_schema(dsn) as schema,
        lro_async.OperationManager(store=PostgresStore(dsn, schema=schema)) as a,
        lro_async.OperationManager(store=PostgresStore(dsn, schema=schema)) as b,
    ):
        work = Runs()
        started = await asyncio.gather(
            *(
                (a if i % 2 else b).start(work, parent="projects/p", request_id=REQUEST_ID)
                for i in range(50)
            )
        )
        assert len({op.name for op in started}) == 1
        assert a.running + b.running == 1, "the work started on more than one replica"
        work.release.set()
        done = await b.wait(started[0].name, timeout=10)
        assert done.done, "the operation never finished"
        assert work.count == 1
        assert [op.name for op in (await a.list("projects/p"))[0]] == [done.name]


# -- the demo service over gRPC -----------------------------------------------------------


@contextlib.asynccontextmanager
async def demo() -> AsyncIterator[tuple[demo_pb2_grpc.DemoAsyncStub, lro_async.OperationManager]]:
    manager = lro_async.OperationManager()
    async with serve(manager, register=DemoService(manager).add_to_server) as served:
        stub = cast("demo_pb2_grpc.DemoAsyncStub", demo_pb2_grpc.DemoStub(served.channel))
        yield stub, manager


async def test_demo_calls_with_one_request_id_return_one_operation() -> None:
    async with demo() as (stub, manager):
        sleep = demo_pb2.SleepRequest(parent="projects/demo", request_id=REQUEST_ID, steps=1)
        sleep.duration.FromSeconds(60)  # still running when the retry comes
        first = await stub.Sleep(sleep, timeout=5)
        again = await stub.Sleep(sleep, timeout=5)
        assert again.name == first.name and not again.done
        assert manager.running == 1
        export = demo_pb2.ExportRequest(
            parent="projects/demo", rows=1, rows_per_second=1, request_id="export-1"
        )
        exported = [await stub.Export(export, timeout=5) for _ in range(2)]
        assert exported[0].name == exported[1].name != first.name
        other = await stub.Sleep(demo_pb2.SleepRequest(parent="projects/demo"), timeout=5)
        assert other.name != first.name
        operations, _ = await manager.list("projects/demo")
        assert len(operations) == 3


async def test_a_malformed_demo_request_id_is_invalid_argument() -> None:
    async with demo() as (stub, manager):
        request = demo_pb2.SleepRequest(request_id="not a uuid")
        error = await rpc_fails(stub.Sleep(request, timeout=5), grpc.StatusCode.INVALID_ARGUMENT)
        assert "request id" in (error.details() or "")
        assert await manager.list() == ([], "")
