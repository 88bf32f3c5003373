"""proto-plus types (google-cloud-*): a Cloud client's operation awaited through lro_async."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest
from google.api_core import operation, operation_async
from google.cloud import redis_v1
from google.cloud.redis_v1.services.cloud_redis.transports import CloudRedisGrpcAsyncIOTransport
from google.longrunning import operations_pb2
from google.protobuf import struct_pb2

import lro_async
import lro_async.testing

PARENT = "projects/p/locations/l"


class CreateInstance:
    """CloudRedis.CreateInstance on lro_async's manager; the work waits for ``release``."""

    def __init__(self, manager: lro_async.OperationManager) -> None:
        self.manager = manager
        self.release = asyncio.Event()

    async def handle(
        self, request: operations_pb2.Operation, context: grpc.aio.ServicerContext[object, object]
    ) -> operations_pb2.Operation:
        create = redis_v1.CreateInstanceRequest.wrap(request)
        instance = redis_v1.Instance(
            name=f"{create.parent}/instances/{create.instance_id}",
            memory_size_gb=create.instance.memory_size_gb,
            tier=create.instance.tier,
            state=redis_v1.Instance.State.READY,
        )

        async def work(ctx: lro_async.OperationContext) -> object:
            await ctx.set_metadata(
                redis_v1.OperationMetadata.pb(redis_v1.OperationMetadata(verb="create"))
            )
            await self.release.wait()
            await ctx.set_metadata(
                redis_v1.OperationMetadata.pb(redis_v1.OperationMetadata(verb="created"))
            )
            return redis_v1.Instance.pb(instance)

        return await self.manager.start(
            work,  # type: ignore[arg-type]
            parent=create.parent,
            metadata=redis_v1.OperationMetadata.pb(redis_v1.OperationMetadata(verb="queued")),
        )


@contextlib.asynccontextmanager
async def redis_server() -> AsyncIterator[tuple[lro_async.testing.Served, CreateInstance]]:
    manager = lro_async.OperationManager()
    create = CreateInstance(manager)

    def register(server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            create.handle,
            request_deserializer=redis_v1.CreateInstanceRequest.pb().FromString,
            response_serializer=operations_pb2.Operation.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "google.cloud.redis.v1.CloudRedis", {"CreateInstance": handler}
                ),
            )
        )

    async with lro_async.testing.serve(manager, register=register) as served:
        yield served, create


async def start_instance(
    served: lro_async.testing.Served,
) -> operation_async.AsyncOperation:
    transport = CloudRedisGrpcAsyncIOTransport(channel=served.channel)
    redis = redis_v1.CloudRedisAsyncClient(transport=transport)
    return await redis.create_instance(
        parent=PARENT,
        instance_id="cache",
        instance=redis_v1.Instance(memory_size_gb=2, tier=redis_v1.Instance.Tier.BASIC),
    )


async def test_a_cloud_redis_operation_awaited_through_lro_async_gives_a_proto_plus_instance() -> (
    None
):
    async with redis_server() as (served, create):
        api_core_op = await start_instance(served)
        async with lro_async.AsyncOperationsClient(served.channel) as client:
            op = client.operation(api_core_op)  # its proto and its types
            queued = op.metadata
            assert isinstance(queued, redis_v1.OperationMetadata)
            assert queued.verb == "queued"
            seen: list[str] = []
            async with contextlib.aclosing(op.progress()) as updates:
                async for md in updates:
                    assert isinstance(md, redis_v1.OperationMetadata)
                    seen.append(md.verb)
                    if md.verb == "create":
                        create.release.set()
            instance = await op.result(timeout=30)
    assert isinstance(instance, redis_v1.Instance)
    assert instance.name == f"{PARENT}/instances/cache"
    assert instance.memory_size_gb == 2
    assert instance.state == redis_v1.Instance.State.READY
    assert seen[-1] == "created" and "create" in seen


async def test_proto_plus_types_given_explicitly_come_back_from_gather_and_as_completed() -> None:
    async with redis_server() as (served, create):
        api_core_ops = [await start_instance(served) for _ in range(3)]
        create.release.set()
        async with lro_async.AsyncOperationsClient(served.channel) as client:
            ops = [
                client.operation(
                    api_op.operation,
                    result_type=redis_v1.Instance,
                    metadata_type=redis_v1.OperationMetadata,
                )
                for api_op in api_core_ops
            ]
            instances = await lro_async.gather(*ops, timeout=30)
            finished = [op async for op in lro_async.as_completed(ops, timeout=30)]
    assert all(isinstance(instance, redis_v1.Instance) for instance in instances)
    assert {id(op) for op in finished} == {id(op) for op in ops}
    for op in finished:
        assert isinstance(op.metadata, redis_v1.OperationMetadata)
        assert op.metadata.verb == "created"


async def test_an_api_core_operation_keeps_the_types_given_explicitly() -> None:
    async with redis_server() as (served, create):
        api_core_op = await start_instance(served)
        create.release.set()
        async with lro_async.AsyncOperationsClient(served.channel) as client:
            # The explicit type wins over the api-core operation's own.
            op = client.operation(api_core_op, result_type=struct_pb2.Struct)
            with pytest.raises(lro_async.UnexpectedOperationState, match="Instance"):
                await op.result(timeout=30)


@pytest.mark.parametrize(
    "bad", [dict, str, 3, redis_v1.Instance(), operations_pb2.Operation(), object]
)
async def test_a_type_that_is_not_a_message_class_fails_when_the_operation_is_made(
    bad: object,
) -> None:
    async with lro_async.testing.serve() as served:
        client = lro_async.AsyncOperationsClient(served.channel)
        with pytest.raises(TypeError, match="result_type must be a protobuf message class"):
            client.operation("operations/1", result_type=bad)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="metadata_type must be"):
            client.operation("operations/1", metadata_type=bad)  # type: ignore[call-overload]
        await client.aclose()


async def test_something_that_is_not_an_operation_is_refused() -> None:
    async with lro_async.testing.serve() as served:
        client = lro_async.AsyncOperationsClient(served.channel)
        with pytest.raises(TypeError, match="google-api-core operation, not int"):
            client.operation(42)  # type: ignore[call-overload]
        await client.aclose()


async def test_a_sync_api_core_operation_is_taken_too() -> None:
    async with lro_async.testing.serve() as served:
        proto = await served.manager.create()
        await served.manager.complete(proto.name, redis_v1.Instance.pb(redis_v1.Instance(name="s")))
        api_core_op = operation.Operation(  # type: ignore[no-untyped-call]
            proto, lambda: proto, lambda: None, redis_v1.Instance, redis_v1.OperationMetadata
        )
        async with lro_async.AsyncOperationsClient(served.channel) as client:
            instance = await client.operation(api_core_op).result(timeout=30)
    assert isinstance(instance, redis_v1.Instance) and instance.name == "s"


LAZY = """
import sys
import grpc
from google.protobuf import struct_pb2
import lro_async, lro_async.sync

client = lro_async.AsyncOperationsClient(grpc.aio.insecure_channel("127.0.0.1:1"))
op = client.operation("operations/1", result_type=struct_pb2.Struct)
client.operation_from_token(op.token())
lro_async.progress_fraction(struct_pb2.Struct())
print("proto" in sys.modules)
"""


def test_proto_plus_is_not_imported_unless_a_proto_plus_class_is_passed() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", LAZY], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
