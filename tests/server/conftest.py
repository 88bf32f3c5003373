from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.longrunning import operations_pb2_grpc

import lro_async
from lro_async.testing import Served, serve


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve() as served:
        yield served


@pytest.fixture
def stub(served: Served) -> operations_pb2_grpc.OperationsStub:
    return operations_pb2_grpc.OperationsStub(served.channel)


@pytest.fixture
def manager(served: Served) -> lro_async.OperationManager:
    return served.manager
