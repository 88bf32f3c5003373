"""ListOperations over the wire: scoping, AIP-158 paging, page tokens, AIP-160 filters."""

from __future__ import annotations

import asyncio
import base64

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import struct_pb2, wrappers_pb2

import lro_async

from .rpc import rpc_fails

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def _list_all(
    stub: operations_pb2_grpc.OperationsStub, parent: str, page_size: int, filter: str = ""
) -> list[str]:
    names: list[str] = []
    token = ""
    while True:
        page = await stub.ListOperations(
            operations_pb2.ListOperationsRequest(
                name=parent, page_size=page_size, page_token=token, filter=filter
            )
        )
        assert len(page.operations) <= page_size
        names += [op.name for op in page.operations]
        token = page.next_page_token
        if not token:
            return names


async def test_listing_is_scoped_to_the_parent(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    a = [(await manager.create(parent="projects/a")).name for _ in range(3)]
    b = [(await manager.create(parent="projects/b")).name for _ in range(2)]
    top = [(await manager.create()).name]
    assert await _list_all(stub, "projects/a", 10) == a
    assert await _list_all(stub, "projects/a/operations", 10) == a
    assert await _list_all(stub, "projects/b", 10) == b
    assert await _list_all(stub, "operations", 10) == top
    assert await _list_all(stub, "", 10) == a + b + top
    assert await _list_all(stub, "projects/c", 10) == []
    for bad in ("a//b", "/operations", "projects/p/"):
        request = operations_pb2.ListOperationsRequest(name=bad)
        await rpc_fails(stub.ListOperations(request), INVALID)


async def test_page_size_zero_means_fifty_and_large_sizes_are_coerced_to_a_thousand(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    for _ in range(1050):
        await manager.create(parent="projects/p")
    default = await stub.ListOperations(operations_pb2.ListOperationsRequest(name="projects/p"))
    assert len(default.operations) == 50 and default.next_page_token
    big = await stub.ListOperations(
        operations_pb2.ListOperationsRequest(name="projects/p", page_size=5000)
    )
    assert len(big.operations) == 1000 and big.next_page_token
    rest = await stub.ListOperations(
        operations_pb2.ListOperationsRequest(
            name="projects/p", page_size=5000, page_token=big.next_page_token
        )
    )
    assert len(rest.operations) == 50 and not rest.next_page_token


async def test_negative_page_size_is_invalid_argument(
    stub: operations_pb2_grpc.OperationsStub,
) -> None:
    request = operations_pb2.ListOperationsRequest(name="projects/p", page_size=-1)
    await rpc_fails(stub.ListOperations(request), INVALID)


async def test_pagination_with_concurrent_inserts_sees_everything_once(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    before = [(await manager.create(parent="projects/p")).name for _ in range(120)]
    inserted: list[str] = []

    async def insert() -> None:
        for _ in range(60):
            inserted.append((await manager.create(parent="projects/p")).name)
            await asyncio.sleep(0)

    listed, _ = await asyncio.gather(_list_all(stub, "projects/p", 7), insert())
    assert len(listed) == len(set(listed)), "no operation twice"
    assert listed[: len(before)] == before, "every operation that existed, in order"
    assert set(listed) <= set(before) | set(inserted)


async def _first_page(stub: operations_pb2_grpc.OperationsStub) -> str:
    page = await stub.ListOperations(
        operations_pb2.ListOperationsRequest(name="projects/p", page_size=2, filter="done=false")
    )
    assert page.next_page_token
    return page.next_page_token


async def test_page_tokens_are_bound_to_parent_and_filter(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    for _ in range(5):
        await manager.create(parent="projects/p")
    token = await _first_page(stub)
    ok = await stub.ListOperations(
        operations_pb2.ListOperationsRequest(
            name="projects/p", page_size=2, filter="done=false", page_token=token
        )
    )
    assert len(ok.operations) == 2
    for name, filter in [("projects/q", "done=false"), ("projects/p", "done=true"), ("", "")]:
        request = operations_pb2.ListOperationsRequest(name=name, filter=filter, page_token=token)
        error = await rpc_fails(stub.ListOperations(request), INVALID)
        assert "page_token" in (error.details() or "")


@pytest.mark.parametrize("mangle", ["flip", "truncate", "garbage", "empty-padding"])
async def test_tampered_page_tokens_are_invalid_argument(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager, mangle: str
) -> None:
    for _ in range(5):
        await manager.create(parent="projects/p")
    token = await _first_page(stub)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    if mangle == "flip":
        raw[len(raw) // 2] ^= 1
        bad = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    elif mangle == "truncate":
        bad = token[:-4]
    elif mangle == "garbage":
        bad = "not a token at all!"
    else:
        bad = token + "===="
    request = operations_pb2.ListOperationsRequest(
        name="projects/p", page_size=2, filter="done=false", page_token=bad
    )
    await rpc_fails(stub.ListOperations(request), INVALID)


async def test_filters_select_over_the_wire(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    running = await manager.create(parent="projects/p", metadata=struct_pb2.Struct())
    ok = await manager.create(parent="projects/p", metadata=wrappers_pb2.StringValue())
    failed = await manager.create(parent="projects/p")
    await manager.complete(ok.name, wrappers_pb2.Int32Value(value=1))
    await manager.fail(failed.name, grpc.StatusCode.NOT_FOUND, "gone")
    cases = {
        "done = false": [running.name],
        "done = true": [ok.name, failed.name],
        "error.code = NOT_FOUND": [failed.name],
        "error.code != 0": [failed.name],
        'response.@type = "google.protobuf.Int32Value"': [ok.name],
        "metadata.@type = google.protobuf.Struct OR error.code = 5": [running.name, failed.name],
        f'name = "{ok.name}"': [ok.name],
        'NOT done = true AND create_time > "2000-01-01T00:00:00Z"': [running.name],
    }
    for filter, expected in cases.items():
        assert await _list_all(stub, "projects/p", 2, filter) == expected, filter


@pytest.mark.parametrize(
    "filter",
    ["done =", "(done = true", "nope = 1", "done = maybe", "done = true AND", ")", "a" * 5000],
)
async def test_invalid_filters_are_invalid_argument_with_a_message(
    stub: operations_pb2_grpc.OperationsStub, filter: str
) -> None:
    request = operations_pb2.ListOperationsRequest(name="projects/p", filter=filter)
    error = await rpc_fails(stub.ListOperations(request), INVALID)
    assert len(error.details() or "") > 10
