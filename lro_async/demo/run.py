"""``lro-async demo``: the main job end to end, on the embedded default (SQLite).

It starts a server, starts a batch of demo operations (one fails, one is cancelled),
awaits them all with live progress bars, and prints what happened and how quickly each
end was noticed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc
from google.longrunning import operations_pb2
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..client.many import as_completed
from ..client.operation import AsyncOperation
from ..client.operations import AsyncOperationsClient
from ..errors import OperationCancelled, OperationFailed
from ..protobuf import seconds_duration, timestamp_datetime
from ..testing import RpcCounter
from . import demo_pb2, demo_pb2_grpc

__all__ = ["check_plan", "run_demo"]

PARENT = "projects/demo"
_FAIL = grpc.StatusCode.FAILED_PRECONDITION


@dataclasses.dataclass
class _Planned:
    label: str
    expect: str  # "done", "failed" or "cancelled"
    start: Callable[[demo_pb2_grpc.DemoAsyncStub], Awaitable[operations_pb2.Operation]]
    result_type: type[Any]
    metadata_type: type[Any]
    cancel_after: float | None = None


@dataclasses.dataclass
class _Outcome:
    state: str = "running"
    detail: str = ""
    seconds: float = 0.0
    notice_ms: float | None = None


def _plan(count: int, seconds: float) -> list[_Planned]:
    def sleep(
        scale: float, failure: demo_pb2.Failure | None = None
    ) -> Callable[[demo_pb2_grpc.DemoAsyncStub], Awaitable[operations_pb2.Operation]]:
        request = demo_pb2.SleepRequest(
            parent=PARENT, duration=seconds_duration(seconds * scale), steps=20, failure=failure
        )
        return lambda stub: stub.Sleep(request)

    rows = 200_000
    export = demo_pb2.ExportRequest(
        parent=PARENT, rows=rows, rows_per_second=max(1, int(rows / seconds))
    )
    plan = [
        _Planned(
            "export 200k rows",
            "done",
            lambda stub: stub.Export(export),
            demo_pb2.ExportResponse,
            demo_pb2.ExportMetadata,
        ),
        _Planned(
            "sleep, told to fail",
            "failed",
            sleep(
                0.8,
                demo_pb2.Failure(
                    code=_FAIL.value[0], message="disk full (on purpose)", at_percent=60
                ),
            ),
            demo_pb2.SleepResponse,
            demo_pb2.SleepMetadata,
        ),
        _Planned(
            "sleep, cancelled",
            "cancelled",
            sleep(1.0),
            demo_pb2.SleepResponse,
            demo_pb2.SleepMetadata,
            cancel_after=seconds * 0.4,
        ),
    ]
    sleeps = max(0, count - len(plan))
    for index in range(sleeps):  # from half to 1.2 times `seconds`, evenly
        scale = 0.5 + 0.7 * index / max(1, sleeps - 1)
        plan.append(
            _Planned(
                f"sleep {seconds * scale:.1f}s",
                "done",
                sleep(scale),
                demo_pb2.SleepResponse,
                demo_pb2.SleepMetadata,
            )
        )
    return plan[:count]


async def _settle(op: AsyncOperation[Any, Any], outcome: _Outcome, started: float) -> None:
    """Record how *op* ended; it is done, so awaiting it makes no RPC."""
    noticed = time.time()
    outcome.seconds = time.monotonic() - started
    try:
        response = await op
    except OperationCancelled:
        outcome.state = "cancelled"
    except OperationFailed as exc:
        outcome.state, outcome.detail = "failed", f"{exc.code.name}: {exc.message}"
    else:
        outcome.state = "done"
        if isinstance(response, demo_pb2.SleepResponse):
            ended = timestamp_datetime(response.end_time).timestamp()
            outcome.notice_ms = max(0.0, (noticed - ended) * 1000)
            outcome.detail = f"slept {response.slept.ToTimedelta().total_seconds():.2f}s"
        elif isinstance(response, demo_pb2.ExportResponse):
            outcome.detail = f"{response.rows:,} rows, sha256 {response.sha256.hex()[:8]}"


async def _follow(
    op: AsyncOperation[Any, Any], bars: Progress, task: TaskID, cancel_after: float | None
) -> None:
    """Move the bar with the metadata; cancel the operation when the plan says so."""
    if cancel_after is not None:
        await asyncio.sleep(cancel_after)
        await op.cancel()
        return
    async for metadata in op.progress():
        bars.update(task, completed=metadata.percent)


def _summary(
    plan: list[_Planned], ops: list[AsyncOperation[Any, Any]], outcomes: list[_Outcome]
) -> Table:
    table = Table(
        title="every operation, as its client saw it",
        caption="noticed: from the end of the work on the server to `await op` returning",
    )
    for column in ("operation", "what", "ended", "took", "noticed", "detail"):
        table.add_column(column, justify="right" if column in ("took", "noticed") else "left")
    for planned, op, outcome in zip(plan, ops, outcomes, strict=True):
        ok = outcome.state == planned.expect
        table.add_row(
            "…" + op.name[-8:],
            planned.label,
            f"[{'green' if ok else 'red'}]{outcome.state}[/]",
            f"{outcome.seconds:.2f}s",
            "-" if outcome.notice_ms is None else f"{outcome.notice_ms:.1f} ms",
            outcome.detail,
        )
    return table


def check_plan(count: int, seconds: float) -> None:
    """:raises ValueError: unless 1-1000 operations of 0.1-600 seconds."""
    if not 1 <= count <= 1000 or not 0.1 <= seconds <= 600:
        raise ValueError("the demo takes 1-1000 operations of 0.1-600 seconds")


async def run_demo(
    target: str, counter: RpcCounter, *, store: str, count: int, seconds: float
) -> int:
    """Run the demo against *target*; return 0 if every operation ended as planned, else 1.

    :param counter: the server's RPC counter (an interceptor of that server), for the summary.
    :param store: the server's store, as the summary names it.
    """
    check_plan(count, seconds)
    console = Console()
    console.print(f"[bold]lro-async demo[/]: server on {target}, store {store}")
    plan = _plan(count, seconds)
    async with (
        grpc.aio.insecure_channel(target) as channel,
        AsyncOperationsClient(channel) as client,
    ):
        stub = cast("demo_pb2_grpc.DemoAsyncStub", demo_pb2_grpc.DemoStub(channel))
        started = time.monotonic()
        ops = [
            client.operation(
                await p.start(stub),
                result_type=p.result_type,
                metadata_type=p.metadata_type,
            )
            for p in plan
        ]
        outcomes = [_Outcome() for _ in ops]
        columns = (
            TextColumn("{task.description:<22}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as bars:
            tasks = [bars.add_task(p.label, total=100) for p in plan]
            followers = [
                asyncio.create_task(_follow(op, bars, task, p.cancel_after))
                for op, task, p in zip(ops, tasks, plan, strict=True)
            ]
            try:
                async for op in as_completed(ops):
                    index = ops.index(op)
                    await _settle(op, outcomes[index], started)
                    mark = "✓" if outcomes[index].state == "done" else "✗"
                    bars.update(tasks[index], description=f"{mark} {plan[index].label}")
            finally:
                for follower in followers:
                    follower.cancel()
                await asyncio.gather(*followers, return_exceptions=True)
    elapsed = time.monotonic() - started
    counts = counter.by_method("google.longrunning.Operations")
    streams = sum(counter.by_method("lro_async.v1.OperationsWatch").values())
    rpcs = sum(counts.values())
    console.print(_summary(plan, ops, outcomes))
    by_method = ", ".join(f"{n} {m}" for m, n in sorted(counts.items()))
    console.print(
        f"{len(ops)} operations in {elapsed:.2f}s. The client waited for all of them, progress "
        f"included, over {streams} Watch stream(s), and made {rpcs} other Operations RPCs"
        + (f" ({by_method})." if by_method else ".")
    )
    surprises = sum(o.state != p.expect for o, p in zip(outcomes, plan, strict=True))
    if surprises:
        console.print(f"[red]{surprises} operation(s) did not end as planned[/]")
    return 1 if surprises else 0
