"""OperationManager: runs coroutines as operations, keeps them in a store, wakes waiters."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Self

import grpc
from google.longrunning import operations_pb2
from google.protobuf.message import Message

from ..errors import InvalidArgument, OperationFailed, OperationNotFound, RpcError, status_code
from ..filtering import parse_filter
from ..names import check_name, check_parent, check_request_id
from ..protobuf import status_of
from ..stores.base import Lease, OperationStore, Written, now_us
from ..stores.memory import MemoryStore
from ..telemetry import current as current_telemetry
from .auth import Authorizer
from .context import OperationContext, Resume, Work
from .guard import GuardedStore
from .hub import Hub
from .reads import Reads
from .servicer import AsyncOperationsServicer
from .tasks import SHUT_DOWN, Outcome, Tasks, error_status
from .tokens import PageTokens
from .upkeep import Upkeep
from .watching import WatchServicer
from .writes import Writes

if TYPE_CHECKING:
    from types import TracebackType

    from google.protobuf import any_pb2
    from opentelemetry.trace import Span

__all__ = ["OperationManager", "Work"]

logger = logging.getLogger("lro_async")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
DAY = 86_400.0


class OperationManager:
    """Creates, runs, finishes and answers for long-running operations.

    The manager owns its store (``aclose`` closes it) and every task it starts.

    >>> import asyncio, lro_async
    >>> from google.protobuf import wrappers_pb2
    >>> async def double(ctx: lro_async.OperationContext) -> wrappers_pb2.Int64Value:
    ...     return wrappers_pb2.Int64Value(value=21 * 2)
    >>> async def main() -> None:
    ...     async with lro_async.OperationManager() as manager:
    ...         op = await manager.start(double, parent="projects/p")
    ...         done = await manager.wait(op.name)
    ...         print(done.done, done.response.type_url)
    >>> asyncio.run(main())
    True type.googleapis.com/google.protobuf.Int64Value

    :param store: where operations live (default: a new :class:`MemoryStore`).
    :param retention: seconds a done operation is kept before it expires (default 30 days).
    :param page_token_key: HMAC key of ListOperations page tokens (default: the store's
        shared secret, so that any replica continues any listing; else random).
    :param lease: with a store shared by replicas: seconds without a heartbeat after
        which other replicas finish this one's running operations with ABORTED.
    :param resume: with a single-process durable store: called at start for each
        operation a previous process left running; return the work to run it again, or
        None to finish it with ABORTED (the default for every such operation).
    :param store_timeout: seconds any one call of a store that may stall (see
        ``OperationStore.may_stall``) may take before it fails with :class:`StoreError`
        (UNAVAILABLE to clients) instead of hanging a request.
    :param max_metadata_bytes: the largest metadata (and error status) accepted, packed.
    :param max_response_bytes: the largest response accepted, packed; with the metadata
        it must fit in a client's 4 MiB default message limit.
    """

    def __init__(
        self,
        store: OperationStore | None = None,
        *,
        retention: float = 30 * DAY,
        page_token_key: bytes | None = None,
        lease: float = 30.0,
        resume: Resume | None = None,
        store_timeout: float = 10.0,
        max_metadata_bytes: int = 512 * 1024,
        max_response_bytes: int = 3 * 1024 * 1024,
    ) -> None:
        if not retention > 0:
            raise ValueError(f"retention must be positive, not {retention!r}")
        if not lease > 0:
            raise ValueError(f"lease must be positive, not {lease!r}")
        self.store = store if store is not None else MemoryStore()
        self.telemetry = current_telemetry()
        """The :class:`~lro_async.telemetry.Telemetry` it reports to, or None."""
        # A store that may stall is guarded (and its calls measured); a MemoryStore's calls
        # take microseconds, less than measuring them would.
        self._store = (
            GuardedStore(self.store, store_timeout, self.telemetry)
            if self.store.may_stall
            else self.store
        )
        self.retention = retention
        self.lease = lease
        self.replica = f"{socket.gethostname()[:40]}/{os.getpid()}/{secrets.token_hex(4)}"
        """This manager's id in leases (host/pid/random)."""
        self.max_metadata_bytes = max_metadata_bytes
        self.max_response_bytes = max_response_bytes
        self._page_token_key = page_token_key
        self._hub = Hub()
        self.reads = Reads(
            self._store,
            self._hub,
            PageTokens(page_token_key or secrets.token_bytes(32)),
            retention=retention,
            telemetry=self.telemetry,
        )
        """The reading side (get, list, wait) that the servicers share."""
        spans: dict[str, Span] = {}  # the life spans of operations run here, until their end
        self._writes = writes = Writes(
            self._store,
            self._hub,
            self.reads,
            replica=self.replica,
            lease=lease if self.shared else None,
            max_metadata_bytes=max_metadata_bytes,
            max_response_bytes=max_response_bytes,
            spans=spans,
        )
        self._tasks = Tasks(
            self._finish_with, writes.response, now_us, spans, telemetry=self.telemetry
        )
        self._upkeep = Upkeep(
            self._store,
            self._hub,
            self._tasks,
            replica=self.replica,
            lease=lease,
            retention=retention,
            resume=resume,
            run=self._run_task,
            finish=lambda name, error: writes.finish(name, error=error),
        )
        self._opened: asyncio.Task[None] | None = None
        self._closing = False  # aclose() began: no second one
        self._closed = False  # and ended its records: the manager answers no more
        self._draining = False

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store and start the retention sweeper; called on first use anyway.

        :raises RpcError: UNAVAILABLE once the manager is shut down; or what opening the
            store raised.
        """
        if self._closed:
            raise RpcError("the operation manager is shut down", code=grpc.StatusCode.UNAVAILABLE)
        opened = self._opened
        if opened is None:
            opened = self._opened = asyncio.get_running_loop().create_task(self._open())
        if not opened.done():
            await asyncio.shield(opened)
        elif (exc := opened.exception()) is not None:
            raise exc

    async def _open(self) -> None:
        upkeep = self._upkeep
        await self._store.open(upkeep.on_remote_change, notify_all=upkeep.on_lost_changes)
        if self._page_token_key is None and (secret := await self._store.shared_secret()):
            self.reads.page_tokens = PageTokens(secret)
        await upkeep.start()

    @property
    def shared(self) -> bool:
        """Whether the store is shared with other processes (replicas)."""
        return self._store.recheck_interval is not None

    async def drain(self, grace: float) -> None:
        """Shut down gracefully: answer waiters now, let running work finish, then close.

        New operations are refused (UNAVAILABLE) from the start; every waiter gets the
        latest state at once; running work has *grace* seconds to finish before what is
        left is cancelled by :meth:`aclose` and recorded as ABORTED with the message
        "the server shut down before the operation finished" (not CANCELLED, which
        says a user cancelled it). Stop the gRPC server (``server.stop(grace)``)
        alongside, so that callers retry elsewhere.

        Cancelling the drain cuts the grace short: it closes at once (as :meth:`aclose`)
        and then raises ``CancelledError``.
        """
        self._draining = True
        self._hub.close()
        tasks = self._tasks.values()
        try:
            if tasks and grace > 0:
                await asyncio.wait(tasks, timeout=grace)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop running work, answer every waiter, close the store.

        Work still running is recorded as ABORTED ("the server shut down before the
        operation finished"), then cancelled; an end not yet written (the store failed)
        gets one last try. Idempotent. Waiters get the operation's latest state at once.
        """
        if self._closing:
            return
        self._closing = self._draining = True
        # Records first, while the work may still write progress (a write after its
        # end is refused, never an error), then the cancellations.
        await self._tasks.close(Outcome(error=error_status(grpc.StatusCode.ABORTED, SHUT_DOWN)))
        self._closed = True
        await self._upkeep.aclose()
        self._hub.close()
        await self._store.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def add_to_server(
        self,
        server: grpc.aio.Server,
        *,
        max_wait: float = 1800.0,
        authorize: Authorizer | None = None,
        watch: bool = True,
    ) -> AsyncOperationsServicer:
        """Serve this manager's operations from *server*; return the servicer.

        :param authorize: who may do what; see :class:`AsyncOperationsServicer`.
        :param watch: also serve lro_async's Watch extension (``lro_async.v1.OperationsWatch``,
            see :class:`~lro_async.server.watching.WatchServicer`) with the same authorizer.
        """
        servicer = AsyncOperationsServicer(self, max_wait=max_wait, authorize=authorize)
        servicer.add_to_server(server)
        if watch:
            WatchServicer(self, authorize=authorize).add_to_server(server)
        return servicer

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def draining(self) -> bool:
        """Whether it refuses new operations: a drain or a close began."""
        return self._draining

    @property
    def running(self) -> int:
        """How many operations this manager holds now: running, or their end not yet
        written (the store failed; it is retried)."""
        return len(self._tasks)

    @property
    def watched(self) -> int:
        """How many operations somebody is waiting on now."""
        return len(self._hub)

    # -- creating and running ---------------------------------------------------------

    async def create(
        self,
        *,
        parent: str = "",
        metadata: Message | None = None,
        request_id: str | None = None,
    ) -> operations_pb2.Operation:
        """Create a running operation that the caller finishes by hand.

        :param parent: the resource it belongs to, e.g. ``"projects/p"``; ``""``: top level.
        :param metadata: its initial metadata, any protobuf message.
        :param request_id: an AIP-155 request id (see :meth:`start`).
        :return: the new operation, ``done=false`` (or the one *request_id* created).
        :raises InvalidArgument: for a malformed parent or request id.
        """
        operation, _, _ = await self._create(parent, metadata, request_id, leased=False)
        return operation

    async def _create(
        self, parent: str, metadata: Message | None, request_id: str | None, *, leased: bool
    ) -> tuple[operations_pb2.Operation, bool, Lease | None]:
        """Create an operation; return it, whether it is new (else *request_id*'s), its lease."""
        check_parent(parent)
        request_id = check_request_id(request_id)
        packed = self._writes.metadata(metadata) if metadata is not None else None
        await self.open()
        if self._draining:
            raise RpcError("the server is shutting down", code=grpc.StatusCode.UNAVAILABLE)
        return await self._writes.create(parent, packed, request_id, leased=leased)

    async def start(
        self,
        work: Work,
        *,
        parent: str = "",
        metadata: Message | None = None,
        request_id: str | None = None,
    ) -> operations_pb2.Operation:
        """Run ``work(context)`` as a new operation and return the operation at once.

        The value *work* returns is the response. Raising :class:`OperationFailed` fails
        the operation with its code; any other exception fails it with INTERNAL (and is
        logged). CancelOperation cancels the task and records CANCELLED. The end is
        written until the store takes it (see :class:`OperationContext` for progress
        writes and for what DeleteOperation does to running work).

        :param request_id: an AIP-155 request id (1-64 of ``A-Za-z0-9_-``, e.g. a UUID;
            None or ``""``: none). While an operation created with it under the same
            parent exists (until it is deleted or expires), that operation is returned in
            its current state and *work* is not run, on every replica of a shared store.
        :raises InvalidArgument: for a malformed parent or request id.
        """
        if not callable(work):
            raise TypeError(f"work must be a coroutine function, not {work!r}")
        operation, created, lease = await self._create(parent, metadata, request_id, leased=True)
        if created:
            self._run_task(operation.name, work, None if lease is None else lease.expires)
        return operation

    def _run_task(self, name: str, work: Work, lease_until: int | None = None) -> None:
        deleted = asyncio.Event()
        context = OperationContext(self, name, deleted)
        span = None if self.telemetry is None else self.telemetry.operation_span(name)
        self._tasks.start(name, work, context, deleted, lease_until=lease_until, span=span)

    # -- changing ---------------------------------------------------------------------

    async def set_metadata(self, name: str, metadata: Message) -> bool:
        """Replace the metadata of a running operation and wake its progress watchers.

        :return: False (and no change) if the operation is done already.
        :raises OperationNotFound: if there is no such operation.
        """
        check_name(name)
        packed = self._writes.metadata(metadata)
        await self.open()
        return self._written(name, await self._writes.set_metadata(name, packed))

    async def complete(self, name: str, response: Message | None = None) -> bool:
        """Finish a running operation with *response* (None: ``google.protobuf.Empty``).

        :return: False (and no change) if it was done already: done operations never change.
        :raises OperationNotFound: if there is no such operation.
        """
        check_name(name)
        packed = self._writes.response(response)
        await self.open()
        written = await self._writes.finish(name, response=packed)
        await self._writes.pace()
        return self._written(name, written)

    async def fail(
        self,
        name: str,
        code: grpc.StatusCode | int,
        message: str = "",
        details: list[any_pb2.Any] | None = None,
    ) -> bool:
        """Finish a running operation with an error.

        :param code: a ``grpc.StatusCode`` or ``google.rpc.Code`` int; not OK.
        :return: False (and no change) if it was done already.
        :raises InvalidArgument: for OK or an unknown code.
        :raises OperationNotFound: if there is no such operation.
        """
        check_name(name)
        try:
            error = status_of(OperationFailed(status_code(code), message, details or ()))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"cannot fail an operation with code {code!r}: {exc}") from exc
        self._writes.error(error)
        await self.open()
        written = await self._writes.finish(name, error=error)
        await self._writes.pace()
        return self._written(name, written)

    async def cancel(self, name: str) -> bool:
        """Cancel an operation: record CANCELLED, then cancel its task if it runs here.

        :return: False (and no change) if it was done already.
        :raises OperationNotFound: if there is no such operation.
        """
        check_name(name)
        await self.open()
        cancelled = error_status(grpc.StatusCode.CANCELLED, "the operation was cancelled")
        written = await self._writes.finish(name, error=cancelled)
        task = self._tasks.task(name)
        if task is not None and written is not None and written.applied:
            task.cancel()
        await self._writes.pace()
        return self._written(name, written)

    async def delete(self, name: str) -> None:
        """Delete an operation's record; its work, if running, is not cancelled (AIP-151).

        Waiters of the operation get :class:`OperationNotFound` at once. Work running
        here sees ``OperationContext.deleted``; its later writes are quietly ignored
        and its end is dropped.

        :raises OperationNotFound: if there is no such operation.
        """
        check_name(name)
        await self.open()
        if not await self._writes.delete(name):
            raise OperationNotFound(f"operation {name!r} not found")
        self._tasks.deleted(name)

    def _finish_with(self, name: str, outcome: Outcome) -> Awaitable[Written | None]:
        return self._writes.finish(name, response=outcome.response, error=outcome.error)

    def _written(self, name: str, written: Written | None) -> bool:
        if written is None:
            raise OperationNotFound(f"operation {name!r} not found")
        return written.applied

    # -- reading ----------------------------------------------------------------------

    async def get(self, name: str) -> operations_pb2.Operation:
        """Return the latest state of an operation.

        :raises InvalidArgument: for a malformed name.
        :raises OperationNotFound: if it does not exist, expired or was deleted.
        """
        check_name(name)
        await self.open()
        return (await self.reads.get(name)).operation

    async def wait(
        self, name: str, timeout: float | None = None, *, progress: str | None = None
    ) -> operations_pb2.Operation:
        """Wait until the operation is done or *timeout* seconds pass; return its state.

        Wakes the moment the operation finishes (an event per watched operation, no
        polling). On timeout, or when the manager shuts down, returns the latest state
        with ``done=false``.

        :param timeout: seconds; None waits as long as it takes; 0 answers at once.
        :param progress: also return as soon as the metadata differs from the metadata
            whose :func:`~lro_async.protobuf.metadata_fingerprint` this is (``""``: from
            the metadata at the start of the wait).
        :raises InvalidArgument: for a malformed name or a negative timeout.
        :raises OperationNotFound: if it does not exist, or is deleted while waited on.
        """
        check_name(name)
        if timeout is not None and not timeout >= 0:
            raise InvalidArgument(f"the wait timeout must not be negative, not {timeout!r}")
        await self.open()
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        return await self.reads.wait(name, deadline, progress)

    async def list(
        self,
        parent: str | None = None,
        *,
        filter: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[operations_pb2.Operation], str]:
        """Return one page of operations, oldest first, and the next page's token.

        :param parent: only operations under this parent (``""``: top level); None: all.
        :param filter: an AIP-160 filter over name, done, error.code, metadata.@type,
            response.@type and create_time.
        :param page_size: 0 means 50; larger than 1000 means 1000.
        :param page_token: a token from the previous page of the same parent and filter.
        :return: ``(operations, next_page_token)``; the token is ``""`` on the last page.
        :raises InvalidArgument: for a negative page size, a bad filter or a bad token.
        """
        if parent is not None:
            check_parent(parent)
        if page_size < 0:
            raise InvalidArgument(f"page_size must not be negative, not {page_size}")
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        parsed = parse_filter(filter)
        await self.open()
        return await self.reads.page(parent, filter, parsed, limit, page_token)

    # -- retention --------------------------------------------------------------------

    async def expire(self) -> int:
        """Delete done operations older than the retention now, in batches; return how many."""
        return await self._upkeep.expire()
