"""AsyncOperation: typed results, errors, done callbacks, repr, local state.

Against lro_async's server over gRPC and over HTTP/JSON (the ``served`` fixture), but for
a state only a fake server can put an operation in (done with neither result nor error).
"""

from __future__ import annotations

import asyncio
import threading
import weakref

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2, struct_pb2, wrappers_pb2

from lro_async import (
    AsyncOperationsClient,
    OperationCancelled,
    OperationFailed,
    OperationNotFound,
    OperationTimeout,
    UnexpectedOperationState,
)
from lro_async.client.operation import AsyncOperation

from .conftest import FAST
from .polling_server import OperationsTestServer
from .remote import Remote


def progress(percent: int) -> wrappers_pb2.Int32Value:
    return wrappers_pb2.Int32Value(value=percent)


async def test_result_and_metadata_are_typed(served: Remote) -> None:
    manager, client = served.manager, served.client
    name = (await manager.create(metadata=progress(10))).name
    op = client.operation(
        name, result_type=struct_pb2.Struct, metadata_type=wrappers_pb2.Int32Value
    )
    assert op.metadata is None, "no RPC yet: nothing known"
    await manager.set_metadata(name, progress(100))
    await manager.complete(name, struct_pb2.Struct(fields={"n": struct_pb2.Value(number_value=7)}))
    result: struct_pb2.Struct = await op
    assert result["n"] == 7
    md: wrappers_pb2.Int32Value | None = op.metadata
    assert md == progress(100)
    assert op.done
    assert op.operation.name == name


async def test_without_types_the_packed_anys_are_returned(served: Remote) -> None:
    name = (await served.manager.create(metadata=progress(1))).name
    await served.manager.complete(name, wrappers_pb2.StringValue(value="x"))
    op = served.client.operation(name)
    result: any_pb2.Any = await op
    assert result.Is(wrappers_pb2.StringValue.DESCRIPTOR)
    assert isinstance(op.metadata, any_pb2.Any)


async def test_a_response_of_another_type_names_the_operation_and_types(served: Remote) -> None:
    name = (await served.manager.create()).name
    await served.manager.complete(name, wrappers_pb2.StringValue(value="x"))
    op = served.client.operation(name, result_type=struct_pb2.Struct)
    with pytest.raises(UnexpectedOperationState) as caught:
        await op
    message = str(caught.value)
    assert name in message
    assert "type.googleapis.com/google.protobuf.StringValue" in message
    assert "type.googleapis.com/google.protobuf.Struct" in message
    assert isinstance(await op.exception(), UnexpectedOperationState)


async def test_metadata_of_another_type_is_an_unexpected_state(served: Remote) -> None:
    manager, client = served.manager, served.client
    name = (await manager.create(metadata=wrappers_pb2.StringValue(value="not a percentage"))).name
    await manager.complete(name, empty_pb2.Empty())
    op = client.operation(name, result_type=empty_pb2.Empty, metadata_type=wrappers_pb2.Int32Value)
    assert await op == empty_pb2.Empty()
    with pytest.raises(UnexpectedOperationState, match="metadata of operation"):
        _ = op.metadata


async def test_done_with_neither_response_nor_error_is_an_unexpected_state(
    server: OperationsTestServer, client: AsyncOperationsClient
) -> None:
    name = server.create()
    server.finish_raw(name)
    with pytest.raises(UnexpectedOperationState, match=f"{name!r} is done but has neither"):
        await client.operation(name, result_type=empty_pb2.Empty)


async def test_a_failed_operation_raises_operation_failed(served: Remote) -> None:
    name = (await served.manager.create()).name
    await served.manager.fail(name, grpc.StatusCode.FAILED_PRECONDITION, "disk full")
    op = served.client.operation(name, result_type=empty_pb2.Empty)
    with pytest.raises(OperationFailed) as caught:
        await op.result()
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.message == "disk full"
    assert caught.value.operation is not None
    assert caught.value.operation.name == name
    error = await op.exception()
    assert isinstance(error, OperationFailed)
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert not op.cancelled()


async def test_exception_is_none_on_success(served: Remote) -> None:
    name = (await served.manager.create()).name
    await served.manager.complete(name, empty_pb2.Empty())
    assert await served.client.operation(name).exception(timeout=5) is None


async def test_cancel_sends_cancel_operation_and_the_operation_ends_cancelled(
    served: Remote,
) -> None:
    name = (await served.manager.create()).name
    op = served.client.operation(name, result_type=empty_pb2.Empty)
    assert await op.cancel() is True
    assert served.calls["CancelOperation"] == 1
    with pytest.raises(OperationCancelled):
        await op
    assert op.cancelled()
    assert await op.cancel() is False, "already done: no RPC"
    assert served.calls["CancelOperation"] == 1


async def test_cancel_of_an_unknown_operation_raises_not_found(served: Remote) -> None:
    with pytest.raises(OperationNotFound):
        await served.client.operation("operations/unknown").cancel()


async def test_a_done_proto_answers_without_any_rpc(served: Remote) -> None:
    proto = operations_pb2.Operation(name="operations/elsewhere", done=True)
    proto.response.Pack(wrappers_pb2.Int64Value(value=5))
    op = AsyncOperation.from_operation(proto, served.client, result_type=wrappers_pb2.Int64Value)
    proto.done = False  # from_operation copied it
    assert (await op).value == 5
    assert op.done
    assert sum(served.calls.values()) == 0


async def test_done_callbacks_run_once_with_the_operation(served: Remote) -> None:
    name = (await served.manager.create()).name
    op = served.client.operation(name, result_type=empty_pb2.Empty)
    seen: list[AsyncOperation[empty_pb2.Empty, any_pb2.Any]] = []
    op.add_done_callback(seen.append)
    op.add_done_callback(seen.append)
    op.add_done_callback(print)
    assert op.remove_done_callback(print) == 1
    with pytest.raises(OperationTimeout):
        await op.result(timeout=0.05)
    await asyncio.sleep(0)
    assert seen == [], "a timeout is not the end"
    await served.manager.complete(name, empty_pb2.Empty())
    await op
    await asyncio.sleep(0)
    assert seen == [op, op]
    await op
    await asyncio.sleep(0)
    assert seen == [op, op], "called once"
    op.add_done_callback(seen.append)  # already done: scheduled at once
    await asyncio.sleep(0)
    assert seen == [op, op, op]


async def test_done_callbacks_run_when_the_operation_fails(served: Remote) -> None:
    name = (await served.manager.create()).name
    await served.manager.fail(name, grpc.StatusCode.ABORTED)
    op = served.client.operation(name)
    seen: list[bool] = []
    op.add_done_callback(lambda o: seen.append(o.done))
    assert isinstance(await op.exception(), OperationFailed)
    await asyncio.sleep(0)
    assert seen == [True]


async def test_done_callbacks_run_when_the_wait_ends_in_error(served: Remote) -> None:
    op = served.client.operation("operations/missing")
    seen: list[bool] = []
    op.add_done_callback(lambda o: seen.append(o.done))
    with pytest.raises(OperationNotFound):
        await op
    await asyncio.sleep(0)
    assert seen == [False]


async def test_repr_shows_name_and_state(served: Remote) -> None:
    manager, client = served.manager, served.client
    ok, failed = (await manager.create()).name, (await manager.create()).name
    await manager.complete(ok, empty_pb2.Empty())
    await manager.fail(failed, grpc.StatusCode.NOT_FOUND)
    op = client.operation(ok)
    assert repr(op) == f"<AsyncOperation {ok!r} running>"
    await op
    assert repr(op) == f"<AsyncOperation {ok!r} done>"
    bad = client.operation(failed)
    await bad.exception()
    assert repr(bad) == f"<AsyncOperation {failed!r} failed (NOT_FOUND)>"


async def test_client_and_operations_are_built_outside_any_event_loop(served: Remote) -> None:
    def build() -> tuple[AsyncOperationsClient, AsyncOperation[empty_pb2.Empty, any_pb2.Any]]:
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()
        assert threading.current_thread() is not threading.main_thread()
        client = served.connect(FAST)
        proto = operations_pb2.Operation(name=name)
        return client, client.operation(proto, result_type=empty_pb2.Empty)

    name = (await served.manager.create()).name
    client, op = await asyncio.to_thread(build)
    await served.manager.complete(name, empty_pb2.Empty())
    assert await op == empty_pb2.Empty()
    await client.aclose()


async def test_an_operation_needs_a_name(served: Remote) -> None:
    with pytest.raises(ValueError, match="name"):
        served.client.operation("")


async def test_an_operation_has_no_dict_but_takes_weak_references(served: Remote) -> None:
    op = served.client.operation("operations/x")  # thousands are held at once: slots
    assert weakref.ref(op)() is op
    with pytest.raises(AttributeError):
        op.note = "mine"  # type: ignore[attr-defined]
