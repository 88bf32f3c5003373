"""The client's waits over the Watch extension: one stream, reopened when it breaks.

Most tests run over gRPC and over HTTP/JSON (the ``served`` fixture, a server with the
extension unless a test says ``watch=False``); those that restart a server on its port or
register a servicer of their own are gRPC's.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2

import lro_async
from lro_async import (
    AsyncOperationsClient,
    Backoff,
    OperationContext,
    OperationManager,
    OperationTimeout,
    WaitPolicy,
)
from lro_async.server.watching import WatchServicer
from lro_async.stores import SQLiteStore
from lro_async.testing import serve

from ..waiting import until
from .counting import CountingInterceptor, StreamCounter
from .remote import Remote

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


# The one wait that reads the manager's hub keeps its spelling while the hub is refactored.
_until = until


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
        await until(lambda: manager.watched == 2, "both waits reaching the server")
    # The new server aborts *early* as it starts, before any client is back; *late* goes on.
    async with _server(db, port, resume=late.name) as (manager, _):
        await until(lambda: manager.watched == 1, "the waits re-added to the new server")
        await manager.complete(late.name, wrappers_pb2.Int64Value(value=2))
        async with asyncio.timeout(10):
            results = await asyncio.gather(*waits, return_exceptions=True)
        aborted, done = results
        assert isinstance(aborted, lro_async.OperationFailed), aborted
        assert aborted.code == grpc.StatusCode.ABORTED
        assert isinstance(done, wrappers_pb2.Int64Value) and done.value == 2
        await client.aclose()
        await channel.close()


async def test_a_wait_that_times_out_leaves_the_stream(served: Remote) -> None:
    client = served.client
    op = await served.manager.create()
    with pytest.raises(OperationTimeout):
        await client.operation(op.name).result(timeout=0.2)
    # Nobody waits any more: the server forgets the name and the stream closes.
    await until(lambda: served.manager.watched == 0, "the name leaving the server")
    await until(lambda: len(client._waiters) == 0, "the waiter ending")
    assert not (await served.manager.get(op.name)).done


async def test_many_waits_share_one_stream(served: Remote) -> None:
    manager = served.manager
    ops = [await manager.create() for _ in range(500)]
    waits = [
        asyncio.create_task(
            served.client.operation(op.name, result_type=wrappers_pb2.Int64Value).result()
        )
        for op in ops
    ]
    await until(lambda: manager.watched == 500, "500 waits reaching the server")
    order = list(range(500))
    random.shuffle(order)
    for index in order:
        await manager.complete(ops[index].name, wrappers_pb2.Int64Value(value=index))
    async with asyncio.timeout(10):
        results = await asyncio.gather(*waits)
    assert [r.value for r in results] == list(range(500))
    assert served.calls == {"Watch": 1}  # no WaitOperation, no GetOperation: one stream
    if served.app is not None:
        assert served.app.watches is not None and served.app.watches.opened == 1


async def test_a_name_that_joins_later_misses_nothing(served: Remote) -> None:
    first, second = await served.manager.create(), await served.manager.create()
    one = asyncio.create_task(served.client.operation(first).result())
    await until(lambda: served.manager.watched == 1, "the first name was never watched")
    await served.manager.complete(second.name)  # done before it is awaited: level-triggered
    two = asyncio.create_task(served.client.operation(second).result())
    await two
    await served.manager.complete(first.name)
    await one
    # gRPC's stream takes the newcomer as it runs; an SSE stream's names are its request's,
    # so over HTTP the newcomer reopens the stream (with every name still wanted).
    assert served.calls == {"Watch": 1 if served.transport == "grpc" else 2}
    await until(lambda: served.streams == 0, "a stream stayed open with nothing to wait for")


@pytest.mark.parametrize("watch", [False])
async def test_a_server_without_the_extension_is_asked_once_per_client(served: Remote) -> None:
    for _ in range(3):  # one after another: each would reopen a stream
        op = await served.manager.create()
        wait = asyncio.create_task(served.client.operation(op.name).result())
        await until(lambda: served.manager.watched == 1, "the wait reaching the server")
        await served.manager.complete(op.name)
        await wait
    assert served.calls["Watch"] == 1
    assert served.calls["WaitOperation"] == 1 + 3  # the probe, one long poll each


async def test_errors_over_the_stream_raise_as_over_calls(served: Remote) -> None:
    async def fail(ctx: OperationContext) -> wrappers_pb2.Int64Value:
        raise lro_async.OperationFailed(9, "not today")

    failing = await served.manager.start(fail)
    with pytest.raises(lro_async.OperationFailed) as failed:
        await served.client.operation(failing)
    assert (failed.value.code.value[0], failed.value.message) == (9, "not today")
    with pytest.raises(lro_async.OperationNotFound):
        await served.client.operation("operations/missing")
    with pytest.raises(lro_async.InvalidArgument):
        await served.client.operation("not a name").result(timeout=10)
    assert set(served.calls) == {"Watch"}


async def test_progress_over_the_stream(served: Remote) -> None:
    proto = await served.manager.create(metadata=wrappers_pb2.Int32Value(value=0))
    op = served.client.operation(proto, metadata_type=wrappers_pb2.Int32Value)
    seen: list[int] = []
    progressed = asyncio.Event()

    async def follow() -> None:
        async for metadata in op.progress():
            seen.append(metadata.value)
            progressed.set()

    following = asyncio.create_task(follow())
    for value in (10, 20, 30):
        async with asyncio.timeout(10):
            await progressed.wait()
        progressed.clear()
        await served.manager.set_metadata(proto.name, wrappers_pb2.Int32Value(value=value))
    async with asyncio.timeout(10):
        await progressed.wait()
    await served.manager.complete(proto.name)
    await following
    assert seen[0] == 0 and seen[-1] == 30 and seen == sorted(seen)
    assert set(served.calls) == {"Watch"}


async def test_client_watch_yields_the_snapshot_then_the_changes(served: Remote) -> None:
    manager = served.manager
    before = await manager.create(parent="projects/p")
    watching = served.client.watch("projects/p", metadata_changes=True)
    async with contextlib.aclosing(watching) as changes:  # closed even if an assert fails
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
        await manager.delete(created.name)  # a done operation
        change = await anext(changes)
        assert (change.kind, change.name, change.operation) == ("deleted", created.name, None)
        await manager.delete(before.name)  # a running one
        change = await anext(changes)
        assert (change.kind, change.name, change.operation) == ("deleted", before.name, None)
        await changes.aclose()
        await _until(lambda: served.manager._hub._subscribed == set(), "the stream closing")
        await until(lambda: served.streams == 0, "the collection watch stayed open")


async def test_client_watch_of_a_bad_filter_raises_invalid_argument(served: Remote) -> None:
    with pytest.raises(lro_async.InvalidArgument):
        async for _ in served.client.watch("projects/p", filter="done = maybe"):
            pass
    with pytest.raises(lro_async.InvalidArgument):
        async for _ in served.client.watch("projects/p", filter="done = = true"):
            pass


@pytest.mark.parametrize("watch", [False])
async def test_client_watch_without_the_extension_raises_unimplemented(served: Remote) -> None:
    with pytest.raises(lro_async.RpcError) as refused:
        async for _ in served.client.watch("projects/p"):
            pass
    assert refused.value.code == grpc.StatusCode.UNIMPLEMENTED


async def test_cancelling_an_awaiter_leaves_the_stream_and_the_operation_alone(
    served: Remote,
) -> None:
    manager = served.manager
    client = served.client
    op = await manager.create()
    # Two objects of one name, three awaiters: one waiter, one name on the stream.
    first, second = client.operation(op.name), client.operation(op.name)
    tasks = [asyncio.create_task(o.result()) for o in (first, first, second)]
    await until(lambda: manager.watched == 1, "the wait reaching the server")
    assert len(client._waiters) == 1
    tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    assert manager.watched == 1  # the others still wait
    for task in tasks[1:]:
        task.cancel()
    await asyncio.gather(*tasks[1:], return_exceptions=True)
    await until(lambda: manager.watched == 0, "the name leaving the server")
    assert not (await manager.get(op.name)).done  # never cancelled remotely
    assert len(client._waiters) == 0


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
            await until(lambda: manager.watched == 2, "both waits reaching the server")
            await manager.complete(first.name)
            await manager.complete(second.name)
            async with asyncio.timeout(10):
                await asyncio.gather(*waits)
            assert counter.calls["Watch"] == 1
            assert counter.calls["WaitOperation"] >= 1  # the one the stream could not take
            await client.aclose()


async def test_names_are_written_only_once_the_server_says_it_serves_the_stream() -> None:
    """A Watch handler whose headers lack the marker gets no request; waits use WaitOperation.

    Before, the client wrote its names at once; against a server without the extension a
    write in flight when the server refused the call turned UNIMPLEMENTED into INTERNAL,
    and 100,000 waits opened at once retried a broken stream for ever.
    """
    read: list[bytes] = []
    opened = asyncio.Event()

    async def unmarked(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> None:
        await context.send_initial_metadata((("some-proxy", "1"),))
        opened.set()
        async for request in requests:
            read.append(request)

    def register(server: grpc.aio.Server) -> None:
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.stream_stream_rpc_method_handler(
            unmarked
        )
        service = grpc.method_handlers_generic_handler(
            "lro_async.v1.OperationsWatch", {"Watch": handler}
        )
        server.add_generic_rpc_handlers((service,))

    manager = OperationManager()
    async with serve(manager, watch=False, register=register) as served:
        client = AsyncOperationsClient(served.channel)
        ops = [await manager.create() for _ in range(3)]
        waits = [asyncio.create_task(client.operation(o.name).result()) for o in ops]
        await until(lambda: manager.watched == 3, "the waits reaching WaitOperation")
        for op in ops:
            await manager.complete(op.name)
        async with asyncio.timeout(10):
            await asyncio.gather(*waits)
        assert opened.is_set()
        assert read == []
        assert client._waiters.watch is not None
        assert client._waiters.watch.supported is False
        await client.aclose()


async def test_the_watch_server_marks_its_initial_metadata_before_any_event() -> None:
    async with serve() as served:
        stub: grpc.aio.StreamStreamMultiCallable[bytes, bytes]
        stub = served.channel.stream_stream("/lro_async.v1.OperationsWatch/Watch")
        call = stub()
        try:
            async with asyncio.timeout(10):
                metadata = await call.initial_metadata()
            assert metadata is not None
            assert metadata.get("lro-async-watch") == "1"  # the protocol's marker
        finally:
            call.cancel()


async def test_a_stream_refused_by_the_per_caller_limit_is_retried_not_taken_for_no_extension() -> (
    None
):
    manager = OperationManager()

    def register(server: grpc.aio.Server) -> None:
        WatchServicer(manager, max_streams=1).add_to_server(server)

    async with serve(manager, watch=False, register=register) as served:
        first, second = await manager.create(), await manager.create()
        counter = CountingInterceptor()
        interceptors = [counter, StreamCounter(counter)]
        # Two clients on one channel: one caller for the server, one stream each.
        async with grpc.aio.insecure_channel(served.target, interceptors=interceptors) as channel:
            holder = AsyncOperationsClient(channel)
            held = asyncio.create_task(holder.operation(first.name).result())
            await until(lambda: manager.watched == 1, "the first client's stream holding the slot")
            client = AsyncOperationsClient(channel, policy=QUICK)
            waiting = asyncio.create_task(client.operation(second.name).result())
            await until(lambda: counter.calls["Watch"] >= 3, "the refused stream being retried")
            stream = client._waiters.watch
            assert stream is not None and stream.supported is not False
            await manager.complete(first.name)  # the holder's stream ends: the slot is free
            await held
            await until(lambda: manager.watched == 1, "the retried stream watching its name")
            await manager.complete(second.name)
            async with asyncio.timeout(10):
                await waiting
            assert stream.supported is True
            assert counter.calls["WaitOperation"] == 0
            await client.aclose()
            await holder.aclose()


async def test_only_a_clients_first_call_waits_for_the_marker_while_the_server_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Awaits one after another open a call each (the last name ends it): once the server
    has shown it serves the stream, a new call is written at once, one round trip each."""
    from lro_async.client.watching import WatchStream

    waited: list[object] = []
    serves = WatchStream._serves

    async def counted(self: WatchStream, call: Any) -> bool:
        waited.append(call)
        return await serves(self, call)

    monkeypatch.setattr(WatchStream, "_serves", counted)
    manager = OperationManager()
    async with serve(manager) as served:
        counter = CountingInterceptor()
        interceptors = [counter, StreamCounter(counter)]
        async with grpc.aio.insecure_channel(served.target, interceptors=interceptors) as channel:
            client = AsyncOperationsClient(channel)
            for _ in range(3):
                op = await manager.create()
                await manager.complete(op.name)
                async with asyncio.timeout(10):
                    await client.operation(op.name)
            assert counter.calls["Watch"] == 3  # a call per await, one after another
            assert len(waited) == 1
            await client.aclose()
