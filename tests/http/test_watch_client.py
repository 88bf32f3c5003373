"""lro_async's HTTP client over the Watch routes: how HTTP statuses on ``:watch`` map.

What the client does over the Watch extension on any transport (one stream for many
waits, a name that joins later, errors and progress over the stream, collection watches,
closing) is in tests/client/test_watch_stream.py and test_real_server.py, run over gRPC
and HTTP alike.
"""

from __future__ import annotations

import asyncio

import pytest

from lro_async import gather

from ..waiting import until
from .conftest import Served


@pytest.mark.parametrize("status", [404, 405, 501])
async def test_a_server_without_the_watch_route_is_remembered_and_waited_on(
    served: Served, status: int
) -> None:
    served.counted.fail("POST:watch", status)
    protos = [await served.manager.create() for _ in range(20)]
    waiting = asyncio.create_task(gather(*(served.client.operation(p) for p in protos)))
    await until(lambda: served.app.waiting == 20, "the waiters never long-polled")
    for proto in protos:
        await served.manager.complete(proto.name)
    await waiting
    assert served.counted.counts["POST:watch"] == 1  # tried once for the whole client
    assert served.counted.counts["POST:wait"] == 20 + 1  # + the probe


async def test_a_stream_refused_for_the_limit_waits_with_wait_instead(served: Served) -> None:
    served.counted.fail("POST:watch", 429)
    proto = await served.manager.create()
    waiting = asyncio.create_task(served.client.operation(proto).result())
    await until(lambda: served.app.waiting == 1, "the waiter never long-polled")
    await served.manager.complete(proto.name)
    await waiting
    assert served.counted.counts["POST:watch"] == 1


@pytest.mark.parametrize("status", [502, 503])
async def test_a_refused_stream_is_retried(served: Served, status: int) -> None:
    served.counted.fail("POST:watch", status, times=2)
    proto = await served.manager.create()
    waiting = asyncio.create_task(served.client.operation(proto).result())
    await until(lambda: served.manager.watched == 1, "the stream was never reopened")
    await served.manager.complete(proto.name)
    await waiting
    assert served.counted.counts["POST:watch"] >= 2
