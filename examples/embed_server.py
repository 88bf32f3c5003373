"""Embed lro_async in an existing grpc.aio server, next to your own LRO-returning service.

Here "your service" is the demo's ``Export`` RPC: it starts an operation with
``manager.start`` and returns it; the same server answers ``google.longrunning.Operations``
for it. Run: ``python examples/embed_server.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc

import lro_async
from lro_async.demo import demo_pb2, demo_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class ExportService:
    """Your own service: each Export call returns a long-running operation.

    ``rpc_method`` turns lro_async errors into statuses: a malformed ``parent`` makes
    ``manager.start`` raise InvalidArgument, which the caller gets as INVALID_ARGUMENT.
    """

    def __init__(self, manager: lro_async.OperationManager) -> None:
        self.manager = manager

    async def Sleep(self, request: demo_pb2.SleepRequest, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this service only exports")

    @lro_async.rpc_method
    async def Export(self, request: demo_pb2.ExportRequest, context: Context) -> Any:
        rows = request.rows

        async def export(ctx: lro_async.OperationContext) -> demo_pb2.ExportResponse:
            for done in range(0, rows + 1, max(1, rows // 4)):
                await asyncio.sleep(0.05)
                await ctx.set_metadata(
                    demo_pb2.ExportMetadata(
                        rows_done=done, rows_total=rows, percent=done * 100 // rows
                    )
                )
            return demo_pb2.ExportResponse(rows=rows, uri=f"demo://{ctx.name}")

        return await self.manager.start(
            export, parent=request.parent, metadata=demo_pb2.ExportMetadata(rows_total=rows)
        )


async def main() -> None:
    async with lro_async.OperationManager() as manager:
        server = grpc.aio.server(options=lro_async.server_options())
        demo = demo_pb2.DESCRIPTOR.services_by_name["Demo"]
        lro_async.add_service(server, ExportService(manager), demo)  # your service
        manager.add_to_server(server)  # google.longrunning.Operations, on the same server
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = cast("demo_pb2_grpc.DemoAsyncStub", demo_pb2_grpc.DemoStub(channel))
                proto = await stub.Export(
                    demo_pb2.ExportRequest(parent="projects/example", rows=1000)
                )
                async with lro_async.AsyncOperationsClient(channel) as client:
                    op = client.operation(
                        proto,
                        result_type=demo_pb2.ExportResponse,
                        metadata_type=demo_pb2.ExportMetadata,
                    )
                    async for metadata in op.progress():
                        print(f"{op.name}: {metadata.percent}%")
                    response = await op
                    print(f"exported {response.rows} rows to {response.uri}")
        finally:
            await server.stop(grace=None)


if __name__ == "__main__":
    asyncio.run(main())
