"""Waiting against a server without WaitOperation: fallback to polling, retries, errors."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import struct_pb2, wrappers_pb2

from lro_async import (
    AsyncOperationsClient,
    InvalidArgument,
    OperationNotFound,
    PermissionDenied,
    RpcError,
)

from ..waiting import until
from .polling_server import OperationsTestServer


async def complete_after_polls(server: OperationsTestServer, name: str, polls: int) -> None:
    await until(lambda: server.calls["GetOperation"] >= polls, f"fewer than {polls} polls")
    server.complete(name, wrappers_pb2.StringValue(value="ok"))


async def test_falls_back_to_polling_and_remembers_it(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    first = server.create()
    op = client.operation(first, result_type=wrappers_pb2.StringValue)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(complete_after_polls(server, first, 2))
        result = await op
    assert result == wrappers_pb2.StringValue(value="ok")
    assert server.calls["WaitOperation"] == 1
    assert server.calls["GetOperation"] >= 2

    second = server.create()
    server.complete(second, wrappers_pb2.StringValue(value="again"))
    value = await client.operation(second, result_type=wrappers_pb2.StringValue)
    assert value.value == "again"
    assert server.calls["WaitOperation"] == 1, "UNIMPLEMENTED is remembered per client"


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
)
async def test_retries_transient_errors(
    server: OperationsTestServer, client: AsyncOperationsClient, code: grpc.StatusCode
) -> None:
    name = server.create()
    server.complete(name, struct_pb2.Struct(fields={"a": struct_pb2.Value(number_value=1)}))
    server.inject(code, times=3)
    result = await client.operation(name, result_type=struct_pb2.Struct).result(timeout=5)
    assert result["a"] == 1
    assert server.calls["GetOperation"] == 4


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.NOT_FOUND, OperationNotFound),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.INTERNAL, RpcError),
        (grpc.StatusCode.UNAUTHENTICATED, RpcError),
    ],
)
async def test_permanent_errors_end_the_wait_of_every_awaiter(
    server: OperationsTestServer,
    client: AsyncOperationsClient,
    code: grpc.StatusCode,
    error: type[RpcError],
) -> None:
    name = server.create()
    server.inject(code)
    ops = [client.operation(name) for _ in range(3)]
    results = await asyncio.gather(
        *(op.result() for op in ops for _ in range(10)), return_exceptions=True
    )
    assert len(results) == 30
    for result in results:
        assert type(result) is error
        assert isinstance(result, RpcError)
        assert result.code is code
        assert isinstance(result.__cause__, grpc.aio.AioRpcError)
    assert server.calls["GetOperation"] == 1, "one shared error, not one RPC per awaiter"


async def test_unknown_operation_raises_not_found(client: AsyncOperationsClient) -> None:
    with pytest.raises(OperationNotFound, match="operations/nope"):
        await client.operation("operations/nope")


async def test_a_failed_wait_can_be_awaited_again(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create()
    server.complete(name, wrappers_pb2.StringValue(value="ok"))
    server.inject(grpc.StatusCode.PERMISSION_DENIED)
    op = client.operation(name, result_type=wrappers_pb2.StringValue)
    with pytest.raises(PermissionDenied):
        await op
    assert not op.done
    assert (await op).value == "ok"


async def test_one_stream_of_rpcs_for_a_thousand_awaiters(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create()
    one = client.operation(name, result_type=wrappers_pb2.StringValue)
    others = [client.operation(name, result_type=wrappers_pb2.StringValue) for _ in range(10)]
    awaiters = [asyncio.create_task(one.result()) for _ in range(500)]
    awaiters += [asyncio.create_task(op.result()) for op in others for _ in range(50)]
    await asyncio.sleep(0.2)  # the period whose polls are counted
    polls_while_waiting = server.calls["GetOperation"]
    server.complete(name, wrappers_pb2.StringValue(value="ok"))
    results = await asyncio.gather(*awaiters)
    assert len(results) == 1000
    assert {r.value for r in results} == {"ok"}
    assert all(op.done for op in [one, *others])
    assert server.max_in_flight_per_name["GetOperation", name] == 1
    # 10 ms polls for 0.2 s: about 20 polls, not 20,000.
    assert polls_while_waiting <= 30
    assert server.calls["GetOperation"] <= polls_while_waiting + 3
