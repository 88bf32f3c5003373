"""Ten thousand concurrent WaitOperation calls on one real server."""

from __future__ import annotations

import asyncio
import time

import pytest
from google.longrunning import operations_pb2_grpc

from lro_async.testing import serve

from ..waiting import until
from .rpc import wait_request

WAITERS = 10_000


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_ten_thousand_waiters_are_all_answered_promptly_when_their_operations_finish(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with serve() as served:
        manager = served.manager
        stub = operations_pb2_grpc.OperationsStub(served.channel)
        ops = [await manager.create(parent="projects/load") for _ in range(WAITERS)]
        opened = time.monotonic()
        calls = [stub.WaitOperation(wait_request(op.name, 120)) for op in ops]
        await until(
            lambda: manager.watched == WAITERS,
            f"{WAITERS} waits arrived",
            timeout=60,
            details=lambda: f"only {manager.watched}",
        )
        open_seconds = time.monotonic() - opened

        finished = time.monotonic()
        for op in ops:
            await manager.complete(op.name)
        completed_seconds = time.monotonic() - finished
        answers = await asyncio.gather(*calls)
        answered_seconds = time.monotonic() - finished

        assert all(answer.done for answer in answers)
        assert [a.name for a in answers] == [op.name for op in ops]
        assert manager.watched == 0
        with capsys.disabled():
            print(
                f"\n{WAITERS} waiters: opened in {open_seconds:.2f}s, completed in "
                f"{completed_seconds:.2f}s, all answered {answered_seconds:.2f}s after the "
                "first completion"
            )
        assert answered_seconds < 60
