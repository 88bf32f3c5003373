"""google-api-core and lro_async meet on the wire: each awaits the other's operations."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.api_core import operation_async, operations_v1, retry_async
from google.api_core.future.async_future import RETRY_PREDICATE
from google.longrunning import operations_pb2
from google.protobuf import struct_pb2, wrappers_pb2
from google.protobuf.message import Message

from lro_async import AsyncOperation, AsyncOperationsClient, OperationContext
from lro_async.testing import serve

from ..waiting import until

#: api-core's polling, made quick for tests.
QUICK_POLLS = retry_async.AsyncRetry(
    predicate=RETRY_PREDICATE, initial=0.01, maximum=0.05, multiplier=1.5
)


# api-core is untyped: these typed doors keep mypy --strict quiet about it.
def api_core_client(channel: grpc.aio.Channel) -> Any:
    return operations_v1.OperationsAsyncClient(channel)  # type: ignore[no-untyped-call]


def api_core_operation(
    proto: operations_pb2.Operation, client: Any, result_type: type[Message], **kwargs: Any
) -> Any:
    return operation_async.from_gapic(  # type: ignore[no-untyped-call]
        proto, client, result_type, **kwargs
    )


async def work(ctx: OperationContext) -> struct_pb2.Struct:
    await ctx.set_metadata(wrappers_pb2.Int32Value(value=50))
    await asyncio.sleep(0.05)
    await ctx.set_metadata(wrappers_pb2.Int32Value(value=100))
    return struct_pb2.Struct(fields={"ok": struct_pb2.Value(bool_value=True)})


async def test_api_core_awaits_an_operation_served_by_lro_async() -> None:
    async with serve() as served:
        operations = api_core_client(served.channel)
        proto = await served.manager.start(work, parent="projects/p")
        future = api_core_operation(
            proto,
            operations,
            struct_pb2.Struct,
            metadata_type=wrappers_pb2.Int32Value,
            retry=QUICK_POLLS,
        )
        result = await future.result(timeout=10)
        assert isinstance(result, struct_pb2.Struct)
        assert result["ok"] is True
        assert future.metadata == wrappers_pb2.Int32Value(value=100)
        fetched = await operations.get_operation(proto.name)
        assert fetched.done
        listed = [op.name async for op in await operations.list_operations("projects/p", "")]
        assert listed == [proto.name]


async def test_lro_async_awaits_the_proto_inside_an_api_core_operation() -> None:
    async with serve() as served:
        operations = api_core_client(served.channel)
        proto = await served.manager.start(work, parent="projects/p")
        future = api_core_operation(proto, operations, struct_pb2.Struct)
        client = AsyncOperationsClient(served.channel)
        op = AsyncOperation.from_operation(
            future.operation,
            client,
            result_type=struct_pb2.Struct,
            metadata_type=wrappers_pb2.Int32Value,
        )
        result = await op.result(timeout=10)
        assert result["ok"] is True
        assert op.metadata == wrappers_pb2.Int32Value(value=100)
        await client.aclose()


async def test_api_core_cancel_is_seen_by_lro_async() -> None:
    async def forever(ctx: OperationContext) -> struct_pb2.Struct:
        await asyncio.sleep(60)
        return struct_pb2.Struct()

    async with serve() as served:
        operations = api_core_client(served.channel)
        proto = await served.manager.start(forever, parent="projects/p")
        future = api_core_operation(proto, operations, struct_pb2.Struct)
        client = AsyncOperationsClient(served.channel)
        op = client.operation(proto.name, result_type=struct_pb2.Struct)
        waiting = asyncio.create_task(op.exception())
        await until(lambda: served.manager.watched == 1, "lro_async's client never waited")
        await future.cancel()
        error = await waiting
        assert op.cancelled()
        assert error is not None
        await client.aclose()
