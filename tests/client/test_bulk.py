"""count_operations, cancel_operations and delete_operations over gRPC and HTTP, end to end."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

import lro_async
import lro_async.sync
import lro_async.testing

from .remote import TRANSPORTS, serve_over

pytestmark = pytest.mark.timeout(60)

PARENT = "projects/bulk"
Authorize = Callable[[lro_async.Access], Awaitable[bool]]


async def _allow(access: lro_async.Access) -> bool:
    return True


@dataclasses.dataclass
class Fleet:
    """Operations under PARENT in every state, plus some elsewhere that must stay put."""

    running: list[str]
    succeeded: list[str]
    failed: list[str]
    cancelled: list[str]
    elsewhere: list[str]

    @property
    def done(self) -> list[str]:
        return self.succeeded + self.failed + self.cancelled

    @property
    def under_parent(self) -> list[str]:
        return self.running + self.done


async def _fleet(manager: lro_async.OperationManager) -> Fleet:
    async def made(count: int, parent: str = PARENT) -> list[str]:
        return [(await manager.create(parent=parent)).name for _ in range(count)]

    running, succeeded, failed = await made(6), await made(3), await made(2)
    fleet = Fleet(running, succeeded, failed, await made(1), await made(4, "other"))
    for name in fleet.succeeded:
        await manager.complete(name)
    for name in fleet.failed:
        await manager.fail(name, grpc.StatusCode.ABORTED, "it broke")
    for name in fleet.cancelled:
        await manager.cancel(name)
    return fleet


@contextlib.asynccontextmanager
async def _client(
    transport: str, manager: lro_async.OperationManager, authorize: Authorize
) -> AsyncIterator[lro_async.AsyncOperationsClient]:
    async with serve_over(transport, manager, authorize=authorize) as served:
        yield served.client


ON_EACH_TRANSPORT = pytest.mark.parametrize("transport", TRANSPORTS)


@ON_EACH_TRANSPORT
async def test_count_operations_counts_what_the_filter_matches(transport: str) -> None:
    manager = lro_async.OperationManager()
    fleet = await _fleet(manager)
    async with _client(transport, manager, _allow) as client:
        assert await client.count_operations(PARENT) == len(fleet.under_parent)
        assert await client.count_operations(PARENT, filter="done = false") == 6
        assert await client.count_operations("", filter="done = true") == len(fleet.done)
        assert await client.count_operations("") == len(fleet.under_parent) + 4
        with pytest.raises(lro_async.InvalidArgument, match="filter"):
            await client.count_operations(PARENT, filter="colour = red")


@ON_EACH_TRANSPORT
async def test_cancel_operations_cancels_the_running_and_skips_the_done(transport: str) -> None:
    manager = lro_async.OperationManager()
    fleet = await _fleet(manager)
    denied, gone = fleet.running[0], fleet.running[1]

    async def authorize(access: lro_async.Access) -> bool:
        if access.rpc == "CancelOperation" and access.resource == gone:
            await manager.delete(gone)  # someone else deleted it after it was listed
        return not (access.rpc == "CancelOperation" and access.resource == denied)

    seen: list[tuple[str, str]] = []
    async with _client(transport, manager, authorize) as client:
        result = await client.cancel_operations(
            PARENT, concurrency=3, on_result=lambda name, outcome, _: seen.append((name, outcome))
        )
        assert set(result.done) == set(fleet.running[2:])
        assert set(result.skipped) == {gone, *fleet.done}
        assert [(name, error.code) for name, error in result.failed] == [
            (denied, grpc.StatusCode.PERMISSION_DENIED)
        ]
        assert isinstance(result.failed[0][1], lro_async.PermissionDenied)
        assert result.matched == len(fleet.under_parent) and not result.ok
        assert sorted(seen) == sorted(
            [(n, "done") for n in result.done]
            + [(n, "skipped") for n in result.skipped]
            + [(denied, "failed")]
        )
        for name in fleet.running[2:]:
            latest = await client.get_operation(name)
            assert latest.done and latest.error.code == grpc.StatusCode.CANCELLED.value[0]
        assert not (await client.get_operation(denied)).done
        for name in fleet.elsewhere:
            assert not (await client.get_operation(name)).done


@ON_EACH_TRANSPORT
async def test_delete_operations_deletes_only_what_matches(transport: str) -> None:
    manager = lro_async.OperationManager()
    fleet = await _fleet(manager)
    async with _client(transport, manager, _allow) as client:
        result = await client.delete_operations(PARENT, filter="done = true")
        assert set(result.done) == set(fleet.done)
        assert result.skipped == () and result.failed == () and result.ok
        assert await client.count_operations("") == len(fleet.running) + len(fleet.elsewhere)
        again = await client.delete_operations(PARENT, filter="done = true")
        assert again.matched == 0 and again.ok


@ON_EACH_TRANSPORT
async def test_cancel_operations_keeps_to_its_concurrency(transport: str) -> None:
    manager = lro_async.OperationManager()
    names = [(await manager.create(parent=PARENT)).name for _ in range(12)]
    in_flight = 0
    most = 0
    changed = asyncio.Condition()

    async def authorize(access: lro_async.Access) -> bool:
        nonlocal in_flight, most
        if access.rpc != "CancelOperation":
            return True
        async with changed:
            in_flight += 1
            most = max(most, in_flight)
            changed.notify_all()
            # Hold the calls until four are open at once (a tighter bound never gets
            # there), then give a fifth half a second to show up (a looser one does).
            await asyncio.wait_for(changed.wait_for(lambda: most >= 4), 10)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait_for(lambda: most > 4), 0.5)
            in_flight -= 1
        return True

    async with _client(transport, manager, authorize) as client:
        result = await client.cancel_operations(PARENT, concurrency=4)
    assert set(result.done) == set(names)
    assert most == 4, f"{most} cancels were in flight at once with concurrency=4"


@ON_EACH_TRANSPORT
async def test_a_bad_concurrency_is_refused_before_any_rpc(transport: str) -> None:
    manager = lro_async.OperationManager()
    async with _client(transport, manager, _allow) as client:
        with pytest.raises(ValueError, match="concurrency must be at least 1"):
            await client.cancel_operations(PARENT, concurrency=0)


async def test_the_sync_client_counts_cancels_and_deletes() -> None:
    manager = lro_async.OperationManager()
    fleet = await _fleet(manager)
    async with lro_async.testing.serve(manager) as served:

        def use() -> tuple[int, lro_async.BulkResult, lro_async.BulkResult]:
            with lro_async.sync.OperationsClient(served.target) as client:
                running = client.count_operations(PARENT, filter="done = false")
                cancelled = client.cancel_operations(PARENT, concurrency=2)
                deleted = client.delete_operations(PARENT)
                return running, cancelled, deleted

        running, cancelled, deleted = await asyncio.to_thread(use)
    assert running == len(fleet.running)
    assert set(cancelled.done) == set(fleet.running) and set(cancelled.skipped) == set(fleet.done)
    assert set(deleted.done) == set(fleet.under_parent)
