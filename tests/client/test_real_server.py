"""The client against lro_async's own server: long polls, notice latency, progress, batches."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2, wrappers_pb2

from lro_async.backoff import Backoff
from lro_async.client.many import as_completed, gather
from lro_async.client.operations import AsyncOperationsClient
from lro_async.errors import OperationCancelled, OperationNotFound, OperationTimeout
from lro_async.protobuf import WAIT_MODE_HEADER
from lro_async.server.context import OperationContext
from lro_async.testing import Served, serve

from .conftest import FAST
from .counting import CountingInterceptor, StreamCounter


class Client:
    """A client on its own counted channel to a served manager."""

    def __init__(
        self,
        served: Served,
        counter: CountingInterceptor,
        channel: grpc.aio.Channel,
        *,
        watch: bool,
    ):
        self.watch = watch
        """Whether the server has the Watch extension (the client multiplexes its waits)."""
        self.served = served
        self.manager = served.manager
        self.counter = counter
        self.channel = channel
        self.ops = AsyncOperationsClient(channel, policy=FAST)


@pytest.fixture(params=[True, False], ids=["watch", "wait"])
async def real(request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """A real server with the Watch extension (the client's waits share one stream) and
    without it (a WaitOperation call per wait)."""
    watch: bool = request.param
    async with serve(watch=watch) as served:
        counter = CountingInterceptor()
        interceptors = [counter, StreamCounter(counter)]
        async with grpc.aio.insecure_channel(served.target, interceptors=interceptors) as channel:
            client = Client(served, counter, channel, watch=watch)
            yield client
            await client.ops.aclose()


def pct(value: int) -> wrappers_pb2.Int32Value:
    return wrappers_pb2.Int32Value(value=value)


async def test_await_long_polls_once(real: Client) -> None:
    async def work(ctx: OperationContext) -> struct_pb2.Struct:
        await asyncio.sleep(0.1)
        return struct_pb2.Struct(fields={"answer": struct_pb2.Value(number_value=42)})

    proto = await real.manager.start(work, parent="projects/p")
    op = real.ops.operation(proto, result_type=struct_pb2.Struct)
    result = await op
    assert result["answer"] == 42
    # Watch: one stream. Else the Watch call that finds out the server lacks it, one call
    # that answers at once (the client's first: does the server long-poll?), one long poll.
    assert real.counter.calls == ({"Watch": 1} if real.watch else {"Watch": 1, "WaitOperation": 2})


async def test_completion_is_noticed_within_milliseconds(real: Client) -> None:
    protos = [await real.manager.create(parent="projects/p") for _ in range(50)]
    latencies: list[float] = []

    async def await_one(name: str) -> None:
        await real.ops.operation(name, result_type=empty_pb2.Empty)
        latencies.append(time.perf_counter() - completed[name])

    completed: dict[str, float] = {}
    async with asyncio.TaskGroup() as tg:
        for proto in protos:
            tg.create_task(await_one(proto.name))
        await asyncio.sleep(0.05)
        for proto in protos:
            await asyncio.sleep(0.005)
            completed[proto.name] = time.perf_counter()
            await real.manager.complete(proto.name)
    p50 = statistics.median(latencies)
    print(f"long-poll notice latency: p50 {p50 * 1e3:.2f} ms, max {max(latencies) * 1e3:.2f} ms")
    assert p50 < 0.02
    if real.watch:  # one stream for the 50 waits
        assert real.counter.calls == {"Watch": 1}
    else:
        assert real.counter.calls["WaitOperation"] == 50 + 1  # + the client's probe
    assert real.counter.calls["GetOperation"] == 0


async def test_a_thousand_awaiters_share_one_long_poll(real: Client) -> None:
    proto = await real.manager.create(parent="projects/p")
    ops = [real.ops.operation(proto.name, result_type=empty_pb2.Empty) for _ in range(10)]
    tasks = [asyncio.create_task(op.result()) for op in ops for _ in range(100)]
    await asyncio.sleep(0.05)
    await real.manager.complete(proto.name)
    assert len(await asyncio.gather(*tasks)) == 1000
    if real.watch:
        assert real.counter.calls == {"Watch": 1}
    else:
        assert real.counter.calls["WaitOperation"] <= 1 + 1  # the probe, one long poll
        assert sum(real.counter.calls.values()) == real.counter.calls["WaitOperation"] + 1


async def test_progress_sees_every_change_via_the_header(real: Client) -> None:
    seen: list[int] = []
    caught_up = asyncio.Event()

    async def work(ctx: OperationContext) -> empty_pb2.Empty:
        for step in range(1, 11):
            # The next change once the client has seen this one: changes a round trip
            # apart, however loaded the machine is.
            await asyncio.wait_for(caught_up.wait(), 5)
            caught_up.clear()
            await ctx.set_metadata(pct(step * 10))
        return empty_pb2.Empty()

    # Progress polls of 0.2 s until the server shows it honours the header by answering
    # a call early, on a change: a margin no load on the machine can blur.
    polls = Backoff(initial=0.2, multiplier=1.0, maximum=0.2, jitter=False)
    client = AsyncOperationsClient(real.channel, policy=dataclasses.replace(FAST, poll=polls))
    proto = await real.manager.start(work, parent="projects/p", metadata=pct(0))
    op = client.operation(proto, result_type=empty_pb2.Empty, metadata_type=wrappers_pb2.Int32Value)
    async for md in op.progress():
        seen.append(md.value)
        caught_up.set()
    assert seen == list(range(0, 101, 10))
    if real.watch:  # every change over the one stream
        assert real.counter.calls == {"Watch": 1}
        assert await op == empty_pb2.Empty()
        await client.aclose()
        return
    assert client._waiters.honours_progress
    waits = [md for method, md in real.counter.metadata if method == "WaitOperation"]
    assert all(WAIT_MODE_HEADER in md for md in waits)
    # The probe, one call per change, and a few short ones before the server has shown
    # that it honours the header.
    assert len(waits) <= 1 + 10 + 5
    assert await op == empty_pb2.Empty()
    await client.aclose()


async def test_awaiting_pays_nothing_for_metadata_changes(real: Client) -> None:
    proto = await real.manager.create(parent="projects/p", metadata=pct(0))
    task = asyncio.create_task(real.ops.operation(proto.name).result())
    for step in range(20):
        await asyncio.sleep(0.002)
        await real.manager.set_metadata(proto.name, pct(step))
    await real.manager.complete(proto.name)
    await task
    # Watch: one stream; else the Watch call refused, the probe, one long poll.
    assert real.counter.calls == (
        {"Watch": 1} if real.watch else {"Watch": 1, "WaitOperation": 1 + 1}
    )


async def test_gather_a_thousand_operations(real: Client) -> None:
    protos = [await real.manager.create(parent="projects/p") for _ in range(1000)]
    ops = [real.ops.operation(p, result_type=wrappers_pb2.Int64Value) for p in protos]
    order = list(range(1000))
    random.shuffle(order)

    async def finish() -> None:
        await asyncio.sleep(0.05)
        for i in order:
            await real.manager.complete(protos[i].name, wrappers_pb2.Int64Value(value=i))

    async with asyncio.TaskGroup() as tg:
        tg.create_task(finish())
        results = await gather(*ops, timeout=30)
    assert [r.value for r in results] == list(range(1000))
    if real.watch:
        assert real.counter.calls == {"Watch": 1}
    else:
        assert real.counter.calls["WaitOperation"] <= 1010
    assert real.counter.calls["GetOperation"] == 0


async def test_as_completed_a_thousand_operations(real: Client) -> None:
    protos = [await real.manager.create(parent="projects/p") for _ in range(1000)]
    ops = [real.ops.operation(p.name, result_type=wrappers_pb2.Int64Value) for p in protos]

    async def finish() -> None:
        while real.manager.watched < 1000:  # every long poll is open
            await asyncio.sleep(0.01)
        for i in range(999, -1, -1):
            await real.manager.complete(protos[i].name, wrappers_pb2.Int64Value(value=i))

    seen: list[int] = []
    async with asyncio.TaskGroup() as tg:
        tg.create_task(finish())
        async for op in as_completed(ops, timeout=30):
            seen.append((await op).value)
    assert sorted(seen) == list(range(1000))
    assert min(seen[:100]) >= 800, "yielded in completion order"


async def test_cancel_reaches_the_running_work(real: Client) -> None:
    started = asyncio.Event()

    async def work(ctx: OperationContext) -> empty_pb2.Empty:
        started.set()
        await asyncio.sleep(60)
        return empty_pb2.Empty()

    proto = await real.manager.start(work, parent="projects/p")
    op = real.ops.operation(proto, result_type=empty_pb2.Empty)
    await started.wait()
    assert await op.cancel()
    with pytest.raises(OperationCancelled):
        await op
    assert op.cancelled()


async def test_deleting_a_waited_operation_raises_not_found(real: Client) -> None:
    proto = await real.manager.create(parent="projects/p")
    task = asyncio.create_task(real.ops.operation(proto.name).result())
    await asyncio.sleep(0.05)
    await real.manager.delete(proto.name)
    with pytest.raises(OperationNotFound):
        await task


async def test_timeout_against_the_real_server(real: Client) -> None:
    proto = await real.manager.create(parent="projects/p")
    started = time.monotonic()
    with pytest.raises(OperationTimeout):
        await real.ops.operation(proto.name).result(timeout=0.2)
    assert 0.2 <= time.monotonic() - started <= 0.25
    assert not (await real.manager.get(proto.name)).done


async def test_a_server_cap_on_waits_just_reopens() -> None:
    async with serve(max_wait=0.05, watch=False) as served:
        counter = CountingInterceptor()
        async with grpc.aio.insecure_channel(served.target, interceptors=[counter]) as channel:
            client = AsyncOperationsClient(channel, policy=FAST)
            proto = await served.manager.create(parent="projects/p")
            task = asyncio.create_task(client.operation(proto.name).result())
            await asyncio.sleep(0.3)
            await served.manager.complete(proto.name)
            await task
            assert 5 <= counter.calls["WaitOperation"] <= 8
