"""``kill -9`` of a real ``lro-async serve`` on SQLite, then a restart on the same file.

What a client was told must survive: every operation acknowledged as created is there
after the restart, every one seen done is unchanged, and every one that was still
running is done with ABORTED and says the server restarted (nothing stays done=false).

Also home of :func:`serve`, the ``lro-async serve`` subprocess the interop tests share.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Protocol, cast

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2, empty_pb2

from lro_async.demo import demo_pb2, demo_pb2_grpc

from ..waiting import until

pytestmark = pytest.mark.timeout(60)

CLI = (sys.executable, "-m", "lro_async")
ABORTED = 10
CANCELLED = 1
RESTARTED = "the server restarted before the operation finished"


@dataclasses.dataclass
class Server:
    """A running ``lro-async serve`` process and the address it serves on."""

    process: asyncio.subprocess.Process
    target: str
    log: Path  # its stderr
    metrics: str | None = None  # its /metrics URL, when served with --metrics-port

    def kill(self) -> None:
        """``kill -9``: no drain, no cleanup, no last write."""
        self.process.send_signal(signal.SIGKILL)

    async def stop(self, timeout: float) -> int:
        """SIGTERM (drain gracefully); return the exit code, failing after *timeout*."""
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            return await self.process.wait()


@contextlib.asynccontextmanager
async def serve(store: str, log: Path, *options: str) -> AsyncIterator[Server]:
    """Run ``lro-async serve --port 0 --store STORE [OPTIONS]`` until it says it serves.

    With ``--metrics-port`` among the options, it says where its metrics are first.

    Whatever happened, the process is gone on exit (SIGKILLed if it still ran).
    """
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *CLI,
            "serve",
            "--port",
            "0",
            "--store",
            store,
            *options,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert process.stdout is not None
        metrics = None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
            if "metrics on " in line:
                metrics = line.split("metrics on ")[1].split()[0]
                line = (await process.stdout.readline()).decode()
        if "serving on" not in line:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            stderr_text = await asyncio.to_thread(log.read_text)
            raise AssertionError(f"lro-async serve did not start: {line!r}\n{stderr_text}")
        yield Server(process, line.split("serving on ")[1].split()[0], log, metrics)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await process.wait()


def sleep_request(parent: str, seconds: float, steps: int = 2) -> demo_pb2.SleepRequest:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return demo_pb2.SleepRequest(parent=parent, duration=duration, steps=steps)


def demo_stub(channel: grpc.aio.Channel) -> demo_pb2_grpc.DemoAsyncStub:
    return cast("demo_pb2_grpc.DemoAsyncStub", demo_pb2_grpc.DemoStub(channel))


class OperationsStub(Protocol):
    """The google.longrunning.Operations calls used here, typed (its stub module is not)."""

    def GetOperation(
        self, request: operations_pb2.GetOperationRequest, *, timeout: float | None = None
    ) -> Awaitable[operations_pb2.Operation]: ...
    def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, *, timeout: float | None = None
    ) -> Awaitable[operations_pb2.ListOperationsResponse]: ...
    def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, *, timeout: float | None = None
    ) -> Awaitable[empty_pb2.Empty]: ...
    def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, *, timeout: float | None = None
    ) -> Awaitable[operations_pb2.Operation]: ...


def operations_stub(channel: grpc.aio.Channel) -> OperationsStub:
    stub: OperationsStub = operations_pb2_grpc.OperationsStub(channel)
    return stub


async def list_all(operations: OperationsStub, parent: str) -> list[operations_pb2.Operation]:
    """Every operation under *parent*, page by page."""
    listed: list[operations_pb2.Operation] = []
    token = ""
    while True:
        page = await operations.ListOperations(
            operations_pb2.ListOperationsRequest(name=parent, page_size=1000, page_token=token),
            timeout=10,
        )
        listed.extend(page.operations)
        token = page.next_page_token
        if not token:
            return listed


# Durations cycle through these: some end before the kill, some never would.
DURATIONS = (0.0, 0.05, 0.2, 0.5, 1.0, 3.0, 60.0)
CREATORS = 8  # concurrent Sleep callers: at most this many creates are in flight at the kill
PARENT = "projects/restart"


@dataclasses.dataclass
class Observed:
    """What the clients were told before the kill."""

    created: dict[str, float] = dataclasses.field(default_factory=dict)  # name -> duration
    done: dict[str, operations_pb2.Operation] = dataclasses.field(default_factory=dict)


async def _create(demo: demo_pb2_grpc.DemoAsyncStub, observed: Observed, first: int) -> None:
    """Start operations one after another until the server is gone."""
    for i in range(first, 10**6, CREATORS):
        seconds = DURATIONS[i % len(DURATIONS)]
        try:
            operation = await demo.Sleep(sleep_request(PARENT, seconds), timeout=10)
        except grpc.aio.AioRpcError:
            return  # killed: this create may or may not have been written
        observed.created[operation.name] = seconds


async def _watch(operations: OperationsStub, observed: Observed) -> None:
    """GetOperation every acknowledged operation over and over; note those seen done."""
    while True:
        for name in [n for n in observed.created if n not in observed.done]:
            try:
                operation = await operations.GetOperation(
                    operations_pb2.GetOperationRequest(name=name), timeout=10
                )
            except grpc.aio.AioRpcError:
                return
            if operation.done:
                observed.done[name] = operation
        await asyncio.sleep(0.005)  # pacing: reads in flight at the kill, not a busy loop


async def _run_until_killed(server: Server) -> Observed:
    observed = Observed()
    async with grpc.aio.insecure_channel(server.target) as channel:
        demo, operations = demo_stub(channel), operations_stub(channel)
        clients = [asyncio.create_task(_create(demo, observed, i)) for i in range(CREATORS)]
        clients.append(asyncio.create_task(_watch(operations, observed)))
        try:
            await until(
                lambda: len(observed.created) >= 300 and len(observed.done) >= 60,
                "300 operations acknowledged and 60 seen done never happened",
                timeout=20,
                details=lambda: f"{len(observed.created)} acknowledged, {len(observed.done)} done",
            )
            server.kill()  # while creates and reads are in flight
            await server.process.wait()
            async with asyncio.timeout(15):
                await asyncio.gather(*clients)  # each stops at its first failed call
        finally:
            for client in clients:
                client.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
    assert server.process.returncode == -signal.SIGKILL
    return observed


async def test_after_kill_9_and_a_restart_nothing_acknowledged_is_lost_or_left_running(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'operations.db'}"
    async with serve(store, tmp_path / "first.log", "--grace", "1") as first:
        observed = await _run_until_killed(first)

    async with (
        serve(store, tmp_path / "second.log", "--grace", "1") as second,
        grpc.aio.insecure_channel(second.target) as channel,
    ):
        stored = {op.name: op for op in await list_all(operations_stub(channel), PARENT)}
        exit_code = await second.stop(15)
    assert exit_code == 0

    created = set(observed.created)
    missing = created - set(stored)
    assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
    unacknowledged = set(stored) - created
    assert len(unacknowledged) <= CREATORS  # only creates in flight at the kill
    changed = [name for name, op in observed.done.items() if stored[name] != op]
    assert not changed, f"seen done, then changed: {changed[:5]}"
    assert all(op.done for op in stored.values()), "still running after the restart"
    aborted = {name for name, op in stored.items() if op.HasField("error")}
    for name in aborted:
        error = stored[name].error
        assert (error.code, error.message) == (ABORTED, RESTARTED), (name, error)
    assert not aborted & set(observed.done)
    succeeded = set(stored) - aborted
    for name in succeeded:
        assert stored[name].response.Is(demo_pb2.SleepResponse.DESCRIPTOR), name
    # An operation of 60 s had no time to end: it was running, so it must be ABORTED.
    never_ending = {name for name, seconds in observed.created.items() if seconds == 60.0}
    assert never_ending <= aborted
    print(
        f"\nrestart after kill -9: {len(created)} acknowledged ({len(unacknowledged)} more"
        f" written but unacknowledged), {len(observed.done)} seen done and unchanged,"
        f" {len(succeeded)} succeeded in all, {len(aborted)} running at the kill and now"
        f" ABORTED ({len(never_ending)} of them 60 s ones)"
    )
