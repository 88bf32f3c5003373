"""Authorization and tenant isolation apply over HTTP exactly as over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf import empty_pb2

from lro_async import AsyncOperationsClient, PermissionDenied
from lro_async.server.auth import Access, TenantPolicy

from .conftest import FAST, Served, serve_http
from .test_status_table import error_of

ACME = {"x-tenant": "acme"}
OTHER = {"x-tenant": "other"}


@pytest.fixture
async def tenants() -> AsyncIterator[Served]:
    async with serve_http(authorize=TenantPolicy(), headers=ACME) as served:
        yield served


async def test_a_tenant_reaches_its_own_operations_with_the_http_client(tenants: Served) -> None:
    op = await tenants.manager.create(parent="tenants/acme/projects/p")
    client = tenants.client  # sends x-tenant: acme
    assert (await client.get_operation(op.name)).name == op.name
    listed = [o.name async for o in client.list_operations("tenants/acme/projects/p")]
    assert listed == [op.name]
    waiting = client.operation(op.name, result_type=empty_pb2.Empty)
    await tenants.manager.complete(op.name)
    assert await waiting == empty_pb2.Empty()
    await client.cancel_operation(op.name)
    await client.delete_operation(op.name)


async def test_another_tenants_operation_and_a_missing_one_look_the_same(tenants: Served) -> None:
    theirs = await tenants.manager.create(parent="tenants/acme")
    missing = "tenants/acme/operations/doesnotexist"
    bodies = set()
    for name in (theirs.name, missing):
        for method, path in (
            ("GET", name),
            ("POST", f"{name}:wait"),
            ("POST", f"{name}:cancel"),
            ("DELETE", name),
        ):
            response = await tenants.http.request(method, f"/v1/{path}", headers=OTHER)
            error = error_of(response, 403, "PERMISSION_DENIED")
            bodies.add(error["message"].replace(theirs.name, missing))
    assert len(bodies) == 4  # one message per method, the same for both names
    assert (await tenants.manager.get(theirs.name)).name == theirs.name  # untouched


async def test_listing_is_confined_to_the_tenant(tenants: Served) -> None:
    await tenants.manager.create(parent="tenants/acme/projects/p")
    for path in ("-/operations", "operations", "tenants/other/operations", "tenants/operations"):
        response = await tenants.http.get(f"/v1/{path}", headers=ACME)
        error_of(response, 403, "PERMISSION_DENIED")
    assert (await tenants.http.get("/v1/tenants/acme/operations", headers=ACME)).status_code == 200
    error_of(await tenants.http.get("/v1/tenants/acme/operations"), 403, "PERMISSION_DENIED")
    async with AsyncOperationsClient.from_url(tenants.url, headers=OTHER, policy=FAST) as other:
        with pytest.raises(PermissionDenied):
            [op async for op in other.list_operations("tenants/acme")]


async def test_the_caller_is_an_http_caller_with_headers_and_peer() -> None:
    seen: list[Access] = []

    def record(access: Access) -> bool:
        seen.append(access)
        return True

    async with serve_http(authorize=record) as served:
        op = await served.manager.create(parent="projects/p")
        await served.http.get(f"/v1/{op.name}", headers={"X-Tenant": "a", "x-multi": "1"})
        await served.http.post(f"/v1/{op.name}:cancel")
        await served.http.get("/v1/-/operations")
    get, cancel, listing = seen
    assert (get.rpc, get.resource) == ("GetOperation", op.name)
    assert get.caller.transport == "http"
    assert get.caller.metadata["x-tenant"] == "a"
    assert get.caller.peer.startswith("ipv4:127.0.0.1:")
    assert get.caller.auth_context == {}
    assert (cancel.rpc, cancel.resource) == ("CancelOperation", op.name)
    assert (listing.rpc, listing.resource) == ("ListOperations", "")


async def test_repeated_tenant_headers_are_refused(tenants: Served) -> None:
    op = await tenants.manager.create(parent="tenants/acme")
    headers = [("x-tenant", "acme"), ("x-tenant", "other")]
    error_of(await tenants.http.get(f"/v1/{op.name}", headers=headers), 403, "PERMISSION_DENIED")


async def test_a_failing_authorizer_denies() -> None:
    def broken(access: Access) -> bool:
        raise RuntimeError("boom")

    async with serve_http(authorize=broken) as served:
        op = await served.manager.create(parent="projects/p")
        error_of(await served.http.get(f"/v1/{op.name}"), 403, "PERMISSION_DENIED")
