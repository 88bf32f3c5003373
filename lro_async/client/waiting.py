"""The one shared waiter per operation name: long-poll, fall back to polling, retry.

Every ``await op`` on a client goes through :class:`Waiters`. For each operation name there
is at most one :class:`Waiter` and one task, whatever the number of awaiters and of
``AsyncOperation`` objects of that name (single-flight). The task:

1. long-polls WaitOperation, each call asking to wait ``policy.long_poll`` seconds (or until
   the latest awaiter deadline, if every awaiter has one), with an RPC deadline a little
   beyond, so the server answers OK rather than the deadline expiring;
2. on UNIMPLEMENTED remembers it for the client and polls GetOperation with
   ``policy.poll`` backoff instead. A client's first waiter finds out with a WaitOperation
   that asks for no wait at all, while the client's other waiters wait for the verdict, so
   a server without WaitOperation sees one UNIMPLEMENTED call per client, not one per
   operation;
3. retries ``policy.retry_codes`` (UNAVAILABLE, a single call's DEADLINE_EXCEEDED, a
   CANCELLED status from a server that dropped the call, ...) with ``policy.retry`` backoff,
   forever: there is no implicit total timeout;
4. ends the wait of every awaiter with the error of any other status;
5. ends when the operation is done, or is cancelled when its last awaiter leaves.
   Leaving never cancels the remote operation.

Progress listeners (``AsyncOperation.progress()``) are awaiters that also want each
metadata change: while one listens, WaitOperation carries the
:func:`~lro_async.protobuf.progress_header` so lro_async's server returns on every change.
Until a server has shown it honours the header, the calls are kept short (the
``policy.poll`` backoff), which turns them into polls that still return at once when the
operation finishes. Plain awaiters pay nothing for any of this.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
from google.longrunning import operations_pb2

from ..errors import RpcError
from ..protobuf import progress_header
from ..telemetry import LONG_POLL, POLLED, WATCHED
from ..telemetry import current as current_telemetry
from .pacing import Pacer

if TYPE_CHECKING:
    from types import TracebackType

    from ..telemetry import WaitTrace
    from .policy import WaitPolicy
    from .transport import Metadata, OperationsTransport
    from .watching import WatchStream

__all__ = ["Observer", "Ticket", "Waiter", "Waiters"]

logger = logging.getLogger("lro_async")

T = TypeVar("T")


def _same(operation: operations_pb2.Operation) -> operations_pb2.Operation:
    return operation


class _Awaiting:
    """Awaits a generator such as :meth:`Waiters.waiting` from a coroutine."""

    __slots__ = ("_generator",)

    def __init__(self, generator: Generator[Any, None, operations_pb2.Operation]) -> None:
        self._generator = generator

    def __await__(self) -> Generator[Any, None, operations_pb2.Operation]:
        return self._generator


class Observer(Protocol):
    """Something told about every state a waiter sees (an ``AsyncOperation``, a batch)."""

    def _operation_changed(self, operation: operations_pb2.Operation) -> None: ...

    def _wait_failed(self, error: Exception) -> None: ...


class Ticket:
    """One awaiter's membership of a waiter: its deadline, observers, and whether it listens."""

    __slots__ = ("deadline", "observers", "progress")

    def __init__(
        self, observers: tuple[Observer, ...], deadline: float | None, progress: bool
    ) -> None:
        self.observers = observers
        self.deadline = deadline  # loop time, or None for no deadline
        self.progress = progress


class Waiters:
    """The waiters of one client, by operation name, and what it learnt about the server.

    :param transport: the RPCs.
    :param metadata: request metadata sent with every RPC the waiters make.
    :param policy: timing and pacing.
    """

    def __init__(
        self, transport: OperationsTransport, metadata: Metadata, policy: WaitPolicy
    ) -> None:
        self.transport = transport
        self.metadata = tuple(metadata)
        self.policy = policy
        self.pacer = Pacer(policy.max_in_flight, policy.opens_per_second, policy.open_burst)
        # Whether to long-poll: None until a WaitOperation answers, False on UNIMPLEMENTED.
        self.long_poll: bool | None = None
        self._probing: asyncio.Event | None = None  # set when the probe in flight ends
        self.honours_progress = False  # True once the server answered a progress wait early
        self._waiters: dict[str, Waiter] = {}
        self._closed = False
        self._warned: float | None = None  # loop time of the last still-failing warning
        self.telemetry = current_telemetry()  # a span per awaited operation, or None
        self.transport_kind: str = getattr(transport, "kind", "other")
        # The Watch stream all waiters share, if the transport has one (gRPC).
        make_stream = getattr(transport, "watch_stream", None)
        self.watch: WatchStream | None = make_stream(self.metadata) if make_stream else None

    def __len__(self) -> int:
        return len(self._waiters)

    def join(
        self,
        name: str,
        observers: tuple[Observer, ...],
        *,
        deadline: float | None = None,
        progress: bool = False,
    ) -> tuple[Waiter, Ticket]:
        """Join the waiter of *name* (starting it if needed); leave with ``Waiter.leave``."""
        if self._closed:
            raise _closed_error()
        waiter = self._waiters.get(name)
        if waiter is None:
            waiter = self._waiters[name] = Waiter(name, self)
        ticket = Ticket(observers, deadline, progress)
        waiter.join(ticket)
        return waiter, ticket

    async def wait(
        self, name: str, observer: Observer, deadline: float | None
    ) -> operations_pb2.Operation:
        """Return *name* once done (or raise the error that ended the wait).

        :param deadline: loop time after which to raise ``TimeoutError``; None: never.
        """
        if deadline is None:  # no Timeout object for each of thousands of waits
            return await _Awaiting(self.waiting(name, observer, _same))
        async with asyncio.timeout_at(deadline):
            return await _Awaiting(self.waiting(name, observer, _same, deadline))

    def waiting(
        self,
        name: str,
        observer: Observer,
        finish: Callable[[operations_pb2.Operation], T],
        deadline: float | None = None,
    ) -> Generator[Any, None, T]:
        """Wait until *name* is done and return ``finish(operation)`` (or raise the error
        that ended the wait): what ``await op`` runs, as one generator frame and one future
        per awaiter, nothing nested, so that thousands wait cheaply.

        :param deadline: the awaiter's deadline (loop time), for the waiter's long polls;
            enforcing it is the caller's (see :meth:`wait`).
        """
        waiter, ticket = self.join(name, (observer,), deadline=deadline)
        settled = waiter.settled_future()
        try:
            if settled is not None:
                yield from settled
        finally:
            if settled is not None:
                waiter.discard(settled)
            tasks = waiter.release(ticket)
            if tasks:
                yield from asyncio.wait(tasks).__await__()
        return finish(waiter.outcome())

    def forget(self, waiter: Waiter) -> None:
        """Drop *waiter* from the registry (it finished or has nobody left)."""
        if self._waiters.get(waiter.name) is waiter:
            del self._waiters[waiter.name]

    def still_failing(self, name: str, error: RpcError, seconds: float) -> None:
        """A wait of *name* has been failing for *seconds*: warn, at most once per while."""
        period = self.policy.warn_after
        now = asyncio.get_running_loop().time()
        if seconds >= period and (self._warned is None or now - self._warned >= period):
            self._warned = now
            others = sum(1 for waiter in self._waiters.values() if waiter.name != name)
            logger.warning(
                "waiting for %r has failed for %.0f s and keeps retrying (%d other waits of "
                "this client are open): %s",
                name,
                seconds,
                others,
                error,
            )

    def fall_back_to_polling(self) -> None:
        if self.long_poll is not False:
            logger.info("WaitOperation is not implemented by the server; polling GetOperation")
        self.long_poll = False

    def begin_probe(self) -> asyncio.Event | None:
        """Become the waiter that probes WaitOperation (None), or get the probe to await."""
        if self._probing is not None:
            return self._probing
        self._probing = asyncio.Event()
        return None

    def end_probe(self, verdict: bool | None) -> None:
        """Record the probe's verdict (None: undecided, e.g. it failed) and wake the others."""
        if verdict is False:
            self.fall_back_to_polling()
        elif verdict and self.long_poll is None:
            self.long_poll = True
        probing, self._probing = self._probing, None
        if probing is not None:
            probing.set()

    async def aclose(self) -> None:
        """End every wait with an error and stop every waiter task."""
        self._closed = True
        waiters, self._waiters = list(self._waiters.values()), {}
        tasks = [task for waiter in waiters for task in waiter.close(_closed_error())]
        if tasks:
            await asyncio.wait(tasks)
        if self.watch is not None:
            await self.watch.aclose()


def _closed_error() -> RpcError:
    return RpcError("the AsyncOperationsClient is closed", code=grpc.StatusCode.CANCELLED)


class _Flag:
    """``asyncio.Event`` without its deque (some 600 bytes): every awaited operation has one.

    Each awaiter waits on a future of its own, as with an Event, so cancelling one awaiter
    leaves the others waiting.
    """

    __slots__ = ("_futures", "_set")

    def __init__(self) -> None:
        self._set = False
        self._futures: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        for future in self._futures or ():
            if not future.done():
                future.set_result(None)

    def future(self) -> asyncio.Future[None] | None:
        """A future of its own for one awaiter, done when the flag is set (None: it is);
        hand it back to :meth:`discard` when done with it."""
        if self._set:
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._futures is None:
            self._futures = []
        self._futures.append(future)
        return future

    def discard(self, future: asyncio.Future[None]) -> None:
        if self._futures is not None:
            self._futures.remove(future)


class Waiter:
    """The single waiter of one operation name on one client; see the module docstring."""

    # One per awaited operation: slots, and no empty containers made before they are needed.
    __slots__ = (
        "_bumped",
        "_error",
        "_error_tb",
        "_final",
        "_following",
        "_latest",
        "_listeners",
        "_owner",
        "_plain_long_poll",
        "_policy",
        "_progress_waits",
        "_retired",
        "_settled",
        "_task",
        "_tickets",
        "_trace",
        "_unbounded",
        "_version",
        "name",
    )

    def __init__(self, name: str, owner: Waiters) -> None:
        self.name = name
        self._owner = owner
        self._policy = owner.policy
        # A list, not a set: most waiters have one ticket, and a set costs 216 bytes.
        self._tickets: list[Ticket] = []
        self._unbounded = 0  # tickets without a deadline
        self._listeners = 0  # tickets of progress() iterations
        self._task: asyncio.Task[None] | None = None
        self._following = False  # the Watch stream tells it the end; no task (see join)
        self._retired: set[asyncio.Task[None]] | None = None  # replaced, cancelled, ending
        self._plain_long_poll = False  # the task awaits a WaitOperation without the header
        self._progress_waits: Iterator[float] | None = None  # while the header is unproven
        self._latest: operations_pb2.Operation | None = None
        self._version = 0  # bumped on the first state, each metadata change, and the end
        self._bumped: asyncio.Event | None = None  # made by updates(), set at the next bump
        self._settled = _Flag()
        self._final: operations_pb2.Operation | None = None
        self._error: Exception | None = None
        self._error_tb: TracebackType | None = None  # raised afresh to each awaiter
        self._trace: WaitTrace | None = None  # the wait's span (telemetry), until it ends

    def __repr__(self) -> str:
        return f"<Waiter {self.name!r} tickets={len(self._tickets)}>"

    # -- membership -------------------------------------------------------------------

    def join(self, ticket: Ticket) -> None:
        self._tickets.append(ticket)
        self._unbounded += ticket.deadline is None
        self._listeners += ticket.progress
        if self._task is None and not self._following:
            telemetry = self._owner.telemetry
            if telemetry is not None and self._trace is None and not self._settled.is_set():
                self._trace = telemetry.start_wait(self.name, self._owner.transport_kind)
            stream = self._owner.watch
            if stream is not None and stream.supported is not False and not self._listeners:
                # Only the end is wanted and the Watch stream may have it: the stream tells
                # this waiter, which then holds no task (and no coroutine frames) at all.
                self._following = True
                stream.follow(self.name, self._watched)
            else:
                self._task = self._start(None)
        elif ticket.progress and self._following:
            self._unfollow()  # a listener wants each metadata change: a task follows them
            self._task = self._start(None)
        elif ticket.progress and self._listeners == 1 and self._plain_long_poll:
            # The open call would not return on a metadata change: reopen it with the header.
            previous = self._task
            assert previous is not None  # a plain long poll runs in the task
            previous.cancel()
            if self._retired is None:
                self._retired = set()
            self._retired.add(previous)
            previous.add_done_callback(self._retired.discard)
            self._task = self._start(previous)

    def release(self, ticket: Ticket) -> list[asyncio.Task[None]]:
        """Remove *ticket*; if it was the last, cancel the tasks and return them to await."""
        if ticket not in self._tickets:
            return []
        self._tickets.remove(ticket)
        self._unbounded -= ticket.deadline is None
        self._listeners -= ticket.progress
        if self._tickets or self._settled.is_set():
            return []
        self._owner.forget(self)
        if self._trace is not None:
            self._end_trace(grpc.StatusCode.CANCELLED, "every awaiter left")
        self._unfollow()
        return self._stop()

    async def leave(self, ticket: Ticket) -> None:
        """Remove *ticket*; if it was the last, stop the tasks and wait until they have ended."""
        tasks = self.release(ticket)
        if tasks:
            await asyncio.wait(tasks)

    def close(self, error: Exception) -> list[asyncio.Task[None]]:
        """End the wait of every awaiter with *error*; return the cancelled tasks to await."""
        self._unfollow()
        tasks = self._stop()
        if not self._settled.is_set():
            self._settle_error(error)
        return tasks

    def _stop(self) -> list[asyncio.Task[None]]:
        tasks = [*(self._retired or ()), *([self._task] if self._task is not None else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        return tasks

    # -- results ----------------------------------------------------------------------

    def settled_future(self) -> asyncio.Future[None] | None:
        """A future of this awaiter's own, done when the wait has ended (None: it has);
        hand it back to :meth:`discard`. Cancelling it leaves the other awaiters waiting."""
        return self._settled.future()

    def discard(self, future: asyncio.Future[None]) -> None:
        self._settled.discard(future)

    def outcome(self) -> operations_pb2.Operation:
        """The done operation, or raise the error that ended the wait."""
        if self._error is not None:
            raise self._error.with_traceback(self._error_tb)
        assert self._final is not None, "outcome() before the wait ended"
        return self._final

    async def updates(self) -> AsyncGenerator[operations_pb2.Operation, None]:
        """Yield the latest state each time the metadata changes; end with the done state."""
        seen = 0
        while True:
            latest = self._latest
            if latest is not None and self._version != seen:
                seen = self._version
                yield latest
                if latest.done:
                    return
                continue
            if self._error is not None:
                raise self._error.with_traceback(self._error_tb)
            if self._bumped is None:
                self._bumped = asyncio.Event()
            await self._bumped.wait()

    # -- the task ---------------------------------------------------------------------

    def _unfollow(self) -> None:
        if self._following:
            self._following = False
            if (stream := self._owner.watch) is not None:
                stream.forget(self.name)

    def _watched(self, result: operations_pb2.Operation | RpcError) -> None:
        """The Watch stream's answer for a wait followed without a task (see :meth:`join`)."""
        if not self._following:
            return
        self._following = False
        if isinstance(result, RpcError):
            # What a task does when the stream fails it: retry, fall back, or end the wait.
            self._task = self._start(None, failed=result)
            return
        if self._trace is not None:
            self._trace.how |= WATCHED
        self._publish(result)
        self._settle(result)

    def _start(
        self, previous: asyncio.Task[None] | None, *, failed: RpcError | None = None
    ) -> asyncio.Task[None]:
        return asyncio.create_task(
            self._run(previous, failed), name=f"lro_async waiter {self.name}"
        )

    async def _run(self, previous: asyncio.Task[None] | None, failed: RpcError | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        trace, telemetry = self._trace, self._owner.telemetry
        token = None if trace is None or telemetry is None else telemetry.attach(trace.span)
        try:
            await self._run_traced(failed)
        finally:
            if token is not None and telemetry is not None:
                telemetry.detach(token)

    async def _run_traced(self, failed: RpcError | None) -> None:
        try:
            operation = await self._follow(failed)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Not our cancellation, but something we awaited: the awaiters must not hang.
            self._settle_error(
                RpcError("waiting was cancelled from inside", code=grpc.StatusCode.CANCELLED)
            )
        except Exception as exc:  # every awaiter must hear of it, whatever it is
            self._settle_error(exc)
        else:
            self._settle(operation)

    def _settle(self, operation: operations_pb2.Operation) -> None:
        self._final = operation
        self._owner.forget(self)
        if self._trace is not None:
            self._end_trace(operation.error.code, operation.error.message)
        self._settled.set()

    async def _follow(self, failed: RpcError | None) -> operations_pb2.Operation:
        """Make RPCs until the operation is done; raise a permanent error.

        :param failed: what the Watch stream failed a task-free wait with, handled first.
        """
        # Backoff delays, made when first needed (most waits never need any): between
        # retries, and between polls and after early answers.
        retries: Iterator[float] | None = None
        pauses: Iterator[float] | None = None
        self._progress_waits = None
        failing_since: float | None = None  # loop time of the first failure in a row
        stream = self._owner.watch
        try:
            return await self._follow_with(stream, retries, pauses, failing_since, failed)
        finally:
            if stream is not None:
                stream.forget(self.name)

    async def _follow_with(
        self,
        stream: WatchStream | None,
        retries: Iterator[float] | None,
        pauses: Iterator[float] | None,
        failing_since: float | None,
        failed: RpcError | None,
    ) -> operations_pb2.Operation:
        while True:
            # A failure handed over from the stream is a watching failure, whatever the
            # stream learnt meanwhile (an UNIMPLEMENTED turns waits to WaitOperation).
            watching = failed is not None or (stream is not None and stream.supported is not False)
            mode = self._owner.long_poll
            if not watching and mode is None and (probe := self._owner.begin_probe()) is not None:
                await probe.wait()  # another waiter is finding out whether to long-poll
                continue
            try:
                if failed is not None:
                    error, failed = failed, None
                    raise error
                if stream is not None and watching:
                    operation = await stream.next(self.name, metadata=self._listeners > 0)
                    if self._trace is not None:
                        self._trace.how |= WATCHED
                    early = False
                elif mode is None:
                    operation, early = await self._probe()
                elif mode:
                    operation, early = await self._long_poll()
                else:
                    operation, early = await self._poll(), True
            except RpcError as exc:
                if watching and exc.code is grpc.StatusCode.UNIMPLEMENTED:
                    continue  # no Watch extension (remembered by the stream): WaitOperation
                if watching and exc.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                    stream = None  # the stream holds all the names it may: WaitOperation
                    continue
                if mode is not False and exc.code is grpc.StatusCode.UNIMPLEMENTED:
                    self._owner.fall_back_to_polling()
                    continue
                if exc.code not in self._policy.retry_codes:
                    raise
                now = asyncio.get_running_loop().time()
                if failing_since is None:
                    failing_since = now
                self._owner.still_failing(self.name, exc, now - failing_since)
                retries = retries or self._policy.retry.delays()
                delay = next(retries)
                logger.debug("retrying %r in %.3f s after %s", self.name, delay, exc)
                await asyncio.sleep(delay)
                continue
            retries = failing_since = None
            changed = self._publish(operation)
            if operation.done:
                return operation
            if changed and self._listeners:
                pauses = self._progress_waits = None
                if mode or watching:
                    continue  # someone listens for the next change: reopen at once
            if early:
                pauses = pauses or self._policy.poll.delays()
                await asyncio.sleep(next(pauses))
            else:
                pauses = None

    async def _probe(self) -> tuple[operations_pb2.Operation, bool]:
        """A WaitOperation that answers at once, telling every waiter whether to long-poll.

        Only one waiter of a client probes; the others wait for its verdict, so a server
        without WaitOperation sees one UNIMPLEMENTED call, not one per operation.
        """
        verdict: bool | None = None
        try:
            operation, _ = await self._long_poll(wait=0.0)
            verdict = True
        except RpcError as exc:
            if exc.code is grpc.StatusCode.UNIMPLEMENTED:
                verdict = False
            elif exc.code is grpc.StatusCode.DEADLINE_EXCEEDED:
                # It held a call that asked for no wait until the deadline: the server has
                # WaitOperation (and ignores its timeout). Let every waiter long-poll rather
                # than queue behind one probe after another.
                verdict = True
            raise
        finally:
            self._owner.end_probe(verdict)
        return operation, False

    async def _poll(self) -> operations_pb2.Operation:
        if (trace := self._trace) is not None:
            trace.rpcs += 1
        async with self._owner.pacer.slot():
            timeout = self._policy.rpc_timeout
            left = self._time_left()
            if left is not None:
                timeout = min(timeout, max(left, 0.01))
            operation = await self._owner.transport.get(
                self.name, timeout=timeout, metadata=self._owner.metadata
            )
        if trace is not None:
            trace.how |= POLLED
        return operation

    async def _long_poll(
        self, *, wait: float | None = None
    ) -> tuple[operations_pb2.Operation, bool]:
        """One WaitOperation; return the answer and whether it came early."""
        await self._owner.pacer.open()
        progress = self._listeners > 0
        backoff = wait is None  # not a probe: progress waits back off while unproven
        wait = self._policy.long_poll if wait is None else wait
        metadata = self._owner.metadata
        if progress:
            # Naming the metadata seen makes the server answer at once if it changed
            # between our calls, so no change a round trip apart is missed.
            seen = self._latest.metadata if self._latest is not None else None
            metadata += (progress_header(seen),)
            if backoff and not self._owner.honours_progress:
                self._progress_waits = self._progress_waits or self._policy.poll.delays()
                wait = min(wait, next(self._progress_waits, wait))
        left = self._time_left()
        if left is not None:
            wait = min(wait, left)
        wait = max(wait, 0.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._plain_long_poll = not progress and wait > 0
        if (trace := self._trace) is not None:
            trace.rpcs += 1
        try:
            operation = await self._owner.transport.wait(
                self.name,
                wait,
                timeout=wait + self._policy.deadline_margin,
                metadata=metadata,
            )
        finally:
            self._plain_long_poll = False
        if trace is not None:
            trace.how |= LONG_POLL
        elapsed = loop.time() - started
        # An answer well before the wait asked for (a server that treats WaitOperation
        # like GetOperation), or no wait at all (a deadline passed): pause before the next.
        early = wait <= 0 or elapsed < min(wait * 0.5, 1.0)
        if (
            progress
            and not operation.done
            and elapsed < wait * 0.8
            and self._latest is not None
            and self._latest.metadata != operation.metadata
        ):
            self._owner.honours_progress = True
        return operation, early

    def _time_left(self) -> float | None:
        """Seconds to the latest awaiter deadline, or None if an awaiter has none."""
        if self._unbounded or not self._tickets:
            return None
        latest = max(t.deadline for t in self._tickets if t.deadline is not None)
        return latest - asyncio.get_running_loop().time()

    # -- telling everyone -------------------------------------------------------------

    def _observers(self) -> list[Observer]:
        return list(dict.fromkeys(o for t in self._tickets for o in t.observers))

    def _bump(self) -> None:
        self._version += 1
        bumped, self._bumped = self._bumped, None
        if bumped is not None:
            bumped.set()

    def _publish(self, operation: operations_pb2.Operation) -> bool:
        """Record a new state; return whether its metadata differs from the previous one."""
        previous, self._latest = self._latest, operation
        changed = previous is not None and previous.metadata != operation.metadata
        if previous is None or changed or operation.done:
            self._bump()
        for observer in self._observers():
            observer._operation_changed(operation)
        return changed

    def _end_trace(self, code: grpc.StatusCode | int, message: str) -> None:
        trace, self._trace = self._trace, None
        telemetry = self._owner.telemetry
        if trace is not None and telemetry is not None:
            telemetry.end_wait(trace, code, message)

    def _settle_error(self, error: Exception) -> None:
        if self._trace is not None:
            code = getattr(error, "code", None)
            code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            self._end_trace(code, str(error))
        self._error, self._error_tb = error, error.__traceback__
        self._owner.forget(self)
        for observer in self._observers():
            observer._wait_failed(error)
        self._bump()
        self._settled.set()
