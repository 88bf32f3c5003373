"""The waiters of test_admission, in a process of their own (so their client-side work is
not the server's): ``python admission_load.py TARGET WAITS STREAMS NAME...``.

Opens WAITS WaitOperation calls (600 s each, round-robin over the names) and STREAMS Watch
streams, each watching every name with metadata changes, and reads the streams; after a
line on stdin (the server holds them all), keeps asking one more WaitOperation, which the
full server refuses. Prints ``refused 50`` once 50 were refused, then runs until killed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2

from lro_async import channel_options
from lro_async.v1 import watch_pb2, watch_pb2_grpc


async def main(target: str, waits: int, streams: int, names: list[str]) -> None:
    async with grpc.aio.insecure_channel(target, options=channel_options()) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        watch = cast(
            "watch_pb2_grpc.OperationsWatchAsyncStub", watch_pb2_grpc.OperationsWatchStub(channel)
        )
        held = []
        for i in range(waits):
            request = operations_pb2.WaitOperationRequest(
                name=names[i % len(names)], timeout=duration_pb2.Duration(seconds=600)
            )
            held.append(asyncio.ensure_future(stub.WaitOperation(request, timeout=900)))

        async def follow() -> None:
            call = watch.Watch()
            add = watch_pb2.WatchRequest.Add(names=names, metadata_changes=True)
            await call.write(watch_pb2.WatchRequest(add=add))
            async for _ in call:
                pass

        followers = [asyncio.ensure_future(follow()) for _ in range(streams)]
        await asyncio.to_thread(sys.stdin.readline)  # "go": the server holds them all
        refused = 0
        request = operations_pb2.WaitOperationRequest(
            name=names[0], timeout=duration_pb2.Duration()
        )
        while True:
            try:
                await stub.WaitOperation(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                refused += 1
                if refused == 50:
                    print("refused 50", flush=True)
            await asyncio.sleep(0.002)  # pacing the storm: some 400 waits refused a second
            for task in (*held, *followers):
                if task.done():
                    task.result()  # a held wait or a stream that ended: say why, and stop
                    raise SystemExit(f"{task!r} ended")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]))
