"""PostgresStore: a database that cannot be reached fails at open in one line."""

from __future__ import annotations

import socket

import pytest

import lro_async
from lro_async import StoreError
from lro_async.stores import PostgresStore


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens on it once the probe is closed


@pytest.mark.parametrize("where", ["closed port", "unknown host"])
async def test_a_bad_host_or_port_fails_at_open_naming_it_in_one_line(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    address = f"127.0.0.1:{_closed_port()}" if where == "closed port" else "nohost.invalid:5432"
    store = PostgresStore(f"postgresql://postgres@{address}/test", timeout=5)
    with pytest.raises(StoreError) as caught:
        async with lro_async.OperationManager(store=store):
            pass
    message = str(caught.value)
    assert message.startswith(f"PostgreSQL connect to {address}/test failed: "), message
    assert "\n" not in message
    assert len(message) < 200
    assert [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []
