"""The fault suite's harness: ``lro-async serve`` replicas, a client load, faults, invariants.

A :class:`Run` starts replicas (real ``python -m lro_async serve`` processes on fixed free
ports, so that a replica restarted after ``kill -9`` is found again at the same address),
drives a load through :class:`lro_async.AsyncOperationsClient` (demo ``Sleep`` operations
that succeed or fail as asked; every acknowledged operation is awaited), lets a scenario
inject faults on a schedule drawn from a seeded RNG, and then checks the invariants:

- every acknowledged operation is done within lease + margin of when it could end, with
  its own result or ABORTED/CANCELLED and a message saying why (none stuck, none lost);
- none changed after its waiter saw it done (the waiter's view against a final re-read);
- no waiter outlives its operation by more than a second (when its end became visible --
  on PostgreSQL the last NOTIFY heard for it, on SQLite its ``update_time`` -- against
  when the waiter returned; a replica that was down excuses the time it was down, a
  held table lock (reads wait for it too) the time it was held after the end,
  and a waiter late within a deliberate CPU burst -- thousands of waits opened at once, a
  replica's Python process starting -- is counted and printed apart, not failed: on the
  2-core machines this runs on, those bursts alone delay a wake-up past a second);
- every replica answers health checks throughout, except while a fault holds it down;
- the servers' logs hold no unhandled-exception traceback.

The seed is printed; ``LRO_ASYNC_FAULT_SEED=N`` replays a run's fault schedule (the
schedule is drawn up front from the seed; the load's interleaving is not reproducible).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import math
import os
import random
import re
import signal
import socket
import sqlite3
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.longrunning import operations_pb2
from grpc_health.v1 import health_pb2

import lro_async
from lro_async.demo import demo_pb2
from lro_async.stores import PostgresStore

from ..interop.test_restart import CLI, demo_stub, list_all, operations_stub, sleep_request
from ..stores.conftest import admin_connection
from ..waiting import until

SEED_ENV = "LRO_ASYNC_FAULT_SEED"
LEASE = 2.0
HEARTBEAT = LEASE / 3
STORE_TIMEOUT = 10.0  # PostgresStore's and the manager's default store timeout
# Slack for a loaded machine on top of lease + heartbeat before an operation counts as stuck.
MARGIN = 3.0
WAITER_LATE = 1.0
RECHECK = inspect.signature(PostgresStore).parameters["recheck_interval"].default
"""Seconds after which a replica re-reads what it waits for unannounced (PostgresStore's
default): how late a waiter may learn of an end whose NOTIFY its replica missed."""
UNANNOUNCED = 3.0
"""Seconds after its LISTEN connection is terminated that a replica may miss NOTIFYs
(reconnecting with backoff); a longer gap is a failure of its own."""

CANCELLED, INVALID, FAILED_PRECONDITION, ABORTED, INTERNAL, UNAVAILABLE = 1, 3, 9, 10, 13, 14
FAIL_MESSAGE = "told to fail"
# Channel options: reconnect quickly to a replica restarted at the same address.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
# Waiters retry a replica that is down every 50-500 ms, so they notice its return quickly;
# early answers (a draining server answers every wait at once) are followed by pauses as
# short (the default poll backoff would pause up to 20 s).
_QUICK = lro_async.Backoff(initial=0.05, multiplier=1.5, maximum=0.5, jitter=True)
POLICY = lro_async.WaitPolicy(
    retry=_QUICK,
    poll=_QUICK,
    rpc_timeout=5.0,
)
UNHANDLED = re.compile(
    r"Task exception was never retrieved|exception was never retrieved|Exception in callback"
    r"|Unhandled exception|Fatal error"
)
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\S+) ([A-Z]+) ")


def seed() -> int:
    """The run's seed: ``LRO_ASYNC_FAULT_SEED`` if set, else a fresh one."""
    given = os.environ.get(SEED_ENV)
    return int(given) if given else random.SystemRandom().randrange(1, 10**9)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_query(dsn: str, **params: str) -> str:
    """*dsn* with query parameters added (``schema=``, or server settings for asyncpg)."""
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query.extend(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def local_tcp_ports(pid: int) -> set[int]:
    """The local ports of the TCP sockets process *pid* holds (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@dataclasses.dataclass
class Window:
    """A time (``time.time()``) during which a replica is down on purpose."""

    start: float
    end: float = math.inf


class Replica:
    """One ``lro-async serve`` process, restartable at the same port; its logs are kept."""

    def __init__(self, label: str, store: str, logs: Path, *options: str) -> None:
        self.label = label
        self.store = store
        self.options = options
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self._logs = logs
        self.logs: list[Path] = []
        self.process: asyncio.subprocess.Process | None = None
        self.down: list[Window] = []
        self.exit_codes: list[int] = []
        self.channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        log = self._logs / f"{self.label}-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *CLI,
                "serve",
                "--port",
                str(self.port),
                "--store",
                self.store,
                *self.options,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        self.process = process
        assert process.stdout is not None
        try:
            async with asyncio.timeout(30):
                line = (await process.stdout.readline()).decode()
        except TimeoutError:
            line = "(nothing within 30 s)"
        if "serving on" not in line:
            await self.kill()
            raise AssertionError(
                f"replica {self.label} did not start: {line!r}\n{log.read_text()[-3000:]}"
            )

    def mark_down(self) -> None:
        self.down.append(Window(time.time()))

    async def mark_up(self) -> None:
        """Close the current down window once the replica answers health checks again."""
        answers: list[str] = []

        async def serving() -> bool:
            answers.append(await check_health(self.channel, 1.0))
            return answers[-1] == "SERVING"

        await until(
            serving,
            f"replica {self.label} never answered SERVING",
            timeout=30,
            details=lambda: f"its last answers: {answers[-3:]}",
        )
        self.down[-1].end = time.time()

    async def kill(self) -> None:
        """``kill -9`` and reap."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
                self.process.kill()
            await self.process.wait()

    async def terminate(self, timeout: float) -> int:
        """SIGTERM (drain) and wait for the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
        self.exit_codes.append(code)
        return code

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def down_at(self, at: float) -> Window | None:
        return _within(self.down, at)

    def unhandled(self) -> list[str]:
        """Excerpts of the logs that show an unhandled exception."""
        found = []
        for log in self.logs:
            lines = log.read_text(errors="replace").splitlines()
            logger = ""
            for i, line in enumerate(lines):
                if record := _RECORD.match(line):
                    logger = f"{record[1]} {record[2]}"
                if UNHANDLED.search(line) or (
                    line.startswith("Traceback") and not logger.startswith("lro_async ")
                ):
                    found.append(f"{log.name}:{i + 1}: " + "\n".join(lines[i : i + 25]))
        return found

    def logged_errors(self) -> int:
        """How many ERROR records lro_async logged (handled, with their tracebacks)."""
        return sum(
            1
            for log in self.logs
            for line in log.read_text(errors="replace").splitlines()
            if " lro_async ERROR " in line
        )

    async def aclose(self) -> None:
        await self.kill()
        await self.channel.close()


_HealthCheck = grpc.aio.UnaryUnaryMultiCallable[
    health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
]


async def check_health(channel: grpc.aio.Channel, timeout: float) -> str:
    """The overall health status name, or the error code name of the check."""
    check: _HealthCheck = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    try:
        reply = await check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


@dataclasses.dataclass
class Tracked:
    """An acknowledged operation and what its waiter saw."""

    name: str
    via: str  # the label of the replica that created it
    seconds: float
    fails: bool
    acked_at: float
    cancelled: bool = False  # the load asked to cancel it
    deleted: bool = False  # the load deleted it
    saw: operations_pb2.Operation | None = None
    saw_at: float | None = None
    wait_error: str | None = None


@dataclasses.dataclass
class Verdict:
    """The invariants' findings over one run."""

    acknowledged: int = 0
    lost: list[str] = dataclasses.field(default_factory=list)
    stuck: list[str] = dataclasses.field(default_factory=list)
    unexplained: list[str] = dataclasses.field(default_factory=list)
    changed: list[str] = dataclasses.field(default_factory=list)
    late: list[str] = dataclasses.field(default_factory=list)
    unhealthy: list[str] = dataclasses.field(default_factory=list)
    unhandled: list[str] = dataclasses.field(default_factory=list)
    late_in_burst: int = 0
    recovery: float = math.nan
    logged_errors: int = 0

    def problems(self) -> list[str]:
        found = []
        for label in ("lost", "stuck", "unexplained", "changed", "late", "unhealthy", "unhandled"):
            items: list[str] = getattr(self, label)
            if items:
                found.append(f"{len(items)} {label}: " + "\n  ".join(items[:5]))
        return found


Fault = Callable[["Run"], Awaitable[None]]


class Run:
    """One scenario: replicas, a load awaiting everything it started, faults, and a verdict.

    :param replicas: the replicas; the load creates operations on every one that is up.
    :param waiter: the replica whose channel all waits go through (the one faults spare).
    :param dsn_schema: (dsn, schema) of a PostgreSQL store, to read ``update_time``;
        None: the first replica's store is SQLite.
    """

    def __init__(
        self,
        scenario: str,
        rng_seed: int,
        replicas: list[Replica],
        waiter: Replica,
        *,
        dsn_schema: tuple[str, str] | None = None,
        creators: int = 4,
        durations: tuple[float, ...] = (0.0, 0.05, 0.2, 0.5, 1.0, 2.0),
    ) -> None:
        self.scenario = scenario
        self.seed = rng_seed
        self.rng = random.Random(rng_seed)
        self.load_rng = random.Random(rng_seed + 1)
        self.replicas = replicas
        self.waiter = waiter
        self.dsn_schema = dsn_schema
        self.creators = creators
        self.durations = durations
        self.parent = f"projects/faults-{scenario.replace('_', '-')}"
        self.tracked: dict[str, Tracked] = {}
        self.client = lro_async.AsyncOperationsClient(waiter.channel, policy=POLICY)
        self.creating: set[str] = {r.label for r in replicas}  # replicas the load may use
        self.fault_end = 0.0  # when the last fault ended
        self.last_ack = 0.0
        self.drained = False  # a drain happened: CANCELLED by shutdown is explained
        # Deliberate CPU bursts (thousands of waits opened at once on this 2-core machine):
        # a waiter late by more than WAITER_LATE within one is counted apart, not failed.
        self.bursts: list[Window] = []
        self.store_blocked: list[Window] = []  # the store answered nobody (a held lock)
        # The waiter's replica had lost its LISTEN connection: ends may reach it only when it
        # re-reads (every RECHECK), as DESIGN.md section 5 says of a lost notification.
        self.unannounced: list[Window] = []
        # PostgreSQL: when this process heard each operation's last NOTIFY (sent by the
        # transaction that commits a change): when its end became visible, retries and
        # locks included. update_time is when the manager stamped the end.
        self.notified: dict[str, float] = {}
        self.unhealthy: list[str] = []
        self.t0 = time.time()
        self._stop = asyncio.Event()
        self._waits: set[asyncio.Task[None]] = set()

    def log(self, text: str) -> None:
        print(f"[{self.scenario} seed={self.seed}] {text}", flush=True)

    # -- load --------------------------------------------------------------------------

    async def _creator(self) -> None:
        rng = self.load_rng
        while not self._stop.is_set():
            labels = sorted(self.creating)
            if not labels:  # every replica is down on purpose: wait for one back
                await until(
                    lambda: self.creating or self._stop.is_set(),
                    "no replica came back to take the load",
                    timeout=60,
                )
                continue
            label = rng.choice(labels)
            replica = next(r for r in self.replicas if r.label == label)
            seconds = rng.choice(self.durations)
            fails = rng.random() < 0.15
            request = sleep_request(self.parent, seconds, steps=rng.randint(1, 5))
            if fails:
                request.failure.code = FAILED_PRECONDITION
                request.failure.message = FAIL_MESSAGE
                request.failure.at_percent = rng.choice((0, 50, 100))
            try:
                started = await demo_stub(replica.channel).Sleep(request, timeout=3)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)  # down, draining, or its store is: not acknowledged
                continue
            self.last_ack = time.time()
            self.track(Tracked(started.name, replica.label, seconds, fails, self.last_ack))
            await asyncio.sleep(rng.uniform(0.0, 0.04))  # pacing

    def track(self, tracked: Tracked) -> None:
        self.tracked[tracked.name] = tracked
        task = asyncio.create_task(self._wait(tracked))
        self._waits.add(task)
        task.add_done_callback(self._waits.discard)

    async def _wait(self, tracked: Tracked) -> None:
        op = self.client.operation(
            tracked.name, result_type=demo_pb2.SleepResponse, metadata_type=demo_pb2.SleepMetadata
        )
        try:
            await op.exception()
            seen = operations_pb2.Operation()
            seen.CopyFrom(op.operation)
            tracked.saw = seen
        except lro_async.OperationNotFound:
            tracked.wait_error = "NOT_FOUND"
        except lro_async.RpcError as exc:
            tracked.wait_error = f"{type(exc).__name__}: {exc}"
        tracked.saw_at = time.time()

    async def _health(self, replica: Replica) -> None:
        while True:
            started = time.time()
            answer = await check_health(replica.channel, 2.0)
            ended = time.time()
            excused = any(w.start <= ended and started <= w.end for w in replica.down)
            if answer != "SERVING" and not excused:
                self.unhealthy.append(f"{replica.label} at +{started - self.t0:.2f}s: {answer}")
            await asyncio.sleep(0.1)  # pacing: the checks' rate, throughout the run

    async def probe(self) -> float:
        """Start a 0 s operation on every replica that is up and await it; return when done."""
        pending = [r for r in self.replicas if r.label in self.creating]
        failures: list[str] = []

        async def completed_on_every_replica() -> bool:
            while pending:  # in order: a replica that fails is tried again next time
                try:
                    request = sleep_request(self.parent + "-probe", 0, steps=1)
                    op = await demo_stub(pending[0].channel).Sleep(request, timeout=1)
                    # Bounded, so that the deadline below is one: tried again after 5 s.
                    error = await self.client.operation(op).exception(timeout=5)
                except (grpc.aio.AioRpcError, lro_async.RpcError, TimeoutError) as exc:
                    failures.append(f"{pending[0].label}: {type(exc).__name__}")
                    return False
                if error is not None:
                    failures.append(f"{pending[0].label}: {error}")
                    return False
                pending.pop(0)
            return True

        await until(
            completed_on_every_replica,
            "a fresh operation never completed on every replica up",
            timeout=30,
            details=lambda: f"not on {[r.label for r in pending]}, last: {failures[-3:]}",
        )
        return time.time()

    # -- the run -----------------------------------------------------------------------

    async def run(self, duration: float, faults: Fault) -> Verdict:
        """Load for about *duration* seconds while *faults* runs; then check everything."""
        self.t0 = time.time()
        listener = await self._listen()
        background: list[asyncio.Task[None]] = [
            asyncio.create_task(self._health(r)) for r in self.replicas
        ]
        creators = [asyncio.create_task(self._creator()) for _ in range(self.creators)]
        try:
            async with asyncio.timeout(duration + 40):
                await faults(self)
            self.fault_end = self.fault_end or time.time()
            recovered = await self.probe()
            left = self.t0 + duration - time.time()
            if left > 0:
                await asyncio.sleep(left)  # pacing: the rest of the load's time
            self._stop.set()
            await asyncio.gather(*creators)
            longest = max(self.durations)
            deadline = max(self.fault_end, self.last_ack + longest) + LEASE + HEARTBEAT + MARGIN
            pending = list(self._waits)
            if pending:
                await asyncio.wait(pending, timeout=max(0.1, deadline - time.time()))
        finally:
            for task in [*creators, *background, *self._waits]:
                task.cancel()
            await asyncio.gather(*creators, *background, *self._waits, return_exceptions=True)
            await self.client.aclose()
            if listener is not None:
                await listener.close()
        return await self._verdict(recovered)

    async def _listen(self) -> Any:
        """A LISTEN connection on the store's channel (the schema), or None for SQLite."""
        if self.dsn_schema is None:
            return None
        dsn, schema = self.dsn_schema

        def heard(connection: object, pid: int, channel: str, name: str) -> None:
            self.notified[name] = time.time()

        connection = await admin_connection(dsn)
        await connection.add_listener(schema, heard)
        return connection

    async def _verdict(self, recovered: float) -> Verdict:
        verdict = Verdict(acknowledged=len(self.tracked), unhealthy=list(self.unhealthy))
        final = {
            op.name: op for op in await list_all(operations_stub(self.waiter.channel), self.parent)
        }
        updated = await self._update_times()
        before = [t for t in self.tracked.values() if t.acked_at <= self.fault_end]
        seen_at = [t.saw_at for t in before if t.saw_at is not None and not t.deleted]
        verdict.recovery = max([recovered, *seen_at]) - self.fault_end
        for t in self.tracked.values():
            op = final.get(t.name)
            if op is None:
                if not t.deleted:
                    verdict.lost.append(f"{t.name} (waiter: {t.wait_error or t.saw})")
                continue
            if not op.done or t.saw is None:
                state = "not done" if not op.done else "done, but no waiter saw it in time"
                verdict.stuck.append(f"{t.name} via {t.via}: {state} ({t.wait_error})")
                continue
            if op != t.saw:
                verdict.changed.append(f"{t.name}: saw {t.saw} then {op}")
            if why := self._unexplained(t, op):
                verdict.unexplained.append(f"{t.name} via {t.via}: {why}")
            assert t.saw_at is not None
            if t.name in updated:
                ended = self.notified.get(t.name, updated[t.name] / 1e6)
                # A waiter cannot learn of an end while its replica is down, nor re-read it
                # while the table is locked (reads wait too): count from when it could.
                since = ended
                window = self.waiter.down_at(ended)
                if window is not None:
                    since = window.end
                for lock in self.store_blocked:
                    if lock.start - WAITER_LATE <= ended <= lock.end:
                        since = max(since, lock.end)
                allowed = WAITER_LATE
                if any(w.start <= ended <= w.end for w in self.unannounced):
                    allowed += RECHECK
                if t.saw_at - since <= allowed:
                    pass
                elif any(w.start <= t.saw_at and ended <= w.end for w in self.bursts):
                    verdict.late_in_burst += 1
                else:
                    verdict.late.append(
                        f"{t.name} via {t.via}: ended at +{ended - self.t0:.2f}s, its waiter "
                        f"returned {t.saw_at - since:.2f}s late ({_outcome(t.saw)})"
                    )
        return verdict

    def _unexplained(self, t: Tracked, op: operations_pb2.Operation) -> str | None:
        """Why this outcome is not one the operation may end with, or None if it is."""
        if op.HasField("response"):
            if t.fails:
                return "succeeded, but it was told to fail"
            return None if op.response.Is(demo_pb2.SleepResponse.DESCRIPTOR) else str(op)
        code, message = op.error.code, op.error.message
        why = f"ended with code {code}: {message!r}"
        if t.fails and (code, message) == (FAILED_PRECONDITION, FAIL_MESSAGE):
            return None
        if code == ABORTED and ("stopped" in message or "restarted" in message):
            return None
        if code == CANCELLED and t.cancelled and "cancel" in message:
            return None
        drain_words = ("shut down", "stopped", "server")
        if code in (CANCELLED, ABORTED, UNAVAILABLE) and self.drained:
            return None if any(word in message for word in drain_words) else why
        return why

    async def _update_times(self) -> dict[str, int]:
        """``update_time`` of every operation of this run, read from the store itself."""
        if self.dsn_schema is not None:
            dsn, schema = self.dsn_schema
            connection = await admin_connection(dsn)
            try:
                rows = await connection.fetch(
                    f'SELECT name, update_time FROM "{schema}".operations WHERE parent = $1',
                    self.parent,
                )
            finally:
                await connection.close()
            return {row["name"]: row["update_time"] for row in rows}
        path = self.replicas[0].store.removeprefix("sqlite:///")

        def read() -> dict[str, int]:
            with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
                query = "SELECT name, update_time FROM lro_operations WHERE parent = ?"
                return dict(db.execute(query, (self.parent,)))

        return await asyncio.to_thread(read)

    def summary(self, verdict: Verdict) -> str:
        return (
            f"scenario {self.scenario}: seed {self.seed}, acknowledged {verdict.acknowledged}, "
            f"lost {len(verdict.lost)}, stuck {len(verdict.stuck)}, "
            f"time to recovery {verdict.recovery:.2f} s "
            f"(unexplained {len(verdict.unexplained)}, changed {len(verdict.changed)}, "
            f"late waiters {len(verdict.late)} (+{verdict.late_in_burst} in a burst), "
            f"unhealthy checks {len(verdict.unhealthy)}, "
            f"unhandled tracebacks {len(verdict.unhandled)}, "
            f"lro_async ERROR records {verdict.logged_errors})"
        )

    # -- helpers for faults ------------------------------------------------------------

    def schedule(self, count: int, start: float, end: float, gap: float) -> list[float]:
        """*count* fault times (seconds after the start), at least *gap* apart, in order."""
        times: list[float] = []
        span = end - start - gap * (count - 1)
        assert span > 0, "the schedule does not fit"
        for offset in sorted(self.rng.uniform(0, span) for _ in range(count)):
            times.append(start + offset + gap * len(times))
        return times

    async def at(self, offset: float) -> None:
        """Sleep until *offset* seconds after the start (pacing of the fault schedule)."""
        await asyncio.sleep(max(0.0, self.t0 + offset - time.time()))

    def ended_fault(self) -> None:
        self.fault_end = time.time()


def _within(windows: list[Window], at: float) -> Window | None:
    return next((w for w in windows if w.start <= at <= w.end), None)


def _outcome(op: operations_pb2.Operation) -> str:
    if op.HasField("response"):
        return "response"
    return f"error {op.error.code}: {op.error.message}"


async def finish(run: Run, verdict: Verdict) -> None:
    """Stop every replica gracefully, read its logs, print the line, assert the invariants."""
    for replica in run.replicas:
        if replica.process is not None and replica.process.returncode is None:
            code = await replica.terminate(30)
            if code != 0:
                verdict.unhandled.append(f"{replica.label} exited with {code} after SIGTERM")
        verdict.unhandled.extend(replica.unhandled())
        verdict.logged_errors += replica.logged_errors()
    run.log(run.summary(verdict))
    print(run.summary(verdict), flush=True)
    problems = verdict.problems()
    assert not problems, f"{run.scenario} (replay: {SEED_ENV}={run.seed}):\n" + "\n".join(problems)


@contextlib.asynccontextmanager
async def replicas(*made: Replica) -> AsyncIterator[list[Replica]]:
    """Start the replicas together; whatever happens, none is left running."""
    try:
        async with asyncio.TaskGroup() as starting:
            for replica in made:
                starting.create_task(replica.start())
        yield list(made)
    finally:
        await asyncio.gather(*(r.aclose() for r in made))


async def terminate_backends(dsn: str, replica: Replica, names: tuple[str, ...]) -> list[str]:
    """``pg_terminate_backend`` every connection of *replica* (by application_name and
    client port); return the application names of those terminated."""
    ports = local_tcp_ports(replica.pid)
    connection = await admin_connection(dsn)
    try:
        rows: list[Any] = await connection.fetch(
            "SELECT application_name, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = ANY($1::text[]) AND client_port = ANY($2::int[])",
            list(names),
            sorted(ports),
        )
    finally:
        await connection.close()
    return [row["application_name"] for row in rows]


@contextlib.asynccontextmanager
async def table_lock(run: Run) -> AsyncIterator[None]:
    """Hold ``LOCK TABLE operations IN ACCESS EXCLUSIVE MODE`` in a transaction."""
    assert run.dsn_schema is not None
    dsn, schema = run.dsn_schema
    connection = await admin_connection(dsn)
    try:
        transaction = connection.transaction()
        await transaction.start()
        blocked = Window(time.time())
        run.store_blocked.append(blocked)
        try:
            await connection.execute(f'LOCK TABLE "{schema}".operations IN ACCESS EXCLUSIVE MODE')
            yield
        finally:
            await transaction.rollback()
            blocked.end = time.time()
    finally:
        await connection.close()
