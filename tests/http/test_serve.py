"""``lro-async serve --http-port``: HTTP/JSON beside gRPC from one manager, stopped together."""

from __future__ import annotations

import asyncio

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2

from lro_async import AsyncOperationsClient
from lro_async.cli import _parser
from lro_async.cli.serve import running_server

from ..waiting import until
from .conftest import FAST


def test_the_serve_command_takes_an_http_port() -> None:
    assert _parser().parse_args(["serve"]).http_port is None
    assert _parser().parse_args(["serve", "--http-port", "0"]).http_port == 0


async def test_grpc_and_http_serve_the_same_operations_and_stop_together() -> None:
    async with running_server("127.0.0.1", 0, "memory", grace=1.0, http_port=0) as running:
        assert running.http_target is not None
        client = AsyncOperationsClient.from_url(f"http://{running.http_target}", policy=FAST)
        op = await running.manager.create(parent="projects/p")
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = operations_pb2_grpc.OperationsStub(channel)
            got = await stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
            assert got == await client.get_operation(op.name)
            waiting = asyncio.create_task(
                client.operation(op.name, result_type=empty_pb2.Empty).result()
            )
            await until(lambda: running.manager.watched >= 1, "the HTTP client never waited")
            await running.manager.complete(op.name)
            assert await waiting == empty_pb2.Empty()
            pending = await running.manager.create(parent="projects/p")
            held = asyncio.create_task(client.wait_operation(pending.name, 30))
            await until(lambda: running.manager.watched >= 1, "the :wait never arrived")
    # Leaving drained the manager: the held :wait got the latest state at once.
    assert not (await asyncio.wait_for(held, 1)).done
    await client.aclose()
