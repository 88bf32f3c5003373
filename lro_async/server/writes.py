"""Writes: the manager's writing side, every change to an operation's record.

Creating (unique, increasing page keys; AIP-155 request ids; a lease on a shared store),
progress, ends and deletes go through one :class:`Writes`, which wakes the hub after
each applied write and reports starts and ends to telemetry. It checks no argument and
knows nothing of tasks: the manager does both before it calls here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from ..errors import InvalidArgument
from ..names import new_name
from ..protobuf import pack
from ..stores.base import Lease, OperationRecord, now_us

if TYPE_CHECKING:
    from google.protobuf import any_pb2
    from google.protobuf.message import Message
    from google.rpc import status_pb2
    from opentelemetry.trace import Span

    from ..stores.base import OperationStore, Written
    from .hub import Hub
    from .reads import Reads

__all__ = ["Writes"]


class Writes:
    """Changing operations for a manager; see the module's docstring."""

    def __init__(
        self,
        store: OperationStore,
        hub: Hub,
        reads: Reads,
        *,
        replica: str,
        lease: float | None,
        max_metadata_bytes: int,
        max_response_bytes: int,
        spans: dict[str, Span],
    ) -> None:
        """:param lease: seconds of a new operation's lease; None: the store is not shared.
        :param spans: the life spans of the operations run here (the manager's tasks
            put them in), by name; a written end takes its operation's out and ends it.
        """
        self._store = store
        self._hub = hub
        self._reads = reads
        self._telemetry = reads.telemetry
        self._replica = replica
        self._lease_us = None if lease is None else int(lease * 1e6)
        self._max_metadata = max_metadata_bytes
        self._max_response = max_response_bytes
        self._spans = spans
        self._last_create_us = 0
        self._burst = _Burst()

    def metadata(self, metadata: Message) -> any_pb2.Any:
        """*metadata* packed in an Any.

        :raises InvalidArgument: it is larger than ``max_metadata_bytes``.
        """
        packed = pack(metadata)
        _check_size(packed.ByteSize(), self._max_metadata, "metadata")
        return packed

    def response(self, response: Message | None) -> any_pb2.Any:
        """*response* (None: ``google.protobuf.Empty``) packed in an Any.

        :raises InvalidArgument: it is larger than ``max_response_bytes``.
        """
        packed = pack(response if response is not None else empty_pb2.Empty())
        _check_size(packed.ByteSize(), self._max_response, "response")
        return packed

    def error(self, error: status_pb2.Status) -> status_pb2.Status:
        """*error*, checked against ``max_metadata_bytes``."""
        _check_size(error.ByteSize(), self._max_metadata, "error status")
        return error

    async def create(
        self, parent: str, packed: any_pb2.Any | None, request_id: str | None, *, leased: bool
    ) -> tuple[operations_pb2.Operation, bool, Lease | None]:
        """Create an operation; return it, whether it is new (else *request_id*'s), its lease."""
        now = max(now_us(), self._last_create_us + 1)  # unique, increasing page keys
        self._last_create_us = now
        operation = operations_pb2.Operation(name=new_name(parent))
        if packed is not None:
            operation.metadata.CopyFrom(packed)
        lease_us = self._lease_us
        lease = Lease(self._replica, now + lease_us) if leased and lease_us is not None else None
        record = OperationRecord(operation, now, now)
        store = self._store
        if request_id is None:
            await store.create(record, lease=lease)
            self._created(operation.name)
            return operation, True, lease
        while True:
            written = await store.create_once(record, request_id, lease=lease)
            if written.applied:
                self._created(operation.name)
                return operation, True, lease
            if not self._reads.expired(written.record):
                return written.record.operation, False, None
            # Expired, not yet swept: gone for everyone, so its request id is free again.
            await store.delete(written.record.name)

    def _created(self, name: str) -> None:
        self._hub.notify(name)  # for collection watches
        if self._telemetry is not None:
            self._telemetry.operation_started()

    async def set_metadata(self, name: str, packed: any_pb2.Any) -> Written | None:
        """Replace a running operation's metadata; None: no such operation."""
        written = await self._store.set_metadata(name, packed, now_us())
        if written is not None and written.applied:
            self._hub.notify(name)
        return written

    async def finish(
        self,
        name: str,
        *,
        response: any_pb2.Any | None = None,
        error: status_pb2.Status | None = None,
    ) -> Written | None:
        """Record an operation's end and wake its waiters; None: no such operation."""
        written = await self._store.finish(name, now_us(), response=response, error=error)
        if written is not None and written.applied:
            record = written.record
            self._hub.notify(
                name, final=True, outcome=record.operation, finished=record.update_time
            )
            if self._telemetry is not None:
                self._telemetry.operation_finished(self._spans.pop(name, None), record)
            self._burst.count()
        return written

    async def pace(self) -> None:
        """Yield once after :data:`BURST` ends written while the event loop did not turn:
        a loop finishing thousands by hand on a store that never suspends lets the waiters
        those ends woke be answered as it goes, not all after it."""
        if self._burst.full():
            await asyncio.sleep(0)

    async def delete(self, name: str) -> bool:
        """Delete an operation's record and wake its waiters; False: no such operation."""
        if not await self._store.delete(name):
            return False
        self._hub.notify(name, final=True)
        return True


BURST = 64
"""Ends written while the event loop does not turn, after which the writer yields once."""


class _Burst:
    """Counts writes made between two turns of the event loop."""

    __slots__ = ("_count",)

    def __init__(self) -> None:
        self._count = 0

    def count(self) -> None:
        if not self._count:  # the first since the loop turned: reset at the next turn
            asyncio.get_running_loop().call_soon(self._turned)
        self._count += 1

    def full(self) -> bool:
        """Whether :data:`BURST` writes were made since the loop last turned."""
        return self._count >= BURST

    def _turned(self) -> None:
        self._count = 0


def _check_size(size: int, limit: int, what: str) -> None:
    """Refuse *what* of *size* bytes over *limit*."""
    if size > limit:
        raise InvalidArgument(f"the {what} is {size} bytes packed; the limit is {limit}")
