"""A waiter across a server restart: it notices the return within seconds, not minutes."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import grpc
import pytest

import lro_async
from lro_async.stores import SQLiteStore
from lro_async.testing import RpcCounter

from ..waiting import until

OUTAGE = 30.0
"""Seconds the server stays away: long enough for gRPC's default reconnect backoff (1 s,
x1.6, up to 120 s) to space its attempts 10-17 s apart, as after any real outage."""

NOTICED_WITHIN = 8.0
"""Seconds after the server's return by which the waiter must have its answer: a
reconnection attempt (at most 2.4 s apart) plus a retry (at most 5 s apart)."""


@dataclasses.dataclass
class _Server:
    manager: lro_async.OperationManager
    server: grpc.aio.Server
    port: int
    counter: RpcCounter

    async def stop(self) -> None:
        await self.server.stop(None)
        await self.manager.aclose()


async def _serve(path: Path, port: int) -> _Server:
    manager = lro_async.OperationManager(store=SQLiteStore(path))
    await manager.open()  # restart recovery finishes what the last server left running
    counter = RpcCounter()
    server = grpc.aio.server(options=lro_async.server_options(), interceptors=[counter])
    manager.add_to_server(server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return _Server(manager, server, bound, counter)


@pytest.mark.timeout(OUTAGE + 60)
async def test_a_waiter_notices_an_answer_within_seconds_of_a_restarted_servers_return(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ops.db"
    first = await _serve(path, 0)
    loop = asyncio.get_running_loop()
    try:
        op = await first.manager.create()
        target = f"127.0.0.1:{first.port}"
        async with grpc.aio.insecure_channel(
            target, options=lro_async.channel_options()
        ) as channel:
            client = lro_async.AsyncOperationsClient(channel)
            waiter = asyncio.ensure_future(client.operation(op.name).result())
            try:
                # Its wait is open: a Watch stream (the default against lro_async) or,
                # without the extension, a WaitOperation call.
                await until(lambda: first.counter.counts, "the wait never reached the server")
                await first.stop()
                await asyncio.sleep(OUTAGE)  # the outage itself (pacing, not a wait)
                assert not waiter.done()
                # The new server's recovery finishes the operation (ABORTED) before it
                # listens: the answer is there the moment the waiter gets through.
                second = await _serve(path, first.port)
                back = loop.time()
                try:
                    with pytest.raises(lro_async.OperationFailed) as caught:
                        await asyncio.wait_for(asyncio.shield(waiter), timeout=60)
                    noticed = loop.time() - back
                finally:
                    await second.stop()
            finally:
                waiter.cancel()
                await client.aclose()
    finally:
        await first.stop()
    assert caught.value.code == grpc.StatusCode.ABORTED
    assert noticed < NOTICED_WITHIN, (
        f"the waiter noticed the restarted server {noticed:.1f} s after its return"
    )


def test_channel_options_refuse_a_backoff_out_of_range() -> None:
    for bad in (0.0, -1.0, 1e9):
        with pytest.raises(ValueError, match="max_reconnect_backoff must be within"):
            lro_async.channel_options(max_reconnect_backoff=bad)
    assert ("grpc.max_reconnect_backoff_ms", 10_000) in lro_async.channel_options(
        max_reconnect_backoff=10
    )
