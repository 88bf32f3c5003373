"""AsyncOperationsClient: the five RPCs, metadata, deadlines and error mapping."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import empty_pb2

from lro_async import AsyncOperationsClient, OperationNotFound, RpcError

from ..waiting import until
from .conftest import FAST
from .polling_server import OperationsTestServer


async def test_get_operation_returns_the_proto(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create()
    operation = await client.get_operation(name)
    assert operation.name == name
    assert not operation.done


async def test_errors_are_mapped_and_chained(client: AsyncOperationsClient) -> None:
    with pytest.raises(OperationNotFound) as caught:
        await client.get_operation("operations/missing")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert "operations/missing" in caught.value.message
    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)


async def test_list_operations_pages_through_everything(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    names = [server.create(name=f"projects/p/operations/{i:03}") for i in range(25)]
    server.create(name="projects/other/operations/1")
    for name in names[:5]:
        server.complete(name, empty_pb2.Empty())
    listed = [op.name async for op in client.list_operations("projects/p", page_size=10)]
    assert listed == names
    assert server.calls["ListOperations"] == 3
    done = [op.name async for op in client.list_operations("projects/p", filter="done = true")]
    assert done == names[:5]


async def test_cancel_and_delete_operation(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create()
    await client.cancel_operation(name)
    assert server.operations[name].error.code == grpc.StatusCode.CANCELLED.value[0]
    await client.delete_operation(name)
    assert name not in server.operations
    with pytest.raises(OperationNotFound):
        await client.delete_operation(name)


async def test_wait_operation_is_one_rpc(
    long_poll_server: OperationsTestServer, long_poll_client: AsyncOperationsClient
) -> None:
    name = long_poll_server.create()
    operation = await long_poll_client.wait_operation(name, 0.05)
    assert not operation.done
    asyncio.get_running_loop().call_later(0.05, long_poll_server.complete, name, empty_pb2.Empty())
    operation = await long_poll_client.wait_operation(name, 10)
    assert operation.done
    assert long_poll_server.wait_timeouts == [0.05, 10.0]


async def test_wait_operation_unimplemented_is_an_rpc_error(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    with pytest.raises(RpcError) as caught:
        await client.wait_operation(server.create(), 1)
    assert caught.value.code is grpc.StatusCode.UNIMPLEMENTED


async def test_client_and_call_metadata_are_sent(
    server: OperationsTestServer, channel: grpc.aio.Channel
) -> None:
    client = AsyncOperationsClient(channel, metadata=[("authorization", "Bearer t")], policy=FAST)
    name = server.create()
    await client.get_operation(name, metadata=[("x-request-id", "r1")])
    server.complete(name, empty_pb2.Empty())
    await client.operation(name)
    for method, metadata in server.invocation_metadata:
        assert metadata["authorization"] == "Bearer t", method
    assert server.invocation_metadata[0][1]["x-request-id"] == "r1"
    assert "x-request-id" not in server.invocation_metadata[-1][1]


async def test_per_call_timeout_is_the_rpc_deadline(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    server.hold = asyncio.Event()
    with pytest.raises(RpcError) as caught:
        await client.get_operation(server.create(), timeout=0.05)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_the_client_is_an_async_context_manager(
    server: OperationsTestServer, channel: grpc.aio.Channel
) -> None:
    async with AsyncOperationsClient(channel, policy=FAST) as client:
        task = asyncio.create_task(client.operation(server.create()).result())
        await until(lambda: sum(server.calls.values()) >= 1, "the wait never reached the server")
    with pytest.raises(RpcError, match="closed"):
        await task
