"""Tasks: the operations a manager runs here, and the final writes they leave behind.

A task runs its work, then records the end. That final write must reach the store, so
when the store fails (a dropped connection, a stall) the outcome is kept and the write
retried with backoff until the store takes it, for as long as the operation can still be
this replica's: until its lease runs out (renewed by the heartbeat meanwhile), or with a
store of one process until the manager closes. Past that it gives up with one ERROR
line, and the operation is finished with ABORTED by whoever reaps leases (another
replica) or recovers the store (the next start).

:meth:`Tasks.held` names what is held here (work running, or an end not yet recorded):
the heartbeat renews the leases of exactly those, so any other operation leased to this
replica is reaped after the lease like a dead replica's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import grpc
from google.rpc import status_pb2

from ..backoff import Backoff
from ..errors import OperationFailed, StoreError, code_number
from ..protobuf import status_of
from ..stores.base import Written

if TYPE_CHECKING:
    from google.protobuf import any_pb2
    from google.protobuf.message import Message
    from opentelemetry.trace import Span

    from ..telemetry import Telemetry
    from .context import OperationContext

__all__ = ["FINAL_RETRY", "SHUT_DOWN", "Outcome", "Tasks", "error_status"]

logger = logging.getLogger("lro_async")

SHUT_DOWN = "the server shut down before the operation finished"
"""The message of the ABORTED error a drain records for work still running."""

FINAL_RETRY = Backoff(initial=0.1, multiplier=2.0, maximum=2.0)
"""How a final write that the store refused is retried."""


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """How an operation ends: exactly one of a packed response or an error status."""

    response: any_pb2.Any | None = None
    error: status_pb2.Status | None = None


Finish = Callable[[str, Outcome], Awaitable[Written | None]]
"""Records an operation's end in the store (and wakes its waiters); None: no such operation."""


class _Job:
    """One operation run here."""

    __slots__ = ("context", "deleted", "lease_until", "outcome", "task")

    def __init__(self, context: OperationContext, deleted: asyncio.Event, lease_until: int | None):
        self.context = context
        self.deleted = deleted  # set when the operation's record is deleted
        self.lease_until = lease_until  # microseconds: the lease as last renewed; None: no lease
        self.outcome: Outcome | None = None  # the end, while the store has yet to take it
        self.task: asyncio.Task[None] | None = None


class Tasks:
    """The tasks of one manager, each running one operation's work and recording its end.

    :param finish: records an end (the manager's conditional finish).
    :param respond: packs what the work returned into the response (may raise, e.g. too big).
    :param clock: microseconds since the Unix epoch, the leases' clock.
    :param spans: the life spans of the operations it runs, by name, until the end
        written takes one out (the manager's writes do); a span still there when its task
        is done is ended as unrecorded.
    :param retry: how a refused final write is retried.
    :param telemetry: where the running count and the operations' spans go (None: nowhere).
    """

    def __init__(
        self,
        finish: Finish,
        respond: Callable[[Message | None], any_pb2.Any],
        clock: Callable[[], int],
        spans: dict[str, Span],
        *,
        retry: Backoff = FINAL_RETRY,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._telemetry = telemetry
        self._finish = finish
        self._respond = respond
        self._clock = clock
        self._spans = spans
        self._retry = retry
        self._jobs: dict[str, _Job] = {}
        self._stopping: Outcome | None = None  # set once close() began

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._jobs))

    def task(self, name: str) -> asyncio.Task[None] | None:
        job = self._jobs.get(name)
        return None if job is None else job.task

    def values(self) -> list[asyncio.Task[None]]:
        return [job.task for job in self._jobs.values() if job.task is not None]

    def start(
        self,
        name: str,
        work: Callable[[OperationContext], Awaitable[Message | None]],
        context: OperationContext,
        deleted: asyncio.Event,
        *,
        lease_until: int | None,
        span: Span | None = None,
    ) -> None:
        """Run ``work(context)`` as the operation *name*; *deleted* is the context's flag.

        :param span: the span of the operation's life, ended when its end is written.
        """
        job = _Job(context, deleted, lease_until)
        if span is not None:
            self._spans[name] = span
        task = asyncio.get_running_loop().create_task(self._run(name, job, work), name=name)
        job.task = task
        self._jobs[name] = job
        task.add_done_callback(lambda _: self._drop(name, job))
        if self._telemetry is not None:
            self._telemetry.running(1)

    def _drop(self, name: str, job: _Job) -> None:
        current = self._jobs.get(name) is job
        if current:
            del self._jobs[name]
        if self._telemetry is not None:
            self._telemetry.running(-1)
            span = self._spans.pop(name, None) if current else None
            if span is not None:  # deleted, or the store never took its end
                why = "deleted" if job.deleted.is_set() else "not recorded"
                self._telemetry.operation_ended_unrecorded(span, why)

    def held(self) -> list[str]:
        """The operations whose lease this replica must keep: work running, or an end
        not yet recorded, and not deleted."""
        return [name for name, job in self._jobs.items() if not job.deleted.is_set()]

    def renewed(self, names: Iterable[str], until: int) -> None:
        """The leases of *names* were renewed until *until* (microseconds)."""
        for name in names:
            job = self._jobs.get(name)
            if job is not None and job.lease_until is not None:
                job.lease_until = until

    def deleted(self, name: str) -> None:
        """The record of *name* is gone: its work may go on, but nothing more is written."""
        job = self._jobs.get(name)
        if job is not None and not job.deleted.is_set():
            job.deleted.set()
            logger.debug("operation %s was deleted while it ran; its work goes on", name)

    async def close(self, stopped: Outcome) -> None:
        """Record the end of everything held here, then end the tasks and wait for them.

        Work still running ends with *stopped*; an end the store has not taken yet gets
        one last try. A store that fails now is logged once per operation.
        """
        self._stopping = stopped
        jobs = list(self._jobs.items())
        for name, job in jobs:
            if job.deleted.is_set():
                continue
            try:
                await self._finish(name, job.outcome or stopped)
            except Exception as exc:
                logger.error(
                    "could not record the end of operation %s as the server shut down (%s);"
                    " it will be finished with ABORTED after its lease or at the next start",
                    name,
                    exc,
                )
        tasks = [job.task for _, job in jobs if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(
        self,
        name: str,
        job: _Job,
        work: Callable[[OperationContext], Awaitable[Message | None]],
    ) -> None:
        try:
            result = await work(job.context)
            outcome = Outcome(response=self._respond(result))
        except asyncio.CancelledError:
            await self._record_once(name, job, self._stopping or Outcome(error=_cancelled()))
            raise
        except OperationFailed as exc:
            outcome = Outcome(error=status_of(exc))
        except Exception:
            logger.exception("operation %s failed with an unexpected exception", name)
            outcome = Outcome(error=_internal())
        job.outcome = outcome
        try:
            await self._record(name, job, outcome)
        except asyncio.CancelledError:
            if job.outcome is not None:  # finished elsewhere (or the manager closes)
                logger.debug("stopped recording the end of operation %s", name)
            raise

    async def _record_once(self, name: str, job: _Job, outcome: Outcome) -> None:
        """The end of a cancelled task: mostly recorded already (the cancel, the drain)."""
        if job.deleted.is_set():
            return
        try:
            await self._finish(name, outcome)
        except Exception as exc:
            logger.error("recording the end of cancelled operation %s failed: %s", name, exc)

    async def _record(self, name: str, job: _Job, outcome: Outcome) -> None:
        """Write the end until the store takes it, while the operation can still be ours."""
        delays = self._retry.delays()
        failures = 0
        while not job.deleted.is_set():
            try:
                written = await self._finish(name, outcome)
            except (StoreError, OSError) as exc:
                failures += 1
                delay = next(delays)
                if job.lease_until is not None and self._clock() + delay * 1e6 >= job.lease_until:
                    logger.error(
                        "gave up recording the end of operation %s after %d attempts: the"
                        " store failed (%s) until its lease ran out; it will be finished"
                        " with ABORTED",
                        name,
                        failures,
                        exc,
                    )
                    return
                if failures == 1:
                    logger.warning(
                        "recording the end of operation %s failed (%s); retrying until the"
                        " store takes it",
                        name,
                        exc,
                    )
                await asyncio.sleep(delay)
                continue
            except Exception:  # not the store's weather: a bug, never retried
                logger.exception("recording the end of operation %s failed", name)
                return
            job.outcome = None
            if written is None:
                break
            if failures:
                logger.info(
                    "recorded the end of operation %s after %d failed attempts", name, failures
                )
            return
        logger.debug("operation %s ended after it was deleted; its end is dropped", name)


def error_status(code: grpc.StatusCode, message: str) -> status_pb2.Status:
    """The ``google.rpc.Status`` an operation ends with when the server ends it."""
    return status_pb2.Status(code=code_number(code), message=message)


def _cancelled() -> status_pb2.Status:
    return error_status(grpc.StatusCode.CANCELLED, "the operation was cancelled")


def _internal() -> status_pb2.Status:
    return error_status(
        grpc.StatusCode.INTERNAL, "the operation failed with an internal error; see the server log"
    )
