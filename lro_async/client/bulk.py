"""Bulk cancel and delete: one RPC per listed operation, a bounded number at once.

:meth:`~lro_async.AsyncOperationsClient.cancel_operations` and
:meth:`~lro_async.AsyncOperationsClient.delete_operations` list what a filter matches
(ListOperations, page after page: the same over gRPC and HTTP), then act on each name
with at most *concurrency* RPCs in flight, and sum up in a :class:`BulkResult`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal, TypeAlias

from google.longrunning import operations_pb2

from ..errors import OperationNotFound, RpcError

__all__ = ["BulkResult", "Outcome", "act_on"]

#: What happened to one operation: acted on, skipped (already done, or gone), or failed.
Outcome: TypeAlias = Literal["done", "skipped", "failed"]

#: Called after each operation with its name, its outcome and, if it failed, the error.
OnResult: TypeAlias = Callable[[str, Outcome, RpcError | None], None]


@dataclasses.dataclass(frozen=True)
class BulkResult:
    """The summary of a bulk cancel or delete, in the order the listing gave the names.

    >>> result = BulkResult(done=("operations/a",), skipped=(), failed=())
    >>> result.matched, result.ok
    (1, True)

    :param done: the operations cancelled (or deleted).
    :param skipped: the operations left alone: for cancel, those already done when listed;
        for either, those gone (deleted by someone else) before their turn.
    :param failed: ``(name, error)`` for each operation the server refused or could not
        reach, e.g. a :class:`~lro_async.PermissionDenied`.
    """

    done: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[tuple[str, RpcError], ...]

    @property
    def matched(self) -> int:
        """How many operations the filter matched."""
        return len(self.done) + len(self.skipped) + len(self.failed)

    @property
    def ok(self) -> bool:
        """True when nothing failed (every operation done or skipped)."""
        return not self.failed


async def act_on(
    operations: Iterable[operations_pb2.Operation],
    action: Callable[[str], Awaitable[None]],
    *,
    skip_done: bool,
    concurrency: int,
    on_result: OnResult | None = None,
) -> BulkResult:
    """Run *action* on each operation's name, *concurrency* at a time; sum up.

    An operation not found when its turn comes counts as skipped (someone else deleted
    it); any other :class:`RpcError` as failed. Other exceptions end the whole run (the
    actions still in flight are cancelled).

    :param skip_done: skip operations already done as listed, without an RPC (cancel).
    :raises ValueError: if *concurrency* is below 1.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency!r}")
    listed = list(operations)
    outcomes: dict[str, tuple[Outcome, RpcError | None]] = {}
    slots = asyncio.Semaphore(concurrency)

    def record(name: str, outcome: Outcome, error: RpcError | None = None) -> None:
        outcomes[name] = (outcome, error)
        if on_result is not None:
            on_result(name, outcome, error)

    async def one(name: str) -> None:
        async with slots:
            try:
                await action(name)
            except OperationNotFound:
                record(name, "skipped")
            except RpcError as exc:
                record(name, "failed", exc)
            else:
                record(name, "done")

    async with asyncio.TaskGroup() as group:
        for operation in listed:
            if operation.name in outcomes:
                continue  # listed twice (it moved between pages): act once
            if skip_done and operation.done:
                record(operation.name, "skipped")
            else:
                outcomes[operation.name] = ("skipped", None)  # a placeholder, in order
                group.create_task(one(operation.name))
    names = list(outcomes)
    return BulkResult(
        done=tuple(n for n in names if outcomes[n][0] == "done"),
        skipped=tuple(n for n in names if outcomes[n][0] == "skipped"),
        failed=tuple((n, e) for n in names if (e := outcomes[n][1]) is not None),
    )
