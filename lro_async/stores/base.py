"""OperationStore: where operations live. The public extension point of lro_async.

A store is the source of truth: the manager writes every change to it before telling
anyone, and waiters re-read it when they wake. Done operations are immutable in every
store: a second terminal write, or a metadata write after the end, is refused (returned
with ``applied=False``), never applied.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Self

from google.longrunning import operations_pb2

from ..errors import StoreError
from ..names import parent_of

if TYPE_CHECKING:
    from types import TracebackType

    from google.protobuf import any_pb2
    from google.rpc import status_pb2

    from ..filtering import Filter

__all__ = [
    "Lease",
    "OperationRecord",
    "OperationStore",
    "PageKey",
    "Records",
    "Written",
    "check_outcome",
    "mark_done",
    "now_us",
]


def now_us() -> int:
    """Microseconds since the Unix epoch: the clock of a record's create and update times."""
    return time.time_ns() // 1000


PageKey = tuple[int, str]
"""Where a page of a listing ends: ``(create_time, name)`` of its last operation."""


def check_outcome(response: any_pb2.Any | None, error: status_pb2.Status | None) -> None:
    """Refuse a finish that does not carry exactly one of a response or an error."""
    if (response is None) == (error is None):
        raise ValueError("finish takes exactly one of response or error")


def mark_done(
    operation: operations_pb2.Operation,
    response: any_pb2.Any | None,
    error: status_pb2.Status | None,
) -> None:
    """Make *operation* (a store's private copy) done with *response* or *error*."""
    operation.done = True
    if response is not None:
        operation.response.CopyFrom(response)
    elif error is not None:
        operation.error.CopyFrom(error)


@dataclasses.dataclass(frozen=True, slots=True)
class OperationRecord:
    """An operation as a store keeps it.

    :param operation: the ``google.longrunning.Operation``; treat it as read-only (stores
        hand out their own copies).
    :param create_time: microseconds since the Unix epoch when it was created.
    :param update_time: microseconds since the Unix epoch of its last change (for a done
        operation: when it finished; retention counts from there).
    """

    operation: operations_pb2.Operation
    create_time: int
    update_time: int

    @property
    def name(self) -> str:
        return self.operation.name

    @property
    def parent(self) -> str:
        return parent_of(self.operation.name)

    @property
    def done(self) -> bool:
        return self.operation.done

    @property
    def page_key(self) -> PageKey:
        return (self.create_time, self.operation.name)


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """Which replica runs an operation, and until when others must assume it still does.

    :param owner: the replica's id (``OperationManager.replica``).
    :param expires: microseconds since the Unix epoch; the owner renews it while it runs
        the operation; once it has passed, any replica may finish it with ABORTED.
    """

    owner: str
    expires: int


Records = list[OperationRecord]
"""A page of records (an alias, because ``OperationStore.list`` shadows ``list``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Written:
    """The outcome of a conditional write.

    :param record: the operation after the write, or as it was if the write was refused.
    :param applied: whether this write changed it (False: it was already done).
    """

    record: OperationRecord
    applied: bool


class OperationStore(abc.ABC):
    """Where operations live: implement this to keep them somewhere else.

    Every method is a coroutine and safe to call concurrently. Methods return copies that
    the caller may keep; a store never hands out an Operation it will mutate later.

    A store shared by several processes calls the ``notify`` callback given to
    :meth:`open` with the name of every operation another process changed, so that the
    local manager can wake its waiters; a purely local store never needs to.
    """

    #: How often (seconds) waiters re-read an operation even without a notification;
    #: ``None`` when every change is notified locally (the store is not shared).
    recheck_interval: float | None = None

    #: Most reads made for waits and watches (WaitOperation, Watch streams) in flight at
    #: once; ``None``: no bound. A store whose calls share a few connections or a worker
    #: thread sets it below their number, so that however many wait, a GetOperation (or
    #: List, Cancel, Delete) never queues behind more than this many of their re-reads.
    wait_reads: int | None = None

    #: Whether a call can suspend on I/O, so that the manager bounds each one with its
    #: ``store_timeout``. A store whose methods never await anything (``MemoryStore``)
    #: sets it False and saves a timer per call; a subclass that adds I/O sets it back.
    may_stall: bool = True

    #: Whether the store refuses every write (opened to inspect what another process
    #: serves): a manager over it then neither recovers nor expires operations.
    read_only: bool = False

    async def open(  # noqa: B027 - optional hook
        self,
        notify: Callable[[str], None] | None = None,
        *,
        notify_all: Callable[[], None] | None = None,
    ) -> None:
        """Prepare the store (connect, create the schema); called once by the manager.

        :param notify: call it with an operation's name when another process changed it.
        :param notify_all: call it when changes may have gone unannounced (e.g. after a
            lost connection), so that every waiter re-reads its operation.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release the store's resources; idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abc.abstractmethod
    async def create(self, record: OperationRecord, *, lease: Lease | None = None) -> None:
        """Insert a new operation.

        :param lease: for an operation that a replica runs: who, and until when. A store
            shared by several processes keeps it for :meth:`renew` and
            :meth:`expired_leases`; a single-process store may ignore it.
        :raises StoreError: if an operation of that name exists already.
        """

    async def create_once(
        self, record: OperationRecord, request_id: str, *, lease: Lease | None = None
    ) -> Written:
        """Insert a new operation unless its parent has one created with *request_id*.

        The request id (AIP-155) is unique per parent: of any number of racing calls with
        the same parent and request id (on any number of processes sharing the store)
        exactly one inserts its record; the others insert nothing and get that one back.
        The id lives as long as the operation's record: once it is deleted or expired,
        the id may be used again. Stores that implement this also keep :meth:`create`
        working as before (its operations have no request id).

        :param request_id: a non-empty string (the manager checks its form).
        :param lease: as for :meth:`create`.
        :return: *record* with ``applied=True`` if it was inserted; else the existing
            operation with ``applied=False``.
        :raises StoreError: if the store keeps no request ids (the default), or if an
            operation named as *record* exists already.
        """
        raise StoreError(f"{type(self).__name__} does not keep request ids (it has no create_once)")

    @abc.abstractmethod
    async def get(self, name: str) -> OperationRecord | None:
        """Return the operation called *name*, or None."""

    @abc.abstractmethod
    async def set_metadata(
        self, name: str, metadata: any_pb2.Any, update_time: int
    ) -> Written | None:
        """Replace the metadata of a running operation.

        :return: None if there is no such operation; ``applied=False`` if it is done.
        """

    @abc.abstractmethod
    async def finish(
        self,
        name: str,
        update_time: int,
        *,
        response: any_pb2.Any | None = None,
        error: status_pb2.Status | None = None,
    ) -> Written | None:
        """Mark a running operation done with exactly one of *response* or *error*.

        The write is conditional: if the operation is done already nothing changes and
        the current record comes back with ``applied=False``. Of any number of racing
        finishes exactly one is applied.

        :return: None if there is no such operation.
        """

    @abc.abstractmethod
    async def delete(self, name: str) -> bool:
        """Remove the operation; return whether it existed."""

    @abc.abstractmethod
    async def list(
        self,
        parent: str | None,
        *,
        filter: Filter | None = None,
        after: PageKey | None = None,
        limit: int,
    ) -> Records:
        """Return up to *limit* operations ordered by ``(create_time, name)``.

        :param parent: only operations with this parent (``""``: top-level ones); None: all.
        :param filter: only operations it matches (a store may translate it to a query;
            ``filter.matches(record)`` is the reference semantics).
        :param after: only operations whose page key is greater than this.
        """

    @abc.abstractmethod
    async def expire(self, done_before: int, limit: int) -> int:
        """Delete up to *limit* done operations whose update_time is before *done_before*.

        :return: how many were deleted.
        """

    @abc.abstractmethod
    async def running(self, limit: int, after: str | None = None) -> Records:
        """Return up to *limit* operations that are not done, ordered by name after *after*."""

    async def renew(self, owner: str, expires: int, names: Collection[str]) -> int:
        """Extend the leases that *owner* holds on those of *names* not done; return how many.

        The owner names what it still runs (or has yet to record the end of): a lease it
        holds on anything else is left to run out, so other replicas finish that
        operation with ABORTED. Names it holds no lease on are passed over.

        Only stores shared by several processes need leases; the default keeps none.
        """
        return 0

    async def expired_leases(self, now: int, limit: int) -> Records:
        """Return up to *limit* operations not done whose lease expired before *now*."""
        return []

    async def shared_secret(self) -> bytes | None:
        """A random secret all processes sharing this store agree on (e.g. to sign page
        tokens that any replica accepts); None if the store is not shared."""
        return None
