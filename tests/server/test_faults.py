"""A store that fails or stalls: clients get UNAVAILABLE, and the server recovers with it."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc

import lro_async
from lro_async.stores import MemoryStore, OperationRecord
from lro_async.testing import serve

from .rpc import rpc_fails


class FlakyStore(MemoryStore):
    """A MemoryStore whose reads can be made to raise or to hang."""

    may_stall = True

    def __init__(self) -> None:
        super().__init__()
        self.mode: Literal["ok", "raise", "stall"] = "ok"

    async def get(self, name: str) -> OperationRecord | None:
        if self.mode == "raise":
            raise ConnectionResetError("database connection reset")
        if self.mode == "stall":
            await asyncio.sleep(3600)
        return await super().get(name)


@pytest.mark.parametrize("mode", ["raise", "stall"])
async def test_a_failing_store_gives_unavailable_and_the_server_recovers(
    mode: Literal["raise", "stall"], caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore()
    manager = lro_async.OperationManager(store=store, store_timeout=0.3)
    async with serve(manager) as served:
        stub = operations_pb2_grpc.OperationsStub(served.channel)
        op = await manager.create()
        request = operations_pb2.GetOperationRequest(name=op.name)
        store.mode = mode
        started = time.monotonic()
        error = await rpc_fails(stub.GetOperation(request, timeout=10), grpc.StatusCode.UNAVAILABLE)
        assert time.monotonic() - started < 2, "a stalled store does not hang the call"
        assert "store" in (error.details() or "")
        assert "database connection reset" not in (error.details() or ""), "internals stay in logs"
        store.mode = "ok"
        assert (await stub.GetOperation(request)).name == op.name
    if mode == "raise":
        assert "database connection reset" in caplog.text
