"""Wait for operations from plain synchronous code (a script, a Django view, a Celery task).

``lro_async.sync.OperationsClient`` runs lro_async's async client on one background
thread; its operations block the calling thread: ``result(timeout=)``, ``progress()`` as
an ordinary iterator, ``until()``, ``as_completed()``, resume tokens. Here a local lro_async
server, run on a thread of its own, stands in for the service that starts the operations.
Run: ``python examples/sync_script.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from anyio.from_thread import start_blocking_portal
from google.protobuf import struct_pb2

import lro_async
import lro_async.sync
import lro_async.testing


def progress(percent: float) -> struct_pb2.Struct:
    metadata = struct_pb2.Struct()
    metadata.update({"percent": percent})
    return metadata


async def export(ctx: lro_async.OperationContext) -> struct_pb2.Struct:
    for percent in (10, 40, 70, 100):
        await asyncio.sleep(0.05)
        await ctx.set_metadata(progress(percent))
    result = struct_pb2.Struct()
    result.update({"rows": 1234})
    return result


@contextlib.contextmanager
def service() -> Iterator[tuple[str, list[str]]]:
    """A stand-in service on its own thread: its address and the operations it started."""
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(lro_async.testing.serve()) as served,
    ):

        async def start_three() -> list[str]:
            return [(await served.manager.start(export)).name for _ in range(3)]

        yield served.target, portal.call(start_three)


def main() -> None:
    with (
        service() as (target, names),
        lro_async.sync.OperationsClient(target) as client,
    ):
        ops = [
            client.operation(name, result_type=struct_pb2.Struct, metadata_type=struct_pb2.Struct)
            for name in names
        ]

        # Progress as a plain iterator, read by progress_fraction whatever the service.
        for metadata in ops[0].progress():
            fraction = lro_async.progress_fraction(metadata)
            print(f"{ops[0].name}: {'?' if fraction is None else f'{fraction:.0%}'}")
        print(f"{ops[0].name} -> {ops[0].result(timeout=30).fields['rows'].number_value:.0f} rows")

        # Wait for a stage rather than the end.
        halfway = ops[1].until(lambda md: md.fields["percent"].number_value >= 50, timeout=30)
        print(f"{ops[1].name} passed {halfway.fields['percent'].number_value:.0f}%")

        # A token: another process (or a later request) resumes the typed operation.
        token = ops[2].token()
        resumed = client.operation_from_token(token)
        print(f"token {token[:24]}... resumes {resumed.name}")

        for op in lro_async.sync.as_completed(ops, timeout=30):
            print(f"{op.name} done: {op.exception() is None}")


if __name__ == "__main__":
    main()
