"""The demo LRO service: Sleep and Export return operations run by an OperationManager."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import timestamp_pb2

from ..errors import InvalidArgument, OperationFailed, status_code
from ..protobuf import duration_seconds, seconds_duration
from ..server.servicer import add_service, rpc_method
from . import demo_pb2, demo_pb2_grpc

if TYPE_CHECKING:
    from google.longrunning import operations_pb2

    from ..server.context import OperationContext
    from ..server.manager import OperationManager

__all__ = ["DemoService"]

MAX_SLEEP_SECONDS = 3600
MAX_STEPS = 1000
MAX_ROWS = 10_000_000
_Context = grpc.aio.ServicerContext[Any, Any]


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _check_failure(failure: demo_pb2.Failure) -> None:
    if failure.code == 0:
        return
    try:
        status_code(failure.code)
    except ValueError:
        raise InvalidArgument(f"failure.code {failure.code} is not a google.rpc.Code") from None
    if not 0 <= failure.at_percent <= 100:
        raise InvalidArgument(f"failure.at_percent must be 0-100, not {failure.at_percent}")


def _fail_at(failure: demo_pb2.Failure, percent: int) -> None:
    if failure.code and percent >= failure.at_percent:
        raise OperationFailed(failure.code, failure.message or "the demo was told to fail")


class DemoService(demo_pb2_grpc.DemoServicer):
    """Serves ``lro_async.demo.v1.Demo``: each call starts an operation on *manager*."""

    service = "lro_async.demo.v1.Demo"  # names its spans (lro_async.telemetry)

    def __init__(self, manager: OperationManager) -> None:
        self.manager = manager
        self.telemetry = manager.telemetry

    def add_to_server(self, server: grpc.aio.Server) -> None:
        add_service(server, self, demo_pb2.DESCRIPTOR.services_by_name["Demo"])

    @rpc_method
    async def Sleep(
        self, request: demo_pb2.SleepRequest, context: _Context
    ) -> operations_pb2.Operation:
        seconds = duration_seconds(request.duration)
        if not 0 <= seconds <= MAX_SLEEP_SECONDS:
            raise InvalidArgument(f"duration must be 0-{MAX_SLEEP_SECONDS}s, not {seconds}s")
        steps = request.steps or 10
        if not 1 <= steps <= MAX_STEPS:
            raise InvalidArgument(f"steps must be 1-{MAX_STEPS}, not {request.steps}")
        _check_failure(request.failure)
        failure = request.failure
        started = _now()

        async def sleep(ctx: OperationContext) -> demo_pb2.SleepResponse:
            for step in range(1, steps + 1):
                await asyncio.sleep(seconds / steps)
                percent = step * 100 // steps
                _fail_at(failure, percent)
                metadata = demo_pb2.SleepMetadata(
                    percent=percent, step=step, steps=steps, start_time=started
                )
                await ctx.set_metadata(metadata)
            return demo_pb2.SleepResponse(
                slept=seconds_duration(seconds), steps=steps, end_time=_now()
            )

        return await self.manager.start(
            sleep,
            parent=request.parent,
            metadata=demo_pb2.SleepMetadata(steps=steps, start_time=started),
            request_id=request.request_id,
        )

    @rpc_method
    async def Export(
        self, request: demo_pb2.ExportRequest, context: _Context
    ) -> operations_pb2.Operation:
        rows, rate = request.rows, request.rows_per_second
        if not 1 <= rows <= MAX_ROWS:
            raise InvalidArgument(f"rows must be 1-{MAX_ROWS}, not {rows}")
        if not 1 <= rate <= MAX_ROWS:
            raise InvalidArgument(f"rows_per_second must be 1-{MAX_ROWS}, not {rate}")
        _check_failure(request.failure)
        failure = request.failure

        async def export(ctx: OperationContext) -> demo_pb2.ExportResponse:
            digest = hashlib.sha256()
            done, chunk = 0, max(1, rows // 20)
            started = time.monotonic()
            while done < rows:
                batch = min(chunk, rows - done)
                digest.update(b"".join(b"row %d\n" % i for i in range(done, done + batch)))
                done += batch
                # Pace to the requested rate: sleep until this many rows are "due".
                await asyncio.sleep(max(0.0, started + done / rate - time.monotonic()))
                percent = done * 100 // rows
                _fail_at(failure, percent)
                await ctx.set_metadata(
                    demo_pb2.ExportMetadata(rows_done=done, rows_total=rows, percent=percent)
                )
            uri = f"demo://exports/{ctx.name.rpartition('/')[2]}.csv"
            return demo_pb2.ExportResponse(rows=rows, uri=uri, sha256=digest.digest())

        return await self.manager.start(
            export,
            parent=request.parent,
            metadata=demo_pb2.ExportMetadata(rows_total=rows),
            request_id=request.request_id,
        )
