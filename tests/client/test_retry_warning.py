"""A wait that keeps failing is retried forever, and says so in a warning now and then."""

from __future__ import annotations

import asyncio
import logging
import socket

import grpc
import pytest

from lro_async import AsyncOperationsClient, Backoff, OperationTimeout, WaitPolicy


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on leaving: nothing listens


async def test_waits_failing_long_warn_at_most_once_per_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = WaitPolicy(retry=Backoff(initial=0.01, maximum=0.01, jitter=False), warn_after=0.3)
    caplog.set_level(logging.WARNING, logger="lro_async")
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{closed_port()}") as channel,
        AsyncOperationsClient(channel, policy=policy) as client,
    ):
        ops = [client.operation(f"projects/p/operations/{i}") for i in range(20)]
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(
            *(op.result(timeout=1.0) for op in ops), return_exceptions=True
        )
        elapsed = loop.time() - started
    assert all(isinstance(r, OperationTimeout) for r in results), results
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # 20 waits failing for ~1 s with a 0.3 s period: a warning after 0.3 s, then one per 0.3 s.
    assert 1 <= len(warnings) <= elapsed / 0.3 + 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "keeps retrying" in message and "UNAVAILABLE" in message, message
    assert "19 other waits" in message, message


async def test_a_short_outage_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    policy = WaitPolicy(retry=Backoff(initial=0.01, maximum=0.01, jitter=False), warn_after=5.0)
    caplog.set_level(logging.WARNING, logger="lro_async")
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{closed_port()}") as channel,
        AsyncOperationsClient(channel, policy=policy) as client,
    ):
        with pytest.raises(OperationTimeout):
            await client.operation("projects/p/operations/x").result(timeout=0.5)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("value", [0, -1.0, float("inf")])
def test_warn_after_must_be_positive_and_finite(value: float) -> None:
    with pytest.raises(ValueError, match="warn_after"):
        WaitPolicy(warn_after=value)
