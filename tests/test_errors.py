"""errors.py: the exception tree, status-code conversion, and the one gRPC boundary."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

import lro_async
from lro_async.errors import code_number, rpc_call, rpc_error, status_code


def test_status_code_takes_a_grpc_code_or_a_google_rpc_int() -> None:
    assert status_code(grpc.StatusCode.NOT_FOUND) is grpc.StatusCode.NOT_FOUND
    assert status_code(5) is grpc.StatusCode.NOT_FOUND
    assert code_number(grpc.StatusCode.UNAVAILABLE) == 14
    with pytest.raises(ValueError, match=r"99 is not a google\.rpc\.Code"):
        status_code(99)
    with pytest.raises(TypeError, match=r"must be a grpc\.StatusCode or an int"):
        status_code(True)
    with pytest.raises(TypeError):
        status_code("NOT_FOUND")  # type: ignore[arg-type]


def test_every_status_code_round_trips_through_its_number() -> None:
    for code in grpc.StatusCode:
        assert status_code(code_number(code)) is code


def test_the_tree_is_what_the_module_docstring_draws() -> None:
    assert issubclass(lro_async.OperationCancelled, lro_async.OperationFailed)
    assert issubclass(lro_async.OperationTimeout, TimeoutError)
    assert issubclass(lro_async.InvalidArgument, ValueError)
    for kind in (
        lro_async.OperationNotFound,
        lro_async.InvalidArgument,
        lro_async.PermissionDenied,
        lro_async.ResourceExhausted,
    ):
        assert issubclass(kind, lro_async.RpcError)
    kinds: tuple[type[Exception], ...] = (
        lro_async.OperationFailed,
        lro_async.OperationTimeout,
        lro_async.UnexpectedOperationState,
        lro_async.RpcError,
        lro_async.StoreError,
    )
    for other in kinds:
        assert issubclass(other, lro_async.LroError)


def test_operation_failed_refuses_ok_and_prints_its_code() -> None:
    with pytest.raises(ValueError, match="cannot fail with status OK"):
        lro_async.OperationFailed(grpc.StatusCode.OK)
    error = lro_async.OperationFailed(9, "not yet")
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert str(error) == "FAILED_PRECONDITION: not yet"
    assert str(lro_async.OperationFailed(grpc.StatusCode.ABORTED)) == "ABORTED"


def test_from_status_picks_the_class_and_never_returns_a_success() -> None:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason="X"))
    cancelled = lro_async.OperationFailed.from_status(status_pb2.Status(code=1, message="m"))
    assert type(cancelled) is lro_async.OperationCancelled
    failed = lro_async.OperationFailed.from_status(
        status_pb2.Status(code=13, message="boom", details=[detail])
    )
    assert type(failed) is lro_async.OperationFailed
    assert (failed.code, failed.message, failed.details) == (
        grpc.StatusCode.INTERNAL,
        "boom",
        (detail,),
    )
    for code in (0, 1234):  # OK and unknown codes are still failures
        assert lro_async.OperationFailed.from_status(status_pb2.Status(code=code)).code is (
            grpc.StatusCode.UNKNOWN
        )


def test_to_status_keeps_code_message_and_details() -> None:
    detail = any_pb2.Any(type_url="type.googleapis.com/x.Y", value=b"\x01")
    status = lro_async.RpcError("gone", code=5, details=[detail]).to_status()
    assert status == status_pb2.Status(code=5, message="gone", details=[detail])


def test_rpc_error_returns_the_most_specific_class() -> None:
    assert type(rpc_error(grpc.StatusCode.NOT_FOUND, "")) is lro_async.OperationNotFound
    assert type(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "")) is lro_async.InvalidArgument
    assert type(rpc_error(grpc.StatusCode.PERMISSION_DENIED, "")) is lro_async.PermissionDenied
    assert type(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "")) is lro_async.ResourceExhausted
    other = rpc_error(grpc.StatusCode.UNAVAILABLE, "down")
    assert type(other) is lro_async.RpcError and other.code is grpc.StatusCode.UNAVAILABLE


class _Refusing(operations_pb2_grpc.OperationsServicer):
    """Answers GetOperation with NOT_FOUND and details, or with garbage details."""

    async def GetOperation(
        self,
        request: operations_pb2.GetOperationRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> operations_pb2.Operation:
        if request.name == "garbage":
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                "no such",
                trailing_metadata=(("grpc-status-details-bin", b"\xff\xfe not a status"),),
            )
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason="OPERATION_NOT_FOUND"))
        status = status_pb2.Status(code=5, message="no such", details=[detail])
        await context.abort(
            grpc.StatusCode.NOT_FOUND,
            "no such",
            trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
        )
        raise AssertionError("abort returns only by raising")


@pytest.fixture
async def stub() -> AsyncIterator[operations_pb2_grpc.OperationsStub]:
    server = grpc.aio.server()
    operations_pb2_grpc.add_OperationsServicer_to_server(_Refusing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield operations_pb2_grpc.OperationsStub(channel)
    finally:
        await server.stop(None)


async def test_rpc_call_converts_a_failed_call_and_keeps_its_details(
    stub: operations_pb2_grpc.OperationsStub,
) -> None:
    with pytest.raises(lro_async.OperationNotFound) as caught:
        await rpc_call(stub.GetOperation(operations_pb2.GetOperationRequest(name="x")))
    assert caught.value.message == "no such"
    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)
    info = error_details_pb2.ErrorInfo()
    assert len(caught.value.details) == 1 and caught.value.details[0].Unpack(info)
    assert info.reason == "OPERATION_NOT_FOUND"


async def test_rpc_call_ignores_details_that_do_not_parse(
    stub: operations_pb2_grpc.OperationsStub,
) -> None:
    with pytest.raises(lro_async.OperationNotFound) as caught:
        await rpc_call(stub.GetOperation(operations_pb2.GetOperationRequest(name="garbage")))
    assert caught.value.details == ()


async def test_rpc_call_turns_a_local_cancellation_of_the_call_into_cancelled() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()

    async def cancelled_call() -> None:
        never.cancel()  # what grpc.aio does when the channel closes under a call
        await never

    with pytest.raises(lro_async.RpcError) as caught:
        await rpc_call(cancelled_call())
    assert caught.value.code is grpc.StatusCode.CANCELLED
    assert "cancelled locally" in caught.value.message


async def test_rpc_call_lets_a_cancellation_of_the_caller_through() -> None:
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(rpc_call(slow()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
