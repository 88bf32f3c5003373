"""lro_async.sync: blocking operations on one background loop thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading

import grpc
import pytest
from google.protobuf import struct_pb2, wrappers_pb2

import lro_async
import lro_async.sync

from ..waiting import wait_until
from .conftest import FAST, Server, http_server_thread, server_thread


def pct(value: int) -> wrappers_pb2.Int32Value:
    return wrappers_pb2.Int32Value(value=value)


def answer(text: str) -> struct_pb2.Struct:
    return struct_pb2.Struct(fields={"answer": struct_pb2.Value(string_value=text)})


def typed(
    client: lro_async.sync.OperationsClient, name: str
) -> lro_async.sync.Operation[struct_pb2.Struct, wrappers_pb2.Int32Value]:
    return client.operation(
        name, result_type=struct_pb2.Struct, metadata_type=wrappers_pb2.Int32Value
    )


def test_result_exception_done_and_metadata(
    server: Server, client: lro_async.sync.OperationsClient
) -> None:
    ok = server.call(server.manager.create, metadata=pct(5))
    bad = server.call(server.manager.create)
    op, failing = typed(client, ok.name), typed(client, bad.name)
    assert not op.done(), "asked the server"
    assert op.metadata is not None and op.metadata.value == 5
    server.call(server.manager.complete, ok.name, answer("yes"))
    server.call(server.manager.fail, bad.name, grpc.StatusCode.NOT_FOUND, "no such disk")
    assert op.result(timeout=30) == answer("yes")
    assert op.done() and op.exception() is None
    error = failing.exception(timeout=30)
    assert isinstance(error, lro_async.OperationFailed) and error.message == "no such disk"
    with pytest.raises(lro_async.OperationFailed, match="no such disk"):
        failing.result()


def test_a_result_timeout_is_operation_timeout(
    server: Server, client: lro_async.sync.OperationsClient
) -> None:
    running = server.call(server.manager.create)
    with pytest.raises(lro_async.OperationTimeout):
        typed(client, running.name).result(timeout=0.05)


def test_cancel_asks_the_server(server: Server, client: lro_async.sync.OperationsClient) -> None:
    running = server.call(server.manager.create)
    op = typed(client, running.name)
    assert op.cancel() is True
    with pytest.raises(lro_async.OperationCancelled):
        op.result(timeout=30)
    assert op.cancelled()
    assert op.cancel() is False, "known to be done: no RPC"


def test_progress_is_a_plain_iterator(
    server: Server, client: lro_async.sync.OperationsClient
) -> None:
    running = server.call(server.manager.create, metadata=pct(0))
    op = typed(client, running.name)
    seen = []
    for md in op.progress():
        seen.append(md.value)
        if md.value < 3:
            server.call(server.manager.set_metadata, running.name, pct(md.value + 1))
        else:
            server.call(server.manager.complete, running.name, answer("done"))
    assert seen == [0, 1, 2, 3]
    assert op.result() == answer("done")


def test_a_progress_iterator_closed_early_leaves_the_waiter(
    server: Server, client: lro_async.sync.OperationsClient
) -> None:
    running = server.call(server.manager.create, metadata=pct(1))
    op = typed(client, running.name)
    with contextlib.closing(op.progress()) as updates:
        assert next(updates).value == 1
    assert client.run(_waiters_of, client) == 0


async def _waiters_of(client: lro_async.sync.OperationsClient) -> int:
    return len(client.async_client._waiters)


def test_until_and_tokens(server: Server, client: lro_async.sync.OperationsClient) -> None:
    running = server.call(server.manager.create, metadata=pct(0))
    op = typed(client, running.name)
    resumed = client.operation_from_token(op.token())
    assert resumed.name == op.name

    def advance() -> None:
        for step in (20, 60):
            server.call(server.manager.set_metadata, running.name, pct(step))

    driver = threading.Thread(target=advance)
    driver.start()
    reached = resumed.until(lambda md: md.value >= 50, timeout=30)
    driver.join()
    assert isinstance(reached, wrappers_pb2.Int32Value) and reached.value == 60
    server.call(server.manager.complete, running.name, answer("t"))
    assert resumed.result(timeout=30) == answer("t")


def test_eight_threads_await_a_thousand_operations_at_once(
    server: Server, client: lro_async.sync.OperationsClient
) -> None:
    names = [server.call(server.manager.create).name for _ in range(1000)]
    ops = [typed(client, name) for name in names]
    results: dict[str, struct_pb2.Struct] = {}
    errors: list[BaseException] = []
    started = threading.Barrier(9)

    def await_share(share: list[lro_async.sync.Operation[struct_pb2.Struct, object]]) -> None:
        started.wait(timeout=30)
        try:
            for op in share:
                results[op.name] = op.result(timeout=60)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=await_share, args=(ops[i::8],), name=f"awaiter-{i}")
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    started.wait(timeout=30)

    async def complete_all() -> None:
        for name in names:
            await server.manager.complete(name, answer(name))

    server.call(complete_all)
    for thread in threads:
        thread.join(timeout=90)
    assert not errors, errors
    assert len(results) == 1000
    assert all(results[name] == answer(name) for name in names)


def test_as_completed_starts_with_the_first_to_finish(
    server: Server, client: lro_async.sync.OperationsClient
) -> None:
    names = [server.call(server.manager.create).name for _ in range(3)]
    ops = [typed(client, name) for name in names]
    server.call(server.manager.complete, names[2], answer("last first"))
    finished = lro_async.sync.as_completed(ops, timeout=30)
    first = next(finished)
    assert first is ops[2]
    for name in names[:2]:
        server.call(server.manager.complete, name, answer("x"))
    assert {op.name for op in finished} == set(names[:2])
    assert list(lro_async.sync.as_completed([])) == []
    running = [typed(client, server.call(server.manager.create).name)]
    with pytest.raises(lro_async.OperationTimeout):
        list(client.as_completed(running, timeout=0.05))


def test_operations_of_another_client_are_refused(
    server: Server, client: lro_async.sync.OperationsClient
) -> None:
    with lro_async.sync.OperationsClient(server.target) as other:
        theirs = other.operation("operations/1")
        with pytest.raises(ValueError, match="belongs to another OperationsClient"):
            list(client.as_completed([theirs]))


def test_a_channel_factory_is_called_on_the_loop_thread(server: Server) -> None:
    called_on: list[threading.Thread] = []

    def factory() -> grpc.aio.Channel:
        called_on.append(threading.current_thread())
        return grpc.aio.insecure_channel(server.target)

    with lro_async.sync.OperationsClient(channel_factory=factory) as client:
        name = server.call(server.manager.create).name
        server.call(server.manager.complete, name, answer("f"))
        assert client.operation(name, result_type=struct_pb2.Struct).result(30) == answer("f")
    assert called_on and called_on[0] is not threading.current_thread()


def test_construction_mistakes_are_clear() -> None:
    with pytest.raises(ValueError, match="either a target or a channel_factory"):
        lro_async.sync.OperationsClient()
    with pytest.raises(ValueError, match="either a target or a channel_factory"):
        lro_async.sync.OperationsClient("127.0.0.1:1", channel_factory=lambda: None)  # type: ignore[arg-type,return-value]
    before = set(threading.enumerate())
    with pytest.raises(TypeError, match=r"must return a grpc\.aio channel"):
        lro_async.sync.OperationsClient(channel_factory=lambda: "nope")  # type: ignore[arg-type,return-value]
    assert set(threading.enumerate()) <= before, "a failed start leaves no thread"


def test_close_ends_blocked_waits_and_the_thread(server: Server) -> None:
    before = set(threading.enumerate())
    client = lro_async.sync.OperationsClient(server.target, policy=FAST)
    running = server.call(server.manager.create)
    op = typed(client, running.name)
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            op.result()
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until(
        lambda: server.manager.watched, "the blocked result() reached the server", timeout=30
    )
    client.close()
    waiter.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], lro_async.RpcError)
    assert outcome[0].code is grpc.StatusCode.CANCELLED
    client.close()  # twice is harmless
    with pytest.raises(lro_async.RpcError, match="closed"):
        op.result()
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, f"threads left behind: {left}"


def test_the_sync_face_works_inside_a_running_event_loop(server: Server) -> None:
    """What a notebook cell does: blocking calls from a thread whose own loop runs."""
    name = server.call(server.manager.create).name
    server.call(server.manager.complete, name, answer("nb"))

    async def cell() -> struct_pb2.Struct:
        asyncio.get_running_loop()  # there is one, and the sync face must not mind
        with lro_async.sync.OperationsClient(server.target) as client:
            return client.operation(name, result_type=struct_pb2.Struct).result(timeout=30)

    assert asyncio.run(cell()) == answer("nb")


def test_the_http_transport(server: Server) -> None:
    name = server.call(server.manager.create).name
    with (
        http_server_thread(server.manager) as url,
        lro_async.sync.OperationsClient.from_url(url, policy=FAST) as client,
    ):
        op = client.operation(name, result_type=struct_pb2.Struct)
        server.call(server.manager.complete, name, answer("http"))
        assert op.result(timeout=30) == answer("http")
        assert client.get_operation(name).done
        assert [o.name for o in client.list_operations("")] == [name]
        client.delete_operation(name)
        with pytest.raises(lro_async.OperationNotFound):
            client.get_operation(name)


CHILD = """
import sys, threading, time
import lro_async, lro_async.sync

target, running, done = sys.argv[1:4]
before = set(threading.enumerate())
client = lro_async.sync.OperationsClient(target)
try:
    print("waiting", flush=True)
    client.operation(running).result()
except KeyboardInterrupt as exc:
    print("interrupted", flush=True)
else:
    sys.exit("result() returned")
sys.stdin.readline()  # the parent checks the wait has ended on the server
print("still works:", client.operation(done).result(timeout=30).type_url, flush=True)
client.close()
# grpc.aio's poller thread is process-wide: started at the first grpc.aio use, never ended.
left = [
    t.name
    for t in set(threading.enumerate()) - before
    if t.is_alive() and "_poll_wrapper" not in t.name
]
print("threads left:", left, flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_interrupts_a_blocking_result_and_cancels_its_wait() -> None:
    with server_thread() as server:
        running = server.call(server.manager.create).name
        done = server.call(server.manager.create).name
        server.call(server.manager.complete, done, answer("after"))
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, server.target, running, done],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline() == "waiting\n"
            wait_until(  # result() is blocked in a WaitOperation
                lambda: server.manager.watched, "the child's wait reached the server", timeout=30
            )
            child.send_signal(signal.SIGINT)
            assert child.stdout.readline() == "interrupted\n"
            wait_until(  # cancelled, not left open
                lambda: server.manager.watched == 0,
                "the interrupted wait ended on the server",
                timeout=30,
                details=lambda: f"{server.manager.watched} operation still watched",
            )
            child.stdin.write("\n")
            child.stdin.flush()
            out, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
    assert child.returncode == 0, err
    assert "still works: type.googleapis.com/google.protobuf.Struct" in out
    assert "threads left: []" in out


def test_a_client_made_and_closed_many_times_leaves_no_thread(server: Server) -> None:
    before = set(threading.enumerate())
    for _ in range(5):
        with lro_async.sync.OperationsClient(server.target, policy=FAST) as client:
            assert client.get_operation(server.call(server.manager.create).name).name
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, left
    assert FAST.poll.initial == 0.01


def test_watch_is_a_plain_iterator_of_a_collections_changes(
    server: Server, client: lro_async.sync.OperationsClient
) -> None:
    before = server.call(server.manager.create, parent="projects/w")
    with contextlib.closing(client.watch("projects/w")) as changes:
        snapshot = next(changes)
        assert (snapshot.kind, snapshot.name) == ("snapshot", before.name)
        assert next(changes).kind == "synced"
        created = server.call(server.manager.create, parent="projects/w")
        change = next(changes)
        assert (change.kind, change.name) == ("created", created.name)
        server.call(server.manager.complete, before.name)
        change = next(changes)
        assert (change.kind, change.name) == ("done", before.name)
