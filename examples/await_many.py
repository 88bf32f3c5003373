"""Await a thousand operations at once with ``as_completed``: one long-poll per operation.

Run: ``python examples/await_many.py``.
"""

from __future__ import annotations

import asyncio
import random
import time

from google.protobuf import wrappers_pb2

import lro_async
import lro_async.testing


async def main() -> None:
    async with lro_async.testing.serve() as served:
        manager = served.manager

        async def work(ctx: lro_async.OperationContext) -> wrappers_pb2.DoubleValue:
            seconds = random.uniform(1.5, 3.0)  # after every wait is open
            await asyncio.sleep(seconds)
            return wrappers_pb2.DoubleValue(value=time.time())  # when it finished

        started = [await manager.start(work, parent="projects/batch") for _ in range(1000)]
        async with lro_async.AsyncOperationsClient(served.channel) as client:
            ops = [client.operation(p, result_type=wrappers_pb2.DoubleValue) for p in started]
            delays = []
            async for op in lro_async.as_completed(ops, timeout=60):
                finished_at = (await op).value  # done already: no RPC
                delays.append((time.time() - finished_at) * 1000)
        delays.sort()
        print(
            f"{len(delays)} operations; noticed after p50 {delays[len(delays) // 2]:.1f} ms, "
            f"p99 {delays[int(len(delays) * 0.99)]:.1f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
