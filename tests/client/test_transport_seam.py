"""The waiting logic over the transport seam, with an in-memory transport (no gRPC at all)."""

from __future__ import annotations

import asyncio
import collections

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from lro_async import AsyncOperationsClient, OperationNotFound, RpcError
from lro_async.client.transport import Metadata, OperationsTransport

from ..waiting import until
from .conftest import FAST


class MemoryTransport:
    """Operations in a dict; WaitOperation unimplemented; optional failures on GetOperation."""

    def __init__(self) -> None:
        self.operations: dict[str, operations_pb2.Operation] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.get_raises: BaseException | None = None

    async def get(
        self, name: str, *, timeout: float | None, metadata: Metadata
    ) -> operations_pb2.Operation:
        self.calls["get"] += 1
        await asyncio.sleep(0)
        if self.get_raises is not None:
            raise self.get_raises
        if name not in self.operations:
            raise OperationNotFound(name)
        return self.operations[name]

    async def wait(
        self, name: str, wait: float | None, *, timeout: float | None, metadata: Metadata
    ) -> operations_pb2.Operation:
        self.calls["wait"] += 1
        raise RpcError("no", code=grpc.StatusCode.UNIMPLEMENTED)

    async def cancel(self, name: str, *, timeout: float | None, metadata: Metadata) -> None:
        raise RpcError("no", code=grpc.StatusCode.UNIMPLEMENTED)

    async def delete(self, name: str, *, timeout: float | None, metadata: Metadata) -> None:
        del self.operations[name]

    async def list(
        self,
        parent: str,
        *,
        filter: str,
        page_size: int,
        page_token: str,
        timeout: float | None,
        metadata: Metadata,
    ) -> operations_pb2.ListOperationsResponse:
        return operations_pb2.ListOperationsResponse(operations=list(self.operations.values()))


async def test_waiting_works_over_any_transport() -> None:
    transport = MemoryTransport()
    seam: OperationsTransport = transport
    client = AsyncOperationsClient(seam, policy=FAST)
    transport.operations["operations/1"] = operations_pb2.Operation(name="operations/1")
    task = asyncio.create_task(
        client.operation("operations/1", result_type=empty_pb2.Empty).result()
    )
    await until(lambda: transport.calls["get"] >= 2, "the waiter never polled")
    done = operations_pb2.Operation(name="operations/1", done=True)
    done.response.Pack(empty_pb2.Empty())
    transport.operations["operations/1"] = done
    assert await task == empty_pb2.Empty()
    assert transport.calls["wait"] == 1
    assert [op.name async for op in client.list_operations("")] == ["operations/1"]
    await client.delete_operation("operations/1")
    with pytest.raises(OperationNotFound):
        await client.get_operation("operations/1")


async def test_a_cancelled_error_from_inside_ends_the_wait_instead_of_hanging() -> None:
    transport = MemoryTransport()
    client = AsyncOperationsClient(transport, policy=FAST)
    transport.operations["operations/1"] = operations_pb2.Operation(name="operations/1")
    transport.get_raises = asyncio.CancelledError()
    with pytest.raises(RpcError, match="cancelled from inside") as caught:
        await asyncio.wait_for(client.operation("operations/1").result(), 5)
    assert caught.value.code is grpc.StatusCode.CANCELLED
