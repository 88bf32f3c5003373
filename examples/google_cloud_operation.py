"""Await a google-api-core operation (what Google Cloud async clients return) with lro_async.

A Google Cloud async client's long-running call returns a google-api-core
``operation_async.AsyncOperation``; its ``.operation`` is the Operation proto. Hand that to
``client.operation(...)`` and await it with long-polling instead of api-core's polling.
Here a local lro_async server stands in for the Google API.
Needs google-api-core (``pip install "google-api-core[grpc]"``; not a dependency of lro_async).
Run: ``python examples/google_cloud_operation.py``.
"""

from __future__ import annotations

import asyncio

from google.api_core import operation_async, operations_v1
from google.protobuf import struct_pb2

import lro_async
import lro_async.testing


async def main() -> None:
    async with lro_async.testing.serve() as served:

        async def work(ctx: lro_async.OperationContext) -> struct_pb2.Struct:
            await asyncio.sleep(0.5)
            return struct_pb2.Struct(fields={"instance": struct_pb2.Value(string_value="vm-1")})

        proto = await served.manager.start(work, parent="projects/p/locations/l")

        # What a Google Cloud async client hands you:
        api_core_client = operations_v1.OperationsAsyncClient(served.channel)  # type: ignore[no-untyped-call]
        api_core_op = operation_async.from_gapic(  # type: ignore[no-untyped-call]
            proto, api_core_client, struct_pb2.Struct
        )

        # ... awaited through lro_async: one long-poll, the typed response, the status code kept.
        async with lro_async.AsyncOperationsClient(served.channel) as client:
            op = client.operation(api_core_op.operation, result_type=struct_pb2.Struct)
            response = await op.result(timeout=30)
        print(f"{op.name} -> {response.fields['instance'].string_value}")


if __name__ == "__main__":
    asyncio.run(main())
