"""lro_async's HTTP client against its HTTP server: what only HTTP has.

The server here serves no ``:watch`` routes: these are the per-operation paths (the
``:wait`` long poll, GetOperation polling) and how HTTP statuses, routes, headers and
connections map onto them. What the client does against a real server over any transport
(long polls, latency, progress, errors, list/get/delete, closing) is in
tests/client/test_real_server.py, run over gRPC and HTTP alike; the client over the Watch
stream is in test_watch_client.py and tests/client/test_watch_stream.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import empty_pb2, wrappers_pb2

from lro_async import AsyncOperationsClient, OperationNotFound, PermissionDenied, RpcError, gather

from ..waiting import until
from .conftest import FAST, Served, serve_http


def pct(value: int) -> wrappers_pb2.Int32Value:
    return wrappers_pb2.Int32Value(value=value)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve_http(watch=False) as served:
        yield served


async def test_without_wait_the_client_polls_get() -> None:
    async with serve_http(wait=False, watch=False) as served:
        protos = [await served.manager.create(parent="projects/p") for _ in range(50)]
        ops = [served.client.operation(p, result_type=wrappers_pb2.Int64Value) for p in protos]

        async def finish() -> None:
            # Every waiter polls (its :wait refused) before any operation finishes.
            await until(lambda: served.counted.counts["GET"] >= 50, "the waiters never polled")
            for i, proto in enumerate(protos):
                await served.manager.complete(proto.name, wrappers_pb2.Int64Value(value=i))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(finish())
            results = await gather(*ops, timeout=10)
        assert [r.value for r in results] == list(range(50))
        # One refused :wait for the whole client, then polls.
        assert served.counted.counts["POST:wait"] == 1
        assert served.counted.counts["GET"] >= 50
        assert served.client._waiters.long_poll is False


@pytest.mark.parametrize("status", [404, 405, 501])
async def test_a_server_without_the_wait_route_is_polled(served: Served, status: int) -> None:
    served.counted.fail("POST:wait", status, body=b"<html>Not here</html>")
    proto = await served.manager.create(parent="projects/p")
    task = asyncio.create_task(served.client.operation(proto, result_type=empty_pb2.Empty).result())
    await until(lambda: served.counted.counts["GET"] >= 1, "the refused waiter never polled")
    await served.manager.complete(proto.name)
    assert await asyncio.wait_for(task, 5) == empty_pb2.Empty()
    assert served.counted.counts["POST:wait"] == 1
    assert served.counted.counts["GET"] >= 1


async def test_a_missing_operation_on_wait_is_not_found_not_unimplemented(served: Served) -> None:
    with pytest.raises(OperationNotFound):
        await served.client.operation("projects/p/operations/nope").result(timeout=5)
    assert served.client._waiters.long_poll is not False


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_overload_and_gateway_errors_are_retried(served: Served, status: int) -> None:
    proto = await served.manager.create(parent="projects/p")
    await served.manager.complete(proto.name, pct(7))
    served.counted.fail("POST:wait", status, times=3, body=b"<html>busy</html>")
    assert await served.client.operation(proto, result_type=wrappers_pb2.Int32Value) == pct(7)
    assert served.counted.counts["POST:wait"] == 4


async def test_headers_reach_the_authorizer() -> None:
    async with serve_http(
        authorize=lambda access: access.caller.metadata.get("authorization") == "Bearer t",
        headers={"Authorization": "Bearer t"},
    ) as served:
        proto = await served.manager.create(parent="projects/p")
        assert (await served.client.get_operation(proto.name)).name == proto.name
        async with AsyncOperationsClient.from_url(served.url, headers={"authorization": "x"}) as c:
            with pytest.raises(PermissionDenied):
                await c.get_operation(proto.name)


async def test_an_unreachable_server_is_unavailable_and_retried() -> None:
    async with serve_http(watch=False) as served:
        url = served.url
    async with AsyncOperationsClient.from_url(url, policy=FAST) as client:
        with pytest.raises(RpcError) as caught:
            await client.get_operation("operations/x")
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        op = client.operation("operations/x")
        with pytest.raises(TimeoutError):
            await op.result(timeout=0.1)  # retried until the timeout, not raised


def test_from_url_needs_an_http_url() -> None:
    with pytest.raises(ValueError, match="http"):
        AsyncOperationsClient.from_url("grpc://127.0.0.1:5")
