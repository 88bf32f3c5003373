"""progress(): ordered, deduplicated metadata; polled only while someone listens.

The polling and the headers are watched on the gRPC fake; what any server shows (a done
operation's metadata, the end on failure, a wait that cannot go on) is tested against
lro_async's server over each transport.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, wrappers_pb2

from lro_async import AsyncOperation, AsyncOperationsClient, OperationFailed, OperationNotFound
from lro_async.protobuf import WAIT_MODE_HEADER, WAIT_MODE_PROGRESS

from ..waiting import until
from .polling_server import OperationsTestServer
from .remote import Remote


def pct(value: int) -> wrappers_pb2.Int32Value:
    return wrappers_pb2.Int32Value(value=value)


async def collect(op: AsyncOperation[Any, wrappers_pb2.Int32Value]) -> list[int]:
    return [md.value async for md in op.progress()]


async def answered_since(server: OperationsTestServer, what: str) -> None:
    """Return once the client has had an answer to a call made after this moment: calls
    of one name go one after another, so that is when the second call from now starts."""
    calls = sum(server.calls.values())
    await until(lambda: sum(server.calls.values()) >= calls + 2, f"the client never saw {what}")


async def drive(server: OperationsTestServer, name: str, steps: list[int]) -> None:
    await answered_since(server, "the first metadata")
    for step in steps:
        server.set_metadata(name, pct(step))
        await answered_since(server, f"the metadata {step}")
    server.complete(name, empty_pb2.Empty())


@pytest.mark.parametrize("mode", ["polling", "long-poll ignoring the header"])
async def test_progress_yields_each_change_once_in_order(
    server: OperationsTestServer,
    client: AsyncOperationsClient,
    long_poll_server: OperationsTestServer,
    long_poll_client: AsyncOperationsClient,
    mode: str,
) -> None:
    if mode != "polling":
        server, client = long_poll_server, long_poll_client
    name = server.create(pct(0))
    op = client.operation(name, result_type=empty_pb2.Empty, metadata_type=wrappers_pb2.Int32Value)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(drive(server, name, [10, 10, 20, 20, 20, 50, 100]))
        seen = await collect(op)
    assert seen == [0, 10, 20, 50, 100]
    assert op.done
    assert await op == empty_pb2.Empty()


async def test_listeners_ask_for_progress_and_plain_awaiters_do_not(
    long_poll_server: OperationsTestServer, long_poll_client: AsyncOperationsClient
) -> None:
    server, client = long_poll_server, long_poll_client
    name = server.create(pct(0))
    op = client.operation(name, result_type=empty_pb2.Empty, metadata_type=wrappers_pb2.Int32Value)
    task = asyncio.create_task(op.result())
    await until(
        lambda: server.calls["WaitOperation"] == 2 and server.in_flight["WaitOperation"] == 1,
        "the awaiter's long poll never opened after the probe",
    )
    for step in range(1, 6):
        server.set_metadata(name, pct(step))
        await asyncio.sleep(0.01)  # a period in which an awaiter must not reopen its call
    # The probe, then one long poll: an awaiter pays nothing for metadata changes.
    assert server.calls["WaitOperation"] == 2
    listener = asyncio.create_task(collect(op))
    await until(
        lambda: server.calls["WaitOperation"] >= 3, "the open call was never reopened for it"
    )
    server.complete(name, empty_pb2.Empty())
    assert await task == empty_pb2.Empty()
    assert await listener == [0, 5], "the metadata last seen, then the change"
    headers = [str(md.get(WAIT_MODE_HEADER, "")) for _, md in server.invocation_metadata]
    assert headers[:2] == ["", ""]
    assert headers[2].startswith(WAIT_MODE_PROGRESS), "the open call was reopened with it"


async def test_many_listeners_share_one_stream_of_rpcs(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create(pct(0))
    ops = [
        client.operation(name, result_type=empty_pb2.Empty, metadata_type=wrappers_pb2.Int32Value)
        for _ in range(3)
    ]
    async with asyncio.TaskGroup() as tg:
        tg.create_task(drive(server, name, [30, 60]))
        listeners = [tg.create_task(collect(op)) for op in ops for _ in range(20)]
    assert all(listener.result() == [0, 30, 60] for listener in listeners)
    assert server.max_in_flight_per_name["GetOperation", name] == 1


async def test_progress_of_a_done_operation_yields_its_metadata_without_rpc(
    served: Remote,
) -> None:
    name = (await served.manager.create(metadata=pct(100))).name
    await served.manager.complete(name, empty_pb2.Empty())
    op = served.client.operation(
        name, result_type=empty_pb2.Empty, metadata_type=wrappers_pb2.Int32Value
    )
    await op
    calls = sum(served.calls.values())
    assert await collect(op) == [100]
    assert sum(served.calls.values()) == calls


async def test_progress_ends_when_the_operation_fails(served: Remote) -> None:
    name = (await served.manager.create(metadata=pct(1))).name
    op = served.client.operation(
        name, result_type=empty_pb2.Empty, metadata_type=wrappers_pb2.Int32Value
    )
    async with contextlib.aclosing(op.progress()) as updates:
        async for md in updates:
            assert md.value == 1
            await served.manager.fail(name, grpc.StatusCode.DATA_LOSS, "gone")
    with pytest.raises(OperationFailed, match="gone"):
        await op


async def test_progress_raises_a_permanent_wait_error(served: Remote) -> None:
    op = served.client.operation("operations/missing", metadata_type=wrappers_pb2.Int32Value)
    with pytest.raises(OperationNotFound):
        await collect(op)
