"""The client against lro_async's own server, over gRPC and over HTTP/JSON: long polls,
notice latency, progress, batches, errors and the plain RPCs.

Each test runs four times: over each transport, against a server with the Watch extension
(the client's waits share one stream) and without it (a WaitOperation call per wait).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import time

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2, wrappers_pb2

from lro_async import (
    Backoff,
    InvalidArgument,
    OperationCancelled,
    OperationContext,
    OperationFailed,
    OperationNotFound,
    OperationTimeout,
    RpcError,
    as_completed,
    gather,
)
from lro_async.protobuf import WAIT_MODE_HEADER

from ..waiting import until
from .conftest import FAST
from .remote import Remote, serve_over


@pytest.fixture(params=[True, False], ids=["watch", "wait"])
def watch(request: pytest.FixtureRequest) -> bool:
    """A server with the Watch extension and one without it."""
    param: bool = request.param
    return param


def pct(value: int) -> wrappers_pb2.Int32Value:
    return wrappers_pb2.Int32Value(value=value)


async def all_waiting(served: Remote, count: int, timeout: float = 10) -> None:
    """Return once the server has taken in *count* waits (names on the stream, long polls)."""
    await until(
        lambda: served.waits == count,
        f"the server never held {count} waits",
        timeout=timeout,
        details=lambda: f"watched {served.manager.watched}, long polls {served.long_polls}",
    )


async def test_await_long_polls_once(served: Remote) -> None:
    waited = asyncio.Event()

    async def work(ctx: OperationContext) -> struct_pb2.Struct:
        await waited.wait()
        return struct_pb2.Struct(fields={"answer": struct_pb2.Value(number_value=42)})

    proto = await served.manager.start(work, parent="projects/p")
    op = served.client.operation(proto, result_type=struct_pb2.Struct)
    task = asyncio.create_task(op.result())
    await all_waiting(served, 1)
    waited.set()
    result = await task
    assert result["answer"] == 42
    # Watch: one stream. Else the Watch call that finds out the server lacks it, one call
    # that answers at once (the client's first: does the server long-poll?), one long poll.
    assert served.calls == ({"Watch": 1} if served.watch else {"Watch": 1, "WaitOperation": 2})


async def test_completion_is_noticed_within_milliseconds(served: Remote) -> None:
    protos = [await served.manager.create(parent="projects/p") for _ in range(50)]
    latencies: list[float] = []

    async def await_one(name: str) -> None:
        await served.client.operation(name, result_type=empty_pb2.Empty)
        latencies.append(time.perf_counter() - completed[name])

    completed: dict[str, float] = {}
    async with asyncio.TaskGroup() as tg:
        for proto in protos:
            tg.create_task(await_one(proto.name))
        await all_waiting(served, 50)
        for proto in protos:
            await asyncio.sleep(0.005)  # completions apart: each is noticed on its own
            completed[proto.name] = time.perf_counter()
            await served.manager.complete(proto.name)
    p50 = statistics.median(latencies)
    print(f"long-poll notice latency: p50 {p50 * 1e3:.2f} ms, max {max(latencies) * 1e3:.2f} ms")
    assert p50 < (0.02 if served.transport == "grpc" else 0.05)
    if served.watch:  # one stream for the 50 waits
        assert served.calls == {"Watch": 1}
    else:  # the Watch call refused, the client's probe, one long poll each
        assert served.calls == {"Watch": 1, "WaitOperation": 50 + 1}
    assert served.calls["GetOperation"] == 0


async def test_a_thousand_awaiters_share_one_long_poll(served: Remote) -> None:
    proto = await served.manager.create(parent="projects/p")
    ops = [served.client.operation(proto.name, result_type=empty_pb2.Empty) for _ in range(10)]
    tasks = [asyncio.create_task(op.result()) for op in ops for _ in range(100)]
    await all_waiting(served, 1)
    await served.manager.complete(proto.name)
    assert len(await asyncio.gather(*tasks)) == 1000
    if served.watch:
        assert served.calls == {"Watch": 1}
    else:
        assert served.calls["WaitOperation"] <= 1 + 1  # the probe, one long poll
        assert sum(served.calls.values()) == served.calls["WaitOperation"] + 1


async def test_progress_sees_every_change_via_the_header(served: Remote) -> None:
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
    client = served.connect(dataclasses.replace(FAST, poll=polls))
    proto = await served.manager.start(work, parent="projects/p", metadata=pct(0))
    op = client.operation(proto, result_type=empty_pb2.Empty, metadata_type=wrappers_pb2.Int32Value)
    async for md in op.progress():
        seen.append(md.value)
        caught_up.set()
    assert seen == list(range(0, 101, 10))
    if served.watch:  # every change over the one stream
        assert served.calls == {"Watch": 1}
        assert await op == empty_pb2.Empty()
        await client.aclose()
        return
    assert client._waiters.honours_progress
    assert set(served.calls) == {"Watch", "WaitOperation"}
    assert served.calls["Watch"] == 1  # refused, and remembered
    waits = [md for method, md in served.metadata if method == "WaitOperation"]
    assert all(WAIT_MODE_HEADER in md for md in waits)
    # The probe, one call per change, and a few short ones before the server has shown
    # that it honours the header.
    assert len(waits) <= 1 + 10 + 5
    assert await op == empty_pb2.Empty()
    await client.aclose()


async def test_awaiting_pays_nothing_for_metadata_changes(served: Remote) -> None:
    proto = await served.manager.create(parent="projects/p", metadata=pct(0))
    task = asyncio.create_task(served.client.operation(proto.name).result())
    await all_waiting(served, 1)
    for step in range(20):
        await asyncio.sleep(0.002)  # changes spread over the wait, as work makes them
        await served.manager.set_metadata(proto.name, pct(step))
    await served.manager.complete(proto.name)
    await task
    # Watch: one stream; else the Watch call refused, the probe, one long poll.
    assert served.calls == ({"Watch": 1} if served.watch else {"Watch": 1, "WaitOperation": 1 + 1})


async def test_gather_a_thousand_operations(served: Remote) -> None:
    protos = [await served.manager.create(parent="projects/p") for _ in range(1000)]
    ops = [served.client.operation(p, result_type=wrappers_pb2.Int64Value) for p in protos]
    order = list(range(1000))
    random.shuffle(order)

    async def finish() -> None:
        await all_waiting(served, 1000, timeout=30)
        for i in order:
            await served.manager.complete(protos[i].name, wrappers_pb2.Int64Value(value=i))

    async with asyncio.TaskGroup() as tg:
        tg.create_task(finish())
        results = await gather(*ops, timeout=30)
    assert [r.value for r in results] == list(range(1000))
    if served.watch:
        assert served.calls == {"Watch": 1}
    else:  # the Watch call refused (once for the whole client), the probe, the long polls
        assert served.calls == {"Watch": 1, "WaitOperation": 1000 + 1}
    assert served.calls["GetOperation"] == 0


async def test_as_completed_a_thousand_operations(served: Remote) -> None:
    protos = [await served.manager.create(parent="projects/p") for _ in range(1000)]
    ops = [served.client.operation(p.name, result_type=wrappers_pb2.Int64Value) for p in protos]

    async def finish() -> None:
        await all_waiting(served, 1000, timeout=30)  # every wait is open
        for i in range(999, -1, -1):
            await served.manager.complete(protos[i].name, wrappers_pb2.Int64Value(value=i))

    seen: list[int] = []
    async with asyncio.TaskGroup() as tg:
        tg.create_task(finish())
        async for op in as_completed(ops, timeout=30):
            seen.append((await op).value)
    assert sorted(seen) == list(range(1000))
    assert min(seen[:100]) >= 800, "yielded in completion order"


async def test_cancel_reaches_the_running_work(served: Remote) -> None:
    started = asyncio.Event()

    async def work(ctx: OperationContext) -> empty_pb2.Empty:
        started.set()
        await asyncio.sleep(60)
        return empty_pb2.Empty()

    proto = await served.manager.start(work, parent="projects/p")
    op = served.client.operation(proto, result_type=empty_pb2.Empty)
    await started.wait()
    assert await op.cancel()
    with pytest.raises(OperationCancelled):
        await op
    assert op.cancelled()


async def test_deleting_a_waited_operation_raises_not_found(served: Remote) -> None:
    proto = await served.manager.create(parent="projects/p")
    task = asyncio.create_task(served.client.operation(proto.name).result())
    await all_waiting(served, 1)
    await served.manager.delete(proto.name)
    with pytest.raises(OperationNotFound):
        await task


async def test_timeout_against_the_real_server(served: Remote) -> None:
    proto = await served.manager.create(parent="projects/p")
    started = time.monotonic()
    with pytest.raises(OperationTimeout):
        await served.client.operation(proto.name).result(timeout=0.2)
    assert 0.2 <= time.monotonic() - started <= 0.25
    assert not (await served.manager.get(proto.name)).done


async def test_failed_and_cancelled_operations_raise(served: Remote) -> None:
    failed = await served.manager.create(parent="projects/p")
    await served.manager.fail(failed.name, grpc.StatusCode.FAILED_PRECONDITION, "no")
    with pytest.raises(OperationFailed) as caught:
        await served.client.operation(failed.name)
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.message == "no"

    async def forever(ctx: OperationContext) -> empty_pb2.Empty:
        await asyncio.sleep(60)
        return empty_pb2.Empty()

    running = await served.manager.start(forever, parent="projects/p")
    op = served.client.operation(running, result_type=empty_pb2.Empty)
    waiting = asyncio.create_task(op.exception())
    await all_waiting(served, 1)
    assert await op.cancel()
    assert isinstance(await waiting, OperationCancelled)


async def test_errors_keep_their_code_message_and_details(served: Remote) -> None:
    with pytest.raises(InvalidArgument) as invalid:
        await served.client.get_operation("not a name")
    assert invalid.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert invalid.value.details  # ErrorInfo
    with pytest.raises(OperationNotFound, match="not found"):
        await served.client.cancel_operation("projects/p/operations/nope")
    with pytest.raises(InvalidArgument, match="filter"):
        [op async for op in served.client.list_operations("projects/p", filter="done ==")]


async def test_list_get_delete(served: Remote) -> None:
    client = served.client
    names = [(await served.manager.create(parent="projects/p")).name for _ in range(7)]
    top = await served.manager.create()
    listed = [op.name async for op in client.list_operations("projects/p", page_size=3)]
    assert listed == names
    every = [op.name async for op in client.list_operations("")]
    assert every == [*names, top.name]
    assert [op.name async for op in client.list_operations("operations")] == [top.name]
    assert (await client.get_operation(names[0])).name == names[0]
    await client.delete_operation(names[0])
    with pytest.raises(OperationNotFound):
        await client.get_operation(names[0])
    assert served.calls["ListOperations"] == 3 + 1 + 1


async def test_wait_operation_asks_the_server_for_a_bounded_wait(served: Remote) -> None:
    proto = await served.manager.create(parent="projects/p")
    started = time.perf_counter()
    op = await served.client.wait_operation(proto.name, 0.2)
    assert not op.done
    assert 0.15 < time.perf_counter() - started < 2


async def test_closing_the_client_ends_its_waits_on_the_server(served: Remote) -> None:
    proto = await served.manager.create(parent="projects/p")
    client = served.connect(FAST)
    task = asyncio.create_task(client.operation(proto.name).result())
    await all_waiting(served, 1)
    await client.aclose()
    with pytest.raises(RpcError) as caught:
        await task
    assert caught.value.code is grpc.StatusCode.CANCELLED  # over the stream as over a poll
    # The server notices the call or connection went and stops waiting.
    await until(
        lambda: (served.manager.watched, served.long_polls, served.streams) == (0, 0, 0),
        "the server still waits for a closed client",
        details=lambda: (served.manager.watched, served.long_polls, served.streams),
    )


async def test_a_server_cap_on_waits_just_reopens() -> None:
    # Over gRPC only: it counts the calls of a period, and an HTTP request's round trip
    # is too slow and too variable on a loaded machine for a 50 ms cap to count on.
    async with serve_over("grpc", policy=FAST, max_wait=0.05, watch=False) as served:
        proto = await served.manager.create(parent="projects/p")
        task = asyncio.create_task(served.client.operation(proto.name).result())
        await asyncio.sleep(0.3)  # the period in which the capped waits reopen
        await served.manager.complete(proto.name)
        await task
        assert 5 <= served.calls["WaitOperation"] <= 8
