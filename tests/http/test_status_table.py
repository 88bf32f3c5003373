"""DESIGN.md section 3's status table, row by row, over HTTP/JSON (Google's JSON errors)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import empty_pb2, wrappers_pb2

from lro_async import AsyncOperationsClient, OperationContext, OperationManager, RpcError
from lro_async.wire import HTTP_STATUS, error_body, error_from_body

from ..waiting import until
from .conftest import FAST, Served, serve_http

MISSING = "projects/p/operations/AAAAAAAAAAAAAAAAAAAAAA"


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check *response* is Google's JSON error with *status* and *code*; return its error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == status
    assert error["status"] == code
    assert isinstance(error["message"], str) and error["message"]
    info = error["details"][0]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["domain"] == "lro-async"
    return error


async def requests(http: httpx.AsyncClient, name: str) -> dict[str, httpx.Response]:
    """Get, Wait, Cancel and Delete of *name*."""
    return {
        "get": await http.get(f"/v1/{name}"),
        "wait": await http.post(f"/v1/{name}:wait", json={"timeout": "0s"}),
        "cancel": await http.post(f"/v1/{name}:cancel"),
        "delete": await http.delete(f"/v1/{name}"),
    }


@pytest.mark.parametrize("name", ["", "nope", "operations/", "projects/p/operations/a b", "a//b"])
async def test_an_empty_or_malformed_name_is_invalid_argument(served: Served, name: str) -> None:
    for rpc, response in (await requests(served.http, name)).items():
        assert error_of(response, 400, "INVALID_ARGUMENT"), rpc


async def test_a_malformed_parent_is_invalid_argument(served: Served) -> None:
    error_of(await served.http.get("/v1/projects/a%20b/operations"), 400, "INVALID_ARGUMENT")


async def test_unknown_deleted_and_expired_operations_are_not_found() -> None:
    async with serve_http(OperationManager(retention=0.05)) as served:
        deleted = await served.manager.create(parent="projects/p")
        await served.manager.delete(deleted.name)
        expired = await served.manager.create(parent="projects/p")
        await served.manager.complete(expired.name)

        async def expired_is_gone() -> bool:
            return (await served.http.get(f"/v1/{expired.name}")).status_code == 404

        await until(expired_is_gone, "the completed operation never expired (retention 50 ms)")
        for name in (MISSING, deleted.name, expired.name):
            for rpc, response in (await requests(served.http, name)).items():
                if rpc == "cancel" and name == expired.name:
                    continue  # an expired record still exists until swept: cancel is a no-op
                error = error_of(response, 404, "NOT_FOUND")
                assert error["details"][0]["reason"] == "OPERATION_NOT_FOUND", rpc
                assert error["details"][0]["metadata"] == {"name": name}


async def test_permission_is_checked_before_existence() -> None:
    async with serve_http(authorize=lambda access: False) as served:
        real = await served.manager.create(parent="projects/p")
        for name in (real.name, MISSING):
            for rpc, response in (await requests(served.http, name)).items():
                assert error_of(response, 403, "PERMISSION_DENIED"), rpc
        error_of(await served.http.get("/v1/projects/p/operations"), 403, "PERMISSION_DENIED")


async def test_wait_on_a_done_operation_answers_at_once(served: Served) -> None:
    proto = await served.manager.create(parent="projects/p")
    await served.manager.complete(proto.name, wrappers_pb2.Int32Value(value=5))
    started = time.perf_counter()
    response = await served.http.post(f"/v1/{proto.name}:wait", json={"timeout": "30s"})
    assert time.perf_counter() - started < 1
    assert response.status_code == 200
    body = response.json()
    assert body["done"] is True
    assert body["response"] == {
        "@type": "type.googleapis.com/google.protobuf.Int32Value",
        "value": 5,
    }


async def test_wait_with_timeout_zero_answers_the_current_state(served: Served) -> None:
    proto = await served.manager.create(parent="projects/p")
    response = await served.http.post(f"/v1/{proto.name}:wait", json={"timeout": "0s"})
    assert response.status_code == 200
    assert response.json() == {"name": proto.name}  # done=false is the default, left out


@pytest.mark.parametrize(
    ("options", "body", "headers"),
    [
        ({}, {"timeout": "0.2s"}, {}),  # the request's timeout
        ({"max_wait": 0.2}, {"timeout": "30s"}, {}),  # the server's cap
        ({"max_wait": 0.2}, {}, {}),  # no timeout: the server's cap
        ({}, {"timeout": "30s"}, {"x-server-timeout": "0.4"}),  # the deadline less the margin
    ],
)
async def test_wait_expires_with_ok_and_done_false(
    options: dict[str, Any], body: dict[str, str], headers: dict[str, str]
) -> None:
    async with serve_http(**options) as served:
        proto = await served.manager.create(parent="projects/p")
        started = time.perf_counter()
        response = await served.http.post(f"/v1/{proto.name}:wait", json=body, headers=headers)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200
        assert response.json().get("done", False) is False
        assert 0.15 < elapsed < 2


@pytest.mark.parametrize("timeout", ["-1s", "-0.5s"])
async def test_a_negative_wait_timeout_is_invalid_argument(served: Served, timeout: str) -> None:
    proto = await served.manager.create(parent="projects/p")
    response = await served.http.post(f"/v1/{proto.name}:wait", json={"timeout": timeout})
    error_of(response, 400, "INVALID_ARGUMENT")


async def test_deleting_a_waited_operation_answers_not_found_at_once(served: Served) -> None:
    proto = await served.manager.create(parent="projects/p")
    waiting = asyncio.create_task(
        served.http.post(f"/v1/{proto.name}:wait", json={"timeout": "30s"})
    )
    await until(lambda: served.app.waiting == 1, "the :wait request never arrived")
    await served.manager.delete(proto.name)
    error_of(await asyncio.wait_for(waiting, 2), 404, "NOT_FOUND")


async def test_shutting_down_answers_waiters_at_once_then_unavailable(served: Served) -> None:
    proto = await served.manager.create(parent="projects/p")
    waiting = asyncio.create_task(
        served.http.post(f"/v1/{proto.name}:wait", json={"timeout": "30s"})
    )
    await until(lambda: served.app.waiting == 1, "the :wait request never arrived")
    await served.manager.drain(0)
    response = await asyncio.wait_for(waiting, 2)
    assert response.status_code in (200, 503)
    if response.status_code == 200:
        assert response.json()["name"] == proto.name
    error_of(await served.http.get(f"/v1/{proto.name}"), 503, "UNAVAILABLE")


async def test_cancel_a_running_operation(served: Served) -> None:
    started = asyncio.Event()

    async def forever(ctx: OperationContext) -> empty_pb2.Empty:
        started.set()
        await asyncio.sleep(60)
        return empty_pb2.Empty()

    proto = await served.manager.start(forever, parent="projects/p")
    await started.wait()
    response = await served.http.post(f"/v1/{proto.name}:cancel")
    assert (response.status_code, response.json()) == (200, {})
    body = (await served.http.get(f"/v1/{proto.name}")).json()
    assert body["done"] is True
    assert body["error"]["code"] == 1
    assert "response" not in body
    assert served.manager.running == 0


async def test_cancel_a_done_operation_changes_nothing(served: Served) -> None:
    proto = await served.manager.create(parent="projects/p")
    await served.manager.complete(proto.name, wrappers_pb2.Int32Value(value=1))
    before = (await served.http.get(f"/v1/{proto.name}")).json()
    response = await served.http.post(f"/v1/{proto.name}:cancel", json={})
    assert (response.status_code, response.json()) == (200, {})
    assert (await served.http.get(f"/v1/{proto.name}")).json() == before


async def test_cancel_racing_completion_records_one_end(served: Served) -> None:
    protos = [await served.manager.create(parent="projects/p") for _ in range(20)]
    await asyncio.gather(
        *(served.http.post(f"/v1/{p.name}:cancel") for p in protos),
        *(served.manager.complete(p.name, wrappers_pb2.Int32Value(value=1)) for p in protos),
    )
    for proto in protos:
        first = (await served.http.get(f"/v1/{proto.name}")).json()
        assert first["done"] is True
        assert ("error" in first) != ("response" in first)
        await served.http.post(f"/v1/{proto.name}:cancel")
        assert (await served.http.get(f"/v1/{proto.name}")).json() == first


async def test_delete_removes_the_record_and_leaves_the_work(served: Served) -> None:
    release, finished = asyncio.Event(), asyncio.Event()

    async def work(ctx: OperationContext) -> empty_pb2.Empty:
        await release.wait()
        finished.set()
        return empty_pb2.Empty()

    proto = await served.manager.start(work, parent="projects/p")
    response = await served.http.delete(f"/v1/{proto.name}")
    assert (response.status_code, response.json()) == (200, {})
    error_of(await served.http.get(f"/v1/{proto.name}"), 404, "NOT_FOUND")
    assert served.manager.running == 1
    release.set()
    await asyncio.wait_for(finished.wait(), 2)


async def test_list_page_sizes(served: Served) -> None:
    for _ in range(1001):
        await served.manager.create(parent="projects/p")
    url = "/v1/projects/p/operations"
    assert len((await served.http.get(url)).json()["operations"]) == 50
    assert len((await served.http.get(url, params={"pageSize": 0})).json()["operations"]) == 50
    big = (await served.http.get(url, params={"page_size": 5000})).json()
    assert len(big["operations"]) == 1000
    assert big["nextPageToken"]
    error_of(await served.http.get(url, params={"pageSize": -1}), 400, "INVALID_ARGUMENT")


async def test_list_page_tokens_are_bound_and_tamper_evident(served: Served) -> None:
    for _ in range(3):
        await served.manager.create(parent="projects/p")
    url = "/v1/projects/p/operations"
    first = (await served.http.get(url, params={"pageSize": 1})).json()
    token = first["nextPageToken"]
    second = await served.http.get(url, params={"pageSize": 1, "pageToken": token})
    assert second.json()["operations"][0]["name"] != first["operations"][0]["name"]
    for params in (
        {"pageToken": token[:-2] + "xx"},
        {"pageToken": "garbage"},
        {"pageToken": token, "filter": "done = true"},
    ):
        error_of(await served.http.get(url, params=params), 400, "INVALID_ARGUMENT")
    error_of(
        await served.http.get("/v1/projects/q/operations", params={"pageToken": token}),
        400,
        "INVALID_ARGUMENT",
    )


async def test_list_filters(served: Served) -> None:
    done = await served.manager.create(parent="projects/p")
    await served.manager.complete(done.name)
    await served.manager.create(parent="projects/p")
    url = "/v1/projects/p/operations"
    listed = (await served.http.get(url, params={"filter": "done = true"})).json()
    assert [op["name"] for op in listed["operations"]] == [done.name]
    for bad in ("done ==", "nope = 1", "(" * 50):
        error_of(await served.http.get(url, params={"filter": bad}), 400, "INVALID_ARGUMENT")


async def test_return_partial_success_is_unimplemented(served: Served) -> None:
    response = await served.http.get(
        "/v1/projects/p/operations", params={"returnPartialSuccess": "true"}
    )
    error_of(response, 501, "UNIMPLEMENTED")
    ok = await served.http.get(
        "/v1/projects/p/operations", params={"returnPartialSuccess": "false"}
    )
    assert ok.status_code == 200


async def test_a_done_operation_has_exactly_one_of_error_and_response(served: Served) -> None:
    failed = await served.manager.create(parent="projects/p")
    await served.manager.fail(failed.name, grpc.StatusCode.ABORTED, "lost")
    body = (await served.http.get(f"/v1/{failed.name}")).json()
    assert body["error"] == {"code": 10, "message": "lost"}
    assert "response" not in body
    succeeded = await served.manager.create(parent="projects/p")
    await served.manager.complete(succeeded.name)
    body = (await served.http.get(f"/v1/{succeeded.name}")).json()
    assert body["response"] == {"@type": "type.googleapis.com/google.protobuf.Empty"}
    assert "error" not in body


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_every_code_has_its_aip_193_status_and_comes_back(code: grpc.StatusCode) -> None:
    status, body = error_body(code, "m")
    assert status == HTTP_STATUS[code]
    content = httpx.Response(status, json=body).content
    error = error_from_body(status, content)
    assert (error.code, error.message) == (code, "m")


async def test_every_code_reaches_the_http_client(served: Served) -> None:
    async with AsyncOperationsClient.from_url(served.url, policy=FAST) as client:
        for code in grpc.StatusCode:
            if code is grpc.StatusCode.OK:
                continue
            status, body = error_body(code, f"injected {code.name}")
            served.counted.fail("GET", status, body=httpx.Response(status, json=body).content)
            with pytest.raises(RpcError) as caught:
                await client.get_operation(MISSING)
            assert caught.value.code is code
            assert caught.value.message == f"injected {code.name}"
