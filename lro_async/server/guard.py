"""GuardedStore: the manager's view of its store, where no call hangs or escapes unmapped.

Every call is bounded by a timeout, and any failure other than the store's own
:class:`StoreError` becomes one (logged once with its traceback), so a store that
raises or stalls gives clients UNAVAILABLE, never a hang or a bare INTERNAL; when the
store recovers, so does the server, with nothing to reset. With telemetry, every call's
duration and every failure are measured here too (``lro_async.store.call.duration``,
``lro_async.store.errors``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, TypeVar

from ..errors import LroError, StoreError
from ..stores.base import OperationStore

if TYPE_CHECKING:
    from google.protobuf import any_pb2
    from google.rpc import status_pb2

    from ..filtering import Filter
    from ..stores.base import Lease, OperationRecord, PageKey, Records, Written
    from ..telemetry import Telemetry

__all__ = ["GuardedStore"]

logger = logging.getLogger("lro_async")

T = TypeVar("T")


class GuardedStore(OperationStore):
    """Wraps *store*: each call ends within *timeout* seconds or raises :class:`StoreError`.

    :param telemetry: where call durations and errors are reported (None: nowhere).
    """

    def __init__(
        self, store: OperationStore, timeout: float, telemetry: Telemetry | None = None
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"store_timeout must be positive, not {timeout!r}")
        self.store = store
        self.timeout = timeout
        self.telemetry = telemetry
        self.recheck_interval = store.recheck_interval
        self.wait_reads = store.wait_reads
        self.read_only = store.read_only

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        telemetry = self.telemetry
        if telemetry is None:
            return await self._bounded(what, call)
        started = time.perf_counter()
        failed = False
        try:
            return await self._bounded(what, call)
        except StoreError:
            failed = True
            raise
        finally:
            telemetry.store_call(what, time.perf_counter() - started, failed)

    async def _bounded(self, what: str, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except (LroError, ValueError):
            raise
        except TimeoutError as exc:
            raise StoreError(f"the store did not answer {what} within {self.timeout:g}s") from exc
        except Exception as exc:
            logger.exception("the store failed in %s", what)
            raise StoreError(f"the store failed in {what}: {type(exc).__name__}") from exc

    async def open(
        self,
        notify: Callable[[str], None] | None = None,
        *,
        notify_all: Callable[[], None] | None = None,
    ) -> None:
        await self._call("open", self.store.open(notify, notify_all=notify_all))

    async def aclose(self) -> None:
        await self._call("aclose", self.store.aclose())

    async def create(self, record: OperationRecord, *, lease: Lease | None = None) -> None:
        await self._call("create", self.store.create(record, lease=lease))

    async def create_once(
        self, record: OperationRecord, request_id: str, *, lease: Lease | None = None
    ) -> Written:
        call = self.store.create_once(record, request_id, lease=lease)
        return await self._call("create_once", call)

    async def get(self, name: str) -> OperationRecord | None:
        return await self._call("get", self.store.get(name))

    async def set_metadata(
        self, name: str, metadata: any_pb2.Any, update_time: int
    ) -> Written | None:
        return await self._call(
            "set_metadata", self.store.set_metadata(name, metadata, update_time)
        )

    async def finish(
        self,
        name: str,
        update_time: int,
        *,
        response: any_pb2.Any | None = None,
        error: status_pb2.Status | None = None,
    ) -> Written | None:
        call = self.store.finish(name, update_time, response=response, error=error)
        return await self._call("finish", call)

    async def delete(self, name: str) -> bool:
        return await self._call("delete", self.store.delete(name))

    async def list(
        self,
        parent: str | None,
        *,
        filter: Filter | None = None,
        after: PageKey | None = None,
        limit: int,
    ) -> Records:
        call = self.store.list(parent, filter=filter, after=after, limit=limit)
        return await self._call("list", call)

    async def expire(self, done_before: int, limit: int) -> int:
        return await self._call("expire", self.store.expire(done_before, limit))

    async def running(self, limit: int, after: str | None = None) -> Records:
        return await self._call("running", self.store.running(limit, after))

    async def renew(self, owner: str, expires: int, names: Collection[str]) -> int:
        return await self._call("renew", self.store.renew(owner, expires, names))

    async def expired_leases(self, now: int, limit: int) -> Records:
        return await self._call("expired_leases", self.store.expired_leases(now, limit))

    async def shared_secret(self) -> bytes | None:
        return await self._call("shared_secret", self.store.shared_secret())
