"""The client's waits over the Watch extension: one stream, reopened when it breaks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import wrappers_pb2

import lro_async
from lro_async import AsyncOperationsClient, OperationManager, OperationTimeout
from lro_async.backoff import Backoff
from lro_async.client.policy import WaitPolicy
from lro_async.server.watching import WatchServicer
from lro_async.stores import SQLiteStore
from lro_async.testing import serve

from .counting import CountingInterceptor, StreamCounter

# Retries quickly, but not in a tight loop while the server is down.
QUICK = WaitPolicy(retry=Backoff(initial=0.02, multiplier=1.5, maximum=0.2, jitter=False))


@contextlib.asynccontextmanager
async def _server(
    path: Path, port: int = 0, *, resume: str = ""
) -> AsyncIterator[tuple[OperationManager, int]]:
    """Serve the SQLite file *path*; at start, run the operation named *resume* again
    (until it is finished by hand) and abort the others a previous server left running."""

    async def hold(ctx: lro_async.OperationContext) -> None:
        await asyncio.Event().wait()

    manager = OperationManager(
        SQLiteStore(path), resume=lambda op: hold if op.name == resume else None
    )
    server = grpc.aio.server(options=lro_async.server_options())
    manager.add_to_server(server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield manager, port
    finally:
        await server.stop(grace=None)
        await manager.aclose()


async def _until(condition: object, what: str, within: float = 10.0) -> None:
    assert callable(condition)
    try:
        async with asyncio.timeout(within):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"{what} did not happen within {within} s")


async def test_waits_rejoin_a_restarted_server_and_miss_nothing(tmp_path: Path) -> None:
    db = tmp_path / "ops.db"
    async with _server(db) as (manager, port):
        early = await manager.create()
        late = await manager.create()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        client = AsyncOperationsClient(channel, policy=QUICK)
        waits = [
            asyncio.create_task(
                client.operation(op.name, result_type=wrappers_pb2.Int64Value).result()
            )
            for op in (early, late)
        ]
        await _until(lambda: manager.watched == 2, "both waits reaching the server")
    # The new server aborts *early* as it starts, before any client is back; *late* goes on.
    async with _server(db, port, resume=late.name) as (manager, _):
        await _until(lambda: manager.watched == 1, "the waits re-added to the new server")
        await manager.complete(late.name, wrappers_pb2.Int64Value(value=2))
        async with asyncio.timeout(10):
            results = await asyncio.gather(*waits, return_exceptions=True)
        aborted, done = results
        assert isinstance(aborted, lro_async.OperationFailed), aborted
        assert aborted.code == grpc.StatusCode.ABORTED
        assert isinstance(done, wrappers_pb2.Int64Value) and done.value == 2
        await client.aclose()
        await channel.close()


async def test_a_wait_that_times_out_leaves_the_stream() -> None:
    async with serve() as served:
        client = AsyncOperationsClient(served.channel)
        op = await served.manager.create()
        with pytest.raises(OperationTimeout):
            await client.operation(op.name).result(timeout=0.2)
        # Nobody waits any more: the server forgets the name and the stream closes.
        await _until(lambda: served.manager.watched == 0, "the name leaving the server")
        await _until(lambda: len(client._waiters) == 0, "the waiter ending")
        assert not (await served.manager.get(op.name)).done
        await client.aclose()


async def test_waits_in_bursts_share_one_stream_per_burst() -> None:
    async with serve() as served:
        counter = CountingInterceptor()
        interceptors = [counter, StreamCounter(counter)]
        async with grpc.aio.insecure_channel(served.target, interceptors=interceptors) as channel:
            client = AsyncOperationsClient(channel)
            manager = served.manager
            ops = [await manager.create() for _ in range(300)]
            waits = [asyncio.create_task(client.operation(op.name).result()) for op in ops]
            await _until(lambda: manager.watched == 300, "300 waits reaching the server")
            for op in ops:
                await manager.complete(op.name)
            async with asyncio.timeout(10):
                await asyncio.gather(*waits)
            assert counter.calls == {"Watch": 1}
            await client.aclose()


async def test_a_server_without_the_extension_is_asked_once_per_client() -> None:
    async with serve(watch=False) as served:
        counter = CountingInterceptor()
        interceptors = [counter, StreamCounter(counter)]
        async with grpc.aio.insecure_channel(served.target, interceptors=interceptors) as channel:
            client = AsyncOperationsClient(channel)
            for _ in range(3):  # one after another: each would reopen a stream
                op = await served.manager.create()
                wait = asyncio.create_task(client.operation(op.name).result())
                await _until(lambda: served.manager.watched == 1, "the wait reaching the server")
                await served.manager.complete(op.name)
                await wait
            assert counter.calls["Watch"] == 1
            assert counter.calls["WaitOperation"] == 1 + 3  # the probe, one long poll each
            await client.aclose()


async def test_client_watch_yields_the_snapshot_then_the_changes() -> None:
    async with serve() as served:
        manager = served.manager
        client = AsyncOperationsClient(served.channel)
        before = await manager.create(parent="projects/p")
        changes = client.watch("projects/p", metadata_changes=True)
        seen = [await anext(changes), await anext(changes)]
        assert [(c.kind, c.name) for c in seen] == [("snapshot", before.name), ("synced", "")]
        created = await manager.create(parent="projects/p")
        change = await anext(changes)
        assert (change.kind, change.name) == ("created", created.name)
        await manager.set_metadata(created.name, wrappers_pb2.Int64Value(value=1))
        assert (await anext(changes)).kind == "changed"
        await manager.complete(created.name)
        change = await anext(changes)
        assert change.kind == "done" and change.operation is not None and change.operation.done
        await manager.delete(before.name)
        change = await anext(changes)
        assert (change.kind, change.name, change.operation) == ("deleted", before.name, None)
        await changes.aclose()
        await _until(lambda: served.manager._hub._subscribed == set(), "the stream closing")
        await client.aclose()


async def test_client_watch_of_a_bad_filter_raises_invalid_argument() -> None:
    async with serve() as served:
        client = AsyncOperationsClient(served.channel)
        with pytest.raises(lro_async.InvalidArgument):
            async for _ in client.watch("projects/p", filter="done = maybe"):
                pass
        await client.aclose()


async def test_client_watch_without_the_extension_raises_unimplemented() -> None:
    async with serve(watch=False) as served:
        client = AsyncOperationsClient(served.channel)
        with pytest.raises(lro_async.RpcError) as refused:
            async for _ in client.watch("projects/p"):
                pass
        assert refused.value.code == grpc.StatusCode.UNIMPLEMENTED
        await client.aclose()


async def test_cancelling_an_awaiter_leaves_the_stream_and_the_operation_alone() -> None:
    async with serve() as served:
        manager = served.manager
        client = AsyncOperationsClient(served.channel)
        op = await manager.create()
        # Two objects of one name, three awaiters: one waiter, one name on the stream.
        first, second = client.operation(op.name), client.operation(op.name)
        tasks = [asyncio.create_task(o.result()) for o in (first, first, second)]
        await _until(lambda: manager.watched == 1, "the wait reaching the server")
        assert len(client._waiters) == 1
        tasks[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
        assert manager.watched == 1  # the others still wait
        for task in tasks[1:]:
            task.cancel()
        await asyncio.gather(*tasks[1:], return_exceptions=True)
        await _until(lambda: manager.watched == 0, "the name leaving the server")
        assert not (await manager.get(op.name)).done  # never cancelled remotely
        assert len(client._waiters) == 0
        await client.aclose()


async def test_a_name_past_the_stream_limit_is_waited_on_with_wait_operation() -> None:
    manager = OperationManager()

    def register(server: grpc.aio.Server) -> None:
        WatchServicer(manager, max_names=1).add_to_server(server)

    async with serve(manager, watch=False, register=register) as served:
        counter = CountingInterceptor()
        interceptors = [counter, StreamCounter(counter)]
        async with grpc.aio.insecure_channel(served.target, interceptors=interceptors) as channel:
            client = AsyncOperationsClient(channel)
            first, second = await manager.create(), await manager.create()
            waits = [
                asyncio.create_task(client.operation(o.name).result()) for o in (first, second)
            ]
            await _until(lambda: manager.watched == 2, "both waits reaching the server")
            await manager.complete(first.name)
            await manager.complete(second.name)
            async with asyncio.timeout(10):
                await asyncio.gather(*waits)
            assert counter.calls["Watch"] == 1
            assert counter.calls["WaitOperation"] >= 1  # the one the stream could not take
            await client.aclose()
