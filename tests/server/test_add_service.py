"""add_service: any unary service on grpc.aio, answering malformed bodies with INVALID_ARGUMENT."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2

import lro_async
from lro_async.demo import demo_pb2

DEMO = demo_pb2.DESCRIPTOR.services_by_name["Demo"]
Context = grpc.aio.ServicerContext[Any, Any]


class Plain:
    """A Demo service whose handlers are not rpc_method-decorated."""

    async def Sleep(self, request: demo_pb2.SleepRequest, context: Context) -> Any:
        return operations_pb2.Operation(name=f"{request.parent}/operations/plain")

    async def Export(self, request: demo_pb2.ExportRequest, context: Context) -> Any:
        raise lro_async.InvalidArgument("never called here")


class Decorated:
    """The same with rpc_method: lro_async errors become statuses with ErrorInfo."""

    @lro_async.rpc_method
    async def Sleep(self, request: demo_pb2.SleepRequest, context: Context) -> Any:
        raise lro_async.InvalidArgument(f"no sleeping under {request.parent!r}")

    @lro_async.rpc_method
    async def Export(self, request: demo_pb2.ExportRequest, context: Context) -> Any:
        return operations_pb2.Operation(name="operations/export")


@contextlib.asynccontextmanager
async def serving(servicer: object) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    lro_async.add_service(server, servicer, DEMO)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


async def call(channel: grpc.aio.Channel, method: str, body: bytes) -> bytes:
    raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        f"/lro_async.demo.v1.Demo/{method}"
    )
    return await raw(body, timeout=5)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    trailers = dict(error.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    return info


MALFORMED = b"\x0a\xff"  # field 1 (parent) announcing 255 bytes that never come


@pytest.mark.parametrize("servicer", [Plain(), Decorated()], ids=["plain", "rpc_method"])
async def test_a_malformed_body_is_invalid_argument_with_error_info(servicer: object) -> None:
    async with serving(servicer) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(channel, "Sleep", MALFORMED)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid lro_async.demo.v1.SleepRequest" in (caught.value.details() or "")
    assert error_info(caught.value).domain == "lro-async"


async def test_valid_bodies_reach_the_handlers() -> None:
    request = demo_pb2.SleepRequest(parent="projects/p").SerializeToString()
    async with serving(Plain()) as channel:
        reply = operations_pb2.Operation.FromString(await call(channel, "Sleep", request))
    assert reply.name == "projects/p/operations/plain"
    async with serving(Decorated()) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(channel, "Sleep", request)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == "no sleeping under 'projects/p'"
        export = demo_pb2.ExportRequest(rows=1).SerializeToString()
        reply = operations_pb2.Operation.FromString(await call(channel, "Export", export))
    assert reply.name == "operations/export"


def test_streaming_services_and_missing_methods_are_refused_before_serving() -> None:
    server = grpc.aio.server()
    health: Any = health_pb2.DESCRIPTOR.services_by_name["Health"]  # typeshed: a upb type
    with pytest.raises(ValueError, match="streams"):
        lro_async.add_service(server, object(), health)
    with pytest.raises(AttributeError):
        lro_async.add_service(server, object(), DEMO)
