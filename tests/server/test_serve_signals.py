"""``lro-async serve`` stopped by signals: a drain records ABORTED; a second signal is now.

Real ``lro-async serve`` processes on a SQLite file; the operations are read back by a
second server on the same file.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2

from ..interop.test_restart import demo_stub, operations_stub, sleep_request
from ..interop.test_restart import serve as serve_cli
from ..waiting import until

pytestmark = pytest.mark.timeout(90)

ABORTED = grpc.StatusCode.ABORTED.value[0]
SHUT_DOWN = "the server shut down before the operation finished"


async def until_logged(log: Path, text: str, timeout: float = 15) -> None:
    async def logged() -> bool:
        return text in await asyncio.to_thread(log.read_text)

    await until(logged, f"the server logged {text!r}", timeout=timeout)


async def test_a_second_sigterm_during_the_grace_stops_at_once_and_records_aborted(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'operations.db'}"
    log = tmp_path / "first.log"
    async with serve_cli(store, log, "--grace", "60") as server:
        async with grpc.aio.insecure_channel(server.target) as channel:
            started = await demo_stub(channel).Sleep(
                sleep_request("projects/p", 60, steps=60), timeout=10
            )
            get = operations_pb2.GetOperationRequest(name=started.name)
            assert not (await operations_stub(channel).GetOperation(get, timeout=10)).done
        server.process.send_signal(signal.SIGTERM)
        await until_logged(log, "draining")
        second = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):  # not the 60 s grace
            code = await server.process.wait()
        stopped = time.monotonic() - second
    text = log.read_text()
    assert code == 0, text
    assert stopped < 3, f"stopped {stopped:.1f}s after the second signal"
    assert "stopping now" in text and "Traceback" not in text, text
    print(f"\nsecond SIGTERM -> exit in {stopped:.2f}s (grace 60 s)")

    async with (
        serve_cli(store, tmp_path / "second.log", "--grace", "1") as again,
        grpc.aio.insecure_channel(again.target) as channel,
    ):
        ended = await operations_stub(channel).GetOperation(get, timeout=10)
        assert await again.stop(15) == 0
    assert ended.done
    assert (ended.error.code, ended.error.message) == (ABORTED, SHUT_DOWN)


async def test_a_drain_whose_grace_runs_out_records_aborted_not_cancelled(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'operations.db'}"
    async with serve_cli(store, tmp_path / "first.log", "--grace", "0.5") as server:
        async with grpc.aio.insecure_channel(server.target) as channel:
            started = await demo_stub(channel).Sleep(
                sleep_request("projects/p", 60, steps=60), timeout=10
            )
        assert await server.stop(15) == 0
    async with (
        serve_cli(store, tmp_path / "second.log", "--grace", "1") as again,
        grpc.aio.insecure_channel(again.target) as channel,
    ):
        get = operations_pb2.GetOperationRequest(name=started.name)
        ended = await operations_stub(channel).GetOperation(get, timeout=10)
        assert await again.stop(15) == 0
    assert (ended.error.code, ended.error.message) == (ABORTED, SHUT_DOWN)
