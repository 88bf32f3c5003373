"""A benchmark server process: ``python -m benchmarks.server --kind KIND``.

Kinds:

- ``lro``: lro_async's ``OperationManager`` on a ``MemoryStore``, served by its
  ``AsyncOperationsServicer``;
- ``lro-watch``: ``lro`` that also serves the Watch extension (``lro_async.v1``), so
  lro_async's client multiplexes its waits over one stream;
- ``lro-sqlite``: the same as ``lro`` on a ``SQLiteStore`` in a temporary directory;
- ``lro-nowait``: ``lro`` whose WaitOperation answers UNIMPLEMENTED, as a server without
  long polls does, so clients fall back to polling GetOperation;
- ``bare``: the physical limit: GetOperation returns one constant Operation and
  WaitOperation awaits a plain ``asyncio.Event`` per operation.

Every kind finishes an operation with a ``google.protobuf.DoubleValue`` response holding
the server's ``time.time()`` at the moment it finished it, so a client can measure
completion-to-notice latency. Every kind also serves the Control service
(:mod:`benchmarks.control`) and uses ``lro_async.server_options()`` unless
``--default-options`` is given. With ``--time-notices``, an lro_async kind also times the
server's part of each long-polled notice, from ``complete()`` to the WaitOperation
handler's answer (``Stats`` answers the median).

The process prints ``READY <port>`` once it listens on 127.0.0.1, and stops on SIGTERM,
SIGINT, or when its standard input closes (its parent died).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import wrappers_pb2

import lro_async
from lro_async.server.watching import WatchServicer
from lro_async.stores import SQLiteStore
from lro_async.testing import RpcCounter

from .control import control_handler
from .gcpauses import GcPauses
from .resources import rss_bytes
from .settings import MESSAGE_OPTIONS
from .telemetry import from_environment

KINDS = ("lro", "lro-watch", "lro-sqlite", "lro-nowait", "bare")

_OPERATIONS_SERVICE = "google.longrunning.Operations"
_Context = grpc.aio.ServicerContext[Any, Any]


class Backend(Protocol):
    """What the Control service needs from each kind of server."""

    def register(self, server: grpc.aio.Server) -> None: ...

    async def create(self, count: int, parent: str) -> list[str]: ...

    async def complete(self, name: str) -> None: ...

    def waiting(self) -> int: ...

    def notice_part_us(self) -> float:
        """The median server's part of a long-polled notice (-1: not timed)."""
        ...

    async def aclose(self) -> None: ...


def _finished(name: str) -> operations_pb2.Operation:
    operation = operations_pb2.Operation(name=name, done=True)
    operation.response.Pack(wrappers_pb2.DoubleValue(value=time.time()))
    return operation


class _UnimplementedWait(lro_async.AsyncOperationsServicer):
    async def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: _Context
    ) -> operations_pb2.Operation:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "WaitOperation is not served here")
        raise AssertionError("context.abort returned")


class _NoticeParts:
    """The server's part of each long-polled notice: ``complete()`` to the answer.

    Costs a dictionary entry per end and a coroutine layer per WaitOperation, alike in
    every telemetry mode: what the modes add shows in real processes, where caches are
    cold after each idle wait, not only in a loop running the same path back to back.
    """

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.samples: list[float] = []

    def answered(self, name: str) -> None:
        started = self.started.pop(name, None)
        if started is not None:
            self.samples.append(time.perf_counter() - started)

    def median_us(self) -> float:
        return statistics.median(self.samples) * 1e6 if self.samples else -1.0


class _TimedWait(lro_async.AsyncOperationsServicer):
    """lro_async's servicer, its WaitOperation answers timed by *parts*."""

    def __init__(self, manager: lro_async.OperationManager, parts: _NoticeParts) -> None:
        super().__init__(manager)
        self.parts = parts

    async def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: _Context
    ) -> operations_pb2.Operation:
        answer = await super().WaitOperation(request, context)
        self.parts.answered(request.name)
        return answer


class LroBackend:
    """lro_async's own server: an OperationManager and its servicer."""

    def __init__(
        self,
        store: lro_async.stores.OperationStore,
        *,
        wait: bool,
        watch: bool = False,
        time_notices: bool = False,
    ) -> None:
        self.manager = lro_async.OperationManager(store)
        self.parts = _NoticeParts() if time_notices and wait else None
        self.servicer: lro_async.AsyncOperationsServicer
        if self.parts is not None:
            self.servicer = _TimedWait(self.manager, self.parts)
        else:
            servicer_type = lro_async.AsyncOperationsServicer if wait else _UnimplementedWait
            self.servicer = servicer_type(self.manager)
        self.watch = watch

    def register(self, server: grpc.aio.Server) -> None:
        self.servicer.add_to_server(server)
        if self.watch:
            WatchServicer(self.manager).add_to_server(server)

    async def create(self, count: int, parent: str) -> list[str]:
        return [(await self.manager.create(parent=parent)).name for _ in range(count)]

    async def complete(self, name: str) -> None:
        if self.parts is not None:
            self.parts.started[name] = time.perf_counter()
        await self.manager.complete(name, wrappers_pb2.DoubleValue(value=time.time()))

    def waiting(self) -> int:
        return self.manager.watched

    def notice_part_us(self) -> float:
        return -1.0 if self.parts is None else self.parts.median_us()

    async def aclose(self) -> None:
        await self.manager.aclose()


class BareBackend(operations_pb2_grpc.OperationsServicer):
    """The least a grpc.aio server can do: a constant Get, an Event per waited operation."""

    def __init__(self) -> None:
        self._constant = _finished("projects/bench/operations/" + "c" * 22)
        self._operations: dict[str, operations_pb2.Operation] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._waiting = 0
        self._next = 0

    def register(self, server: grpc.aio.Server) -> None:
        operations_pb2_grpc.add_OperationsServicer_to_server(self, server)

    async def create(self, count: int, parent: str) -> list[str]:
        names = []
        for _ in range(count):
            self._next += 1
            name = f"{parent}/operations/{self._next:022d}"
            self._operations[name] = operations_pb2.Operation(name=name)
            self._events[name] = asyncio.Event()
            names.append(name)
        return names

    async def complete(self, name: str) -> None:
        self._operations[name] = _finished(name)
        self._events[name].set()

    def waiting(self) -> int:
        return self._waiting

    def notice_part_us(self) -> float:
        return -1.0

    async def aclose(self) -> None:
        for event in self._events.values():
            event.set()

    async def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: _Context
    ) -> operations_pb2.Operation:
        return self._constant

    async def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: _Context
    ) -> operations_pb2.Operation:
        event = self._events.get(request.name)
        if event is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such operation")
            raise AssertionError("context.abort returned")
        # The request's timeout is honoured, as WaitOperation's contract asks: lro_async's
        # client opens with a zero-timeout probe and expects the current state at once.
        timeout = None
        if request.HasField("timeout"):
            timeout = request.timeout.seconds + request.timeout.nanos / 1e9
        if timeout is None or timeout > 0:
            self._waiting += 1
            try:
                async with asyncio.timeout(timeout):
                    await event.wait()
            except TimeoutError:
                pass
            finally:
                self._waiting -= 1
        return self._operations[request.name]


class BenchServer:
    """One backend, the Control service, and the bookkeeping both need."""

    def __init__(self, backend: Backend, counter: RpcCounter | None) -> None:
        self.backend = backend
        self.counter = counter
        self.names: list[str] = []
        self.finished = 0  # how many of self.names are done (they finish in order)
        self.gc = GcPauses().install()
        self._tasks: set[asyncio.Task[None]] = set()

    async def create(self, request: dict[str, Any]) -> dict[str, Any]:
        names = await self.backend.create(int(request["count"]), str(request["parent"]))
        self.names.extend(names)
        return {"names": "\n".join(names)}

    async def schedule(self, request: dict[str, Any]) -> dict[str, Any]:
        task = asyncio.create_task(self._finish_on_schedule(request["delay"], request["spread"]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"start": time.time()}

    async def _finish_on_schedule(self, delay: float, spread: float) -> None:
        loop = asyncio.get_running_loop()
        first = loop.time() + delay
        names, start = self.names, self.finished
        count = len(names) - start
        for index in range(count):
            due = first + spread * index / count
            if (pause := due - loop.time()) > 0:
                await asyncio.sleep(pause)
            await self.backend.complete(names[start + index])
            self.finished += 1

    async def complete_all(self, request: dict[str, Any]) -> dict[str, Any]:
        start = time.time()
        while self.finished < len(self.names):
            await self.backend.complete(self.names[self.finished])
            self.finished += 1
        return {"start": start, "end": time.time()}

    async def stats(self, request: dict[str, Any]) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "cpu": usage.ru_utime + usage.ru_stime,
            "rss": rss_bytes(),
            "waiting": self.backend.waiting(),
            "done": self.finished,
            "rpcs": self.counter.by_method(_OPERATIONS_SERVICE) if self.counter is not None else {},
            "gc": self.gc.state(),
            # gc-tracked objects: what a full collection walks (counting them costs a walk)
            "objects": len(gc.get_objects()) if request.get("objects") else -1,
            "notice_part_us": self.backend.notice_part_us(),
        }

    def handler(self) -> grpc.GenericRpcHandler:
        return control_handler(
            {
                "Create": self.create,
                "Schedule": self.schedule,
                "CompleteAll": self.complete_all,
                "Stats": self.stats,
            }
        )

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.backend.aclose()


class _StdinWatch(asyncio.Protocol):
    def __init__(self, closed: asyncio.Event) -> None:
        self._closed = closed

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed.set()


def _backend(kind: str, directory: Path, time_notices: bool) -> Backend:
    wait, watch = kind != "lro-nowait", kind == "lro-watch"
    if kind in ("lro", "lro-watch", "lro-nowait"):
        store: lro_async.stores.OperationStore = lro_async.stores.MemoryStore()
        return LroBackend(store, wait=wait, watch=watch, time_notices=time_notices)
    if kind == "lro-sqlite":
        store = SQLiteStore(str(directory / "bench.db"))
        return LroBackend(store, wait=True, time_notices=time_notices)
    return BareBackend()


async def serve(
    kind: str, *, count_rpcs: bool, default_options: bool, time_notices: bool = False
) -> None:
    directory = Path(tempfile.mkdtemp(prefix="lro-bench-"))
    counter = RpcCounter() if count_rpcs else None
    options = [] if default_options else list(lro_async.server_options())
    server = grpc.aio.server(
        options=[*options, *MESSAGE_OPTIONS], interceptors=[counter] if counter else None
    )
    bench = BenchServer(_backend(kind, directory, time_notices), counter)
    bench.backend.register(server)
    server.add_generic_rpc_handlers([bench.handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await loop.connect_read_pipe(lambda: _StdinWatch(stop), sys.stdin)
    print(f"READY {port}", flush=True)
    try:
        await stop.wait()
    finally:
        await bench.aclose()
        await server.stop(0)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server")
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--count-rpcs", action="store_true", help="count RPCs (an interceptor)")
    parser.add_argument(
        "--default-options", action="store_true", help="grpc defaults, not server_options()"
    )
    parser.add_argument(
        "--time-notices", action="store_true", help="time the server's part of each notice"
    )
    args = parser.parse_args()
    from_environment()
    asyncio.run(
        serve(
            args.kind,
            count_rpcs=args.count_rpcs,
            default_options=args.default_options,
            time_notices=args.time_notices,
        )
    )


if __name__ == "__main__":
    main()
