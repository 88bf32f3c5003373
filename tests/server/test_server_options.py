"""server_options(): what lro_async recommends for a grpc.aio server, on real servers."""

from __future__ import annotations

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc

import lro_async
from lro_async.testing import serve


async def test_a_second_server_cannot_bind_a_port_already_taken() -> None:
    async with serve() as first:
        port = first.target.rpartition(":")[2]
        second = grpc.aio.server(options=lro_async.server_options())
        try:
            # Without SO_REUSEPORT off, this binds too and clients are split between them.
            with pytest.raises(RuntimeError, match="Failed to bind"):
                second.add_insecure_port(f"127.0.0.1:{port}")
        finally:
            await second.stop(None)
        # The first server still answers every call on its port.
        op = await first.manager.create()
        stub = operations_pb2_grpc.OperationsStub(first.channel)
        got = await stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
        assert got.name == op.name
