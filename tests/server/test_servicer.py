"""Every row of DESIGN.md section 3, over a real grpc.aio server and the generated stub."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2, struct_pb2, wrappers_pb2

import lro_async
from lro_async.protobuf import pack, progress_header
from lro_async.testing import Served, serve

from ..waiting import until
from .rpc import rpc_fails, wait_request

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def _calls(stub: operations_pb2_grpc.OperationsStub, name: str) -> list[Awaitable[object]]:
    return [
        stub.GetOperation(operations_pb2.GetOperationRequest(name=name)),
        stub.WaitOperation(wait_request(name, 0)),
        stub.CancelOperation(operations_pb2.CancelOperationRequest(name=name)),
        stub.DeleteOperation(operations_pb2.DeleteOperationRequest(name=name)),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "",
        "foo",
        "operations/",
        "operations",
        "/operations/x",
        "projects//operations/x",
        "projects/p/operations/x/y",
        "operations/a b",
        "operations/\u00e9",
        "operations/" + "x" * 2000,
    ],
)
async def test_empty_or_malformed_names_are_invalid_argument(
    stub: operations_pb2_grpc.OperationsStub, name: str
) -> None:
    for call in _calls(stub, name):
        await rpc_fails(call, INVALID)


async def test_unknown_operations_are_not_found(stub: operations_pb2_grpc.OperationsStub) -> None:
    for call in _calls(stub, "projects/p/operations/nope"):
        error = await rpc_fails(call, NOT_FOUND)
        assert "projects/p/operations/nope" in (error.details() or "")


async def test_get_returns_the_operation_with_its_metadata(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    created = await manager.create(
        parent="projects/p", metadata=wrappers_pb2.StringValue(value="m")
    )
    got = await stub.GetOperation(operations_pb2.GetOperationRequest(name=created.name))
    assert got == created
    assert not got.done
    assert got.metadata.type_url == "type.googleapis.com/google.protobuf.StringValue"


async def test_names_have_their_parent_and_at_least_122_random_bits(
    manager: lro_async.OperationManager,
) -> None:
    ops = [await manager.create(parent="projects/p") for _ in range(200)]
    top = await manager.create()
    assert top.name.startswith("operations/")
    ids = {op.name.removeprefix("projects/p/operations/") for op in ops}
    assert len(ids) == 200
    for operation_id in ids:
        raw = base64.urlsafe_b64decode(operation_id + "==")
        assert len(raw) * 8 >= 122


async def test_wait_on_a_done_operation_answers_at_once(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    op = await manager.create()
    await manager.complete(op.name, wrappers_pb2.Int32Value(value=7))
    started = time.monotonic()
    got = await stub.WaitOperation(wait_request(op.name, 30))
    assert time.monotonic() - started < 1
    assert got.done and got.response.type_url.endswith("Int32Value")


async def test_wait_with_zero_timeout_answers_the_current_state_at_once(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    op = await manager.create()
    started = time.monotonic()
    got = await stub.WaitOperation(wait_request(op.name, 0))
    assert time.monotonic() - started < 0.5
    assert got.name == op.name and not got.done


async def test_wait_expiry_is_ok_with_done_false_after_the_request_timeout(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    op = await manager.create()
    started = time.monotonic()
    got = await stub.WaitOperation(wait_request(op.name, 0.3))
    elapsed = time.monotonic() - started
    assert not got.done
    assert 0.3 <= elapsed < 1.5


async def test_wait_answers_ok_before_the_rpc_deadline(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    op = await manager.create()
    started = time.monotonic()
    got = await stub.WaitOperation(wait_request(op.name), timeout=0.8)  # no request timeout
    elapsed = time.monotonic() - started
    assert not got.done
    assert 0.5 <= elapsed < 0.8


async def test_wait_is_bounded_by_the_server_cap() -> None:
    async with serve(max_wait=0.3) as served:
        stub = operations_pb2_grpc.OperationsStub(served.channel)
        op = await served.manager.create()
        started = time.monotonic()
        got = await stub.WaitOperation(wait_request(op.name, 60))
        assert not got.done
        assert 0.3 <= time.monotonic() - started < 1.5


@pytest.mark.parametrize(("seconds", "nanos"), [(-1, 0), (0, -5), (1, -5), (-1, 5), (0, 10**9)])
async def test_wait_with_a_negative_or_invalid_timeout_is_invalid_argument(
    stub: operations_pb2_grpc.OperationsStub,
    manager: lro_async.OperationManager,
    seconds: int,
    nanos: int,
) -> None:
    op = await manager.create()
    request = operations_pb2.WaitOperationRequest(name=op.name)
    request.timeout.seconds, request.timeout.nanos = seconds, nanos
    await rpc_fails(stub.WaitOperation(request), INVALID)


async def test_wait_wakes_the_moment_the_operation_finishes(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    op = await manager.create()
    call = stub.WaitOperation(wait_request(op.name, 30))
    await until(lambda: manager.watched == 1, "the WaitOperation call reached the hub")
    finished = time.monotonic()
    await manager.complete(op.name, wrappers_pb2.StringValue(value="ok"))
    got = await call
    assert time.monotonic() - finished < 0.5
    assert got.done and got.response.type_url.endswith("StringValue")
    assert manager.watched == 0, "the hub drops an operation's events after its last waiter"


async def test_an_operation_deleted_while_waited_on_answers_not_found_at_once(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    op = await manager.create()
    call = stub.WaitOperation(wait_request(op.name, 30))
    await until(lambda: manager.watched == 1, "the WaitOperation call reached the hub")
    started = time.monotonic()
    await stub.DeleteOperation(operations_pb2.DeleteOperationRequest(name=op.name))
    await rpc_fails(call, NOT_FOUND)
    assert time.monotonic() - started < 0.5


async def test_shutdown_answers_waiters_at_once() -> None:
    async with serve() as served:
        stub = operations_pb2_grpc.OperationsStub(served.channel)
        op = await served.manager.create(metadata=wrappers_pb2.StringValue(value="half"))
        call = stub.WaitOperation(wait_request(op.name, 30))
        await until(lambda: served.manager.watched == 1, "the WaitOperation call reached the hub")
        started = time.monotonic()
        await served.manager.aclose()
        got = await call
        assert time.monotonic() - started < 0.5
        assert got.name == op.name and not got.done
        await rpc_fails(
            stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name)),
            grpc.StatusCode.UNAVAILABLE,
        )


async def test_cancel_of_a_running_operation_cancels_its_task(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work(ctx: lro_async.OperationContext) -> empty_pb2.Empty:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return empty_pb2.Empty()

    op = await manager.start(work)
    await started.wait()
    reply = await stub.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
    assert reply == empty_pb2.Empty()
    got = await stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
    assert got.done and got.error.code == 1 and not got.HasField("response")
    await asyncio.wait_for(cancelled.wait(), 1)
    assert manager.running == 0


async def test_cancel_of_a_done_operation_changes_nothing(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    op = await manager.create()
    await manager.complete(op.name, wrappers_pb2.StringValue(value="kept"))
    before = await stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
    await stub.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
    after = await stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
    assert before == after and after.HasField("response")


async def test_cancel_racing_completion_records_exactly_one_terminal_state(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    outcomes = set()
    for _ in range(50):
        op = await manager.create()
        cancel = stub.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
        completed, _ = await asyncio.gather(
            manager.complete(op.name, wrappers_pb2.StringValue(value="won")), cancel
        )
        got = await stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
        assert got.done
        assert got.HasField("response") != got.HasField("error")
        assert got.HasField("response") == completed
        outcomes.add(got.WhichOneof("result"))
    assert outcomes <= {"response", "error"}


async def test_delete_removes_the_record_but_not_the_work(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    release, finished = asyncio.Event(), asyncio.Event()

    async def work(ctx: lro_async.OperationContext) -> empty_pb2.Empty:
        await release.wait()
        finished.set()
        return empty_pb2.Empty()

    op = await manager.start(work)
    await stub.DeleteOperation(operations_pb2.DeleteOperationRequest(name=op.name))
    await rpc_fails(stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name)), NOT_FOUND)
    assert manager.running == 1
    release.set()
    await asyncio.wait_for(finished.wait(), 1)
    await rpc_fails(stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name)), NOT_FOUND)


async def test_done_operations_hold_exactly_one_of_error_and_response(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    ok, failed = await manager.create(), await manager.create()
    await manager.complete(ok.name)
    await manager.fail(failed.name, grpc.StatusCode.ABORTED, "conflict")
    with pytest.raises(lro_async.InvalidArgument):
        await manager.fail(failed.name, grpc.StatusCode.OK, "not a failure")
    with pytest.raises(lro_async.InvalidArgument):
        await manager.fail(failed.name, 99, "no such code")
    for op in (ok, failed):
        got = await stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
        assert got.done and got.HasField("response") != got.HasField("error")
    got = await stub.GetOperation(operations_pb2.GetOperationRequest(name=failed.name))
    assert got.error.code == grpc.StatusCode.ABORTED.value[0]
    assert got.error.message == "conflict"


async def test_done_operations_never_change(manager: lro_async.OperationManager) -> None:
    op = await manager.create()
    assert await manager.complete(op.name, wrappers_pb2.StringValue(value="first"))
    assert not await manager.complete(op.name, wrappers_pb2.StringValue(value="second"))
    assert not await manager.fail(op.name, 13, "late")
    assert not await manager.set_metadata(op.name, wrappers_pb2.StringValue(value="late"))
    assert not await manager.cancel(op.name)
    got = await manager.get(op.name)
    value = wrappers_pb2.StringValue()
    assert got.response.Unpack(value) and value.value == "first"
    assert not got.HasField("metadata")


async def test_progress_header_returns_early_on_a_metadata_change(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    op = await manager.create(metadata=struct_pb2.Value(number_value=0))
    header = progress_header()
    call = stub.WaitOperation(wait_request(op.name, 30), metadata=(header,))
    await until(lambda: manager.watched == 1, "the WaitOperation call reached the hub")
    await manager.set_metadata(op.name, struct_pb2.Value(number_value=50))
    got = await asyncio.wait_for(call, 1)
    value = struct_pb2.Value()
    assert not got.done and got.metadata.Unpack(value) and value.number_value == 50


async def test_progress_header_with_seen_metadata_returns_at_once_when_it_differs(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    old = pack(struct_pb2.Value(number_value=10))
    op = await manager.create(metadata=struct_pb2.Value(number_value=20))
    header = progress_header(old)
    got = await asyncio.wait_for(
        stub.WaitOperation(wait_request(op.name, 30), metadata=(header,)), 1
    )
    assert not got.done and got.metadata != old
    same = progress_header(got.metadata)
    expired = await stub.WaitOperation(wait_request(op.name, 0.2), metadata=(same,))
    assert expired == got, "unchanged metadata: waits out its timeout"


async def test_without_the_header_metadata_changes_do_not_end_a_wait(
    stub: operations_pb2_grpc.OperationsStub, manager: lro_async.OperationManager
) -> None:
    op = await manager.create()
    call = stub.WaitOperation(wait_request(op.name, 0.5))
    await until(lambda: manager.watched == 1, "the WaitOperation call reached the hub")
    started = time.monotonic()
    await manager.set_metadata(op.name, struct_pb2.Value(number_value=1))
    got = await call
    assert time.monotonic() - started >= 0.3
    assert not got.done and got.HasField("metadata")


async def test_a_client_that_goes_away_mid_wait_leaves_nothing_behind(
    served: Served, manager: lro_async.OperationManager
) -> None:
    op = await manager.create()
    async with grpc.aio.insecure_channel(served.target) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        call = stub.WaitOperation(wait_request(op.name, 30))
        await until(lambda: manager.watched == 1, "the WaitOperation call reached the hub")
        call.cancel()
    await until(lambda: manager.watched == 0, "the server let go of the wait the client cancelled")


async def test_return_partial_success_is_unimplemented(
    stub: operations_pb2_grpc.OperationsStub,
) -> None:
    request = operations_pb2.ListOperationsRequest(return_partial_success=True)
    await rpc_fails(stub.ListOperations(request), grpc.StatusCode.UNIMPLEMENTED)
