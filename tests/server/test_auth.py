"""Authorization and tenant isolation over the wire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc

import lro_async
from lro_async.testing import Served, serve

from ..waiting import until
from .rpc import rpc_fails, wait_request

DENIED = grpc.StatusCode.PERMISSION_DENIED
ACME = (("x-tenant", "acme"),)
OTHER = (("x-tenant", "other"),)


@pytest.fixture
async def tenants() -> AsyncIterator[Served]:
    async with serve(authorize=lro_async.TenantPolicy()) as served:
        yield served


async def test_a_tenant_reaches_its_own_operations(tenants: Served) -> None:
    stub = operations_pb2_grpc.OperationsStub(tenants.channel)
    op = await tenants.manager.create(parent="tenants/acme/projects/p")
    got = await stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name), metadata=ACME)
    assert got.name == op.name
    page = await stub.ListOperations(
        operations_pb2.ListOperationsRequest(name="tenants/acme/projects/p"), metadata=ACME
    )
    assert [o.name for o in page.operations] == [op.name]
    await stub.WaitOperation(wait_request(op.name, 0), metadata=ACME)
    await stub.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name), metadata=ACME)
    await stub.DeleteOperation(operations_pb2.DeleteOperationRequest(name=op.name), metadata=ACME)


async def test_another_tenants_operation_and_a_missing_one_look_the_same(
    tenants: Served,
) -> None:
    stub = operations_pb2_grpc.OperationsStub(tenants.channel)
    theirs = await tenants.manager.create(parent="tenants/acme")
    missing = "tenants/acme/operations/doesnotexist"
    messages = set()
    for name in (theirs.name, missing):
        for call in (
            stub.GetOperation(operations_pb2.GetOperationRequest(name=name), metadata=OTHER),
            stub.WaitOperation(wait_request(name, 0), metadata=OTHER),
            stub.CancelOperation(operations_pb2.CancelOperationRequest(name=name), metadata=OTHER),
            stub.DeleteOperation(operations_pb2.DeleteOperationRequest(name=name), metadata=OTHER),
        ):
            error = await rpc_fails(call, DENIED)
            messages.add((error.details() or "").replace(name, "NAME"))
    assert len(messages) == 4, "one message per RPC, whether the operation exists or not"
    after = await tenants.manager.get(theirs.name)
    assert not after.done, "a denied cancel changed nothing"


async def test_listing_is_confined_to_the_tenant(tenants: Served) -> None:
    stub = operations_pb2_grpc.OperationsStub(tenants.channel)
    await tenants.manager.create(parent="tenants/acme")
    for parent in ("", "operations", "tenants/other", "tenants/acmeX", "tenants"):
        request = operations_pb2.ListOperationsRequest(name=parent)
        await rpc_fails(stub.ListOperations(request, metadata=ACME), DENIED)
    await rpc_fails(
        stub.ListOperations(operations_pb2.ListOperationsRequest(name="tenants/acme")), DENIED
    )


async def test_a_page_token_of_one_tenant_is_invalid_for_another(tenants: Served) -> None:
    stub = operations_pb2_grpc.OperationsStub(tenants.channel)
    for parent in ("tenants/acme", "tenants/other"):
        for _ in range(3):
            await tenants.manager.create(parent=parent)
    page = await stub.ListOperations(
        operations_pb2.ListOperationsRequest(name="tenants/acme", page_size=1), metadata=ACME
    )
    stolen = operations_pb2.ListOperationsRequest(
        name="tenants/other", page_size=1, page_token=page.next_page_token
    )
    await rpc_fails(stub.ListOperations(stolen, metadata=OTHER), grpc.StatusCode.INVALID_ARGUMENT)


@pytest.mark.parametrize("tenant", ["", "a/b", "x" * 200, "../acme", "acme tenant"])
async def test_malformed_tenants_are_denied(tenants: Served, tenant: str) -> None:
    stub = operations_pb2_grpc.OperationsStub(tenants.channel)
    op = await tenants.manager.create(parent="tenants/acme")
    request = operations_pb2.GetOperationRequest(name=op.name)
    await rpc_fails(stub.GetOperation(request, metadata=(("x-tenant", tenant),)), DENIED)


async def test_an_async_authorizer_sees_rpc_resource_and_caller() -> None:
    seen: list[lro_async.Access] = []

    async def authorize(access: lro_async.Access) -> bool:
        await asyncio.sleep(0)
        seen.append(access)
        return access.caller.metadata.get("authorization") == "Bearer good"

    async with serve(authorize=authorize) as served:
        stub = operations_pb2_grpc.OperationsStub(served.channel)
        op = await served.manager.create(parent="projects/p")
        good = (("authorization", "Bearer good"),)
        await stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name), metadata=good)
        await rpc_fails(stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name)), DENIED)
        await stub.ListOperations(operations_pb2.ListOperationsRequest(name=""), metadata=good)
    assert [(a.rpc, a.resource) for a in seen] == [
        ("GetOperation", op.name),
        ("GetOperation", op.name),
        ("ListOperations", ""),
    ]
    assert seen[0].caller.peer.startswith("ipv4:127.0.0.1")
    assert seen[0].caller.transport == "grpc"


async def test_an_authorizer_that_raises_denies(caplog: pytest.LogCaptureFixture) -> None:
    def authorize(access: lro_async.Access) -> bool:
        raise RuntimeError("policy backend down")

    async with serve(authorize=authorize) as served:
        stub = operations_pb2_grpc.OperationsStub(served.channel)
        op = await served.manager.create()
        await rpc_fails(stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name)), DENIED)
    assert "policy backend down" in caplog.text


async def test_malformed_names_are_invalid_before_authorization(tenants: Served) -> None:
    stub = operations_pb2_grpc.OperationsStub(tenants.channel)
    await rpc_fails(
        stub.GetOperation(operations_pb2.GetOperationRequest(name="bad name"), metadata=ACME),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_too_many_waits_are_resource_exhausted_with_a_retry_hint() -> None:
    async with serve() as served:
        served.servicer.max_waits = 3
        stub = operations_pb2_grpc.OperationsStub(served.channel)
        op = await served.manager.create()
        held = [stub.WaitOperation(wait_request(op.name, 30)) for _ in range(3)]
        await until(
            lambda: served.servicer.waiting == 3,
            "three WaitOperation calls open",
            details=lambda: served.servicer.waiting,
        )
        error = await rpc_fails(
            stub.WaitOperation(wait_request(op.name, 30)), grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert "retry" in (error.details() or "")
        await served.manager.complete(op.name)
        assert all(answer.done for answer in await asyncio.gather(*held))
        assert served.servicer.waiting == 0
