"""A plain ``await op`` over the Watch stream holds no task: the stream tells its waiter.

A task per awaited operation (and its coroutine frames) was most of what a client paid per
operation; the waits below run without one, and go back to a task whenever the stream
cannot serve them (no Watch extension, a broken stream, a progress listener).
"""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import wrappers_pb2

import lro_async
from lro_async.testing import serve

from ..waiting import until

N = 200


def waiter_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("lro_async waiter")]


async def test_a_thousand_plain_awaits_over_the_watch_stream_hold_no_task() -> None:
    async with serve() as served:
        manager = served.manager
        async with lro_async.AsyncOperationsClient(served.channel) as client:
            ops = [await manager.create() for _ in range(N)]
            awaited = [asyncio.ensure_future(client.operation(op.name).result()) for op in ops]
            await until(lambda: manager.watched == N, "every name watched by the server")
            assert waiter_tasks() == []
            for number, op in enumerate(ops):
                await manager.complete(op.name, wrappers_pb2.Int64Value(value=number))
            results = await asyncio.gather(*awaited)
    assert [wrappers_pb2.Int64Value.FromString(r.value).value for r in results] == list(range(N))


async def test_without_the_watch_extension_the_waits_fall_back_to_wait_operation() -> None:
    async with (
        serve(watch=False) as served,
        lro_async.AsyncOperationsClient(served.channel) as client,
    ):
        ops = [await served.manager.create() for _ in range(20)]
        awaited = [asyncio.ensure_future(client.operation(op.name).result()) for op in ops]
        await until(lambda: served.manager.watched == 20, "every wait held by the server")
        assert len(waiter_tasks()) == 20  # WaitOperation calls run in tasks
        for op in ops:
            await served.manager.complete(op.name)
        await asyncio.gather(*awaited)


async def test_a_progress_listener_moves_a_task_free_wait_to_a_task() -> None:
    async with serve() as served:
        manager = served.manager
        async with lro_async.AsyncOperationsClient(served.channel) as client:
            op = await manager.create()
            plain = asyncio.ensure_future(client.operation(op.name).result())
            await until(lambda: manager.watched == 1, "the name watched")
            assert waiter_tasks() == []
            seen: list[int] = []

            async def listen() -> None:
                op_ = client.operation(
                    op.name,
                    result_type=wrappers_pb2.Int64Value,
                    metadata_type=wrappers_pb2.Int64Value,
                )
                async for metadata in op_.progress():
                    if metadata is not None:
                        seen.append(metadata.value)

            listening = asyncio.ensure_future(listen())
            await until(lambda: len(waiter_tasks()) == 1, "a task for the listener")
            await manager.set_metadata(op.name, wrappers_pb2.Int64Value(value=7))
            await until(
                lambda: seen == [7], "the listener seeing the progress", details=lambda: seen
            )
            await manager.complete(op.name, wrappers_pb2.Int64Value(value=1))
            await asyncio.gather(plain, listening)


async def test_a_broken_stream_hands_its_task_free_waits_to_tasks_that_retry() -> None:
    manager = lro_async.OperationManager()
    first = grpc.aio.server()
    manager.add_to_server(first)
    port = first.add_insecure_port("127.0.0.1:0")
    await first.start()
    retry = lro_async.Backoff(initial=0.01, multiplier=2.0, maximum=0.05, jitter=False)
    policy = lro_async.WaitPolicy(retry=retry)
    async with (
        manager,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        lro_async.AsyncOperationsClient(channel, policy=policy) as client,
    ):
        ops = [await manager.create() for _ in range(10)]
        awaited = [asyncio.ensure_future(client.operation(op.name).result()) for op in ops]
        await until(lambda: manager.watched == 10, "every name watched")
        assert waiter_tasks() == []
        await first.stop(grace=None)  # the stream breaks: UNAVAILABLE
        await until(lambda: len(waiter_tasks()) == 10, "each wait retried by a task")
        second = grpc.aio.server()
        manager.add_to_server(second)
        second.add_insecure_port(f"127.0.0.1:{port}")
        await second.start()
        try:
            await until(lambda: manager.watched == 10, "every name watched again")
            for op in ops:
                await manager.complete(op.name)
            await asyncio.gather(*awaited)
        finally:
            await second.stop(grace=None)
