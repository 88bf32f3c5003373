"""as_completed and gather: waiting for thousands of operations at once.

Neither starts a task per operation: each operation's shared waiter reports its end to a
queue, so the cost of a batch is the operations' own waiters (one per name, shared with
any other awaiter) plus one queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from google.longrunning import operations_pb2

from ..errors import OperationTimeout

if TYPE_CHECKING:
    from .operation import AsyncOperation
    from .waiting import Ticket, Waiter

__all__ = ["as_completed", "gather"]

R = TypeVar("R")
M = TypeVar("M")

_Finished = tuple["AsyncOperation[Any, Any]", Exception | None]


class _Sink:
    """Puts one operation on the batch queue when its waiter sees the end."""

    __slots__ = ("_op", "_queue")

    def __init__(self, op: AsyncOperation[Any, Any], queue: asyncio.Queue[_Finished]) -> None:
        self._op = op
        self._queue = queue

    def _operation_changed(self, operation: operations_pb2.Operation) -> None:
        if operation.done:
            self._queue.put_nowait((self._op, None))

    def _wait_failed(self, error: Exception) -> None:
        self._queue.put_nowait((self._op, error))


async def _finishing(
    ops: list[AsyncOperation[Any, Any]], timeout: float | None
) -> AsyncGenerator[_Finished, None]:
    """Yield ``(op, wait error or None)`` as each op ends; leave every waiter at the end."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    queue: asyncio.Queue[_Finished] = asyncio.Queue()
    joined: list[tuple[Waiter, Ticket]] = []
    try:
        for op in ops:
            if op.done:
                queue.put_nowait((op, None))
            else:
                joined.append(op._join(_Sink(op, queue), deadline=deadline))
        for remaining in range(len(ops), 0, -1):
            try:
                async with asyncio.timeout_at(deadline):
                    finished = await queue.get()
            except TimeoutError:
                raise OperationTimeout(
                    f"{remaining} of {len(ops)} operations not done after {timeout} s; "
                    "they keep running"
                ) from None
            yield finished
    finally:
        tasks = [task for waiter, ticket in joined for task in waiter.release(ticket)]
        if tasks:
            await asyncio.wait(tasks)


async def as_completed(
    ops: Iterable[AsyncOperation[R, M]], *, timeout: float | None = None
) -> AsyncGenerator[AsyncOperation[R, M], None]:
    """Yield each operation as it finishes (or as waiting for it fails).

    Await a yielded operation for its result: a done one answers without an RPC. Use
    ``contextlib.aclosing`` to stop waiting for the rest at a ``break``.

    Example::

        async for op in as_completed(ops, timeout=600):
            print(op.name, await op.exception())

    :param ops: the operations; an operation listed twice is yielded twice.
    :param timeout: seconds for the whole batch; None: no limit.
    :raises OperationTimeout: *timeout* passed before every operation finished; the
        remote operations keep running.
    """
    batch: list[AsyncOperation[Any, Any]] = list(ops)
    async with contextlib.aclosing(_finishing(batch, timeout)) as finishing:
        async for op, _ in finishing:
            yield op


@overload
async def gather(
    *ops: AsyncOperation[R, Any],
    return_exceptions: Literal[False] = False,
    timeout: float | None = None,
) -> list[R]: ...
@overload
async def gather(
    *ops: AsyncOperation[R, Any],
    return_exceptions: Literal[True],
    timeout: float | None = None,
) -> list[R | Exception]: ...
async def gather(
    *ops: AsyncOperation[Any, Any],
    return_exceptions: bool = False,
    timeout: float | None = None,
) -> list[Any]:
    """Wait for every operation; return their responses in the order given.

    Example::

        responses = await gather(*ops, timeout=600)

    :param return_exceptions: put each error (:class:`OperationFailed`, :class:`RpcError`,
        ...) in the list instead of raising the first one.
    :param timeout: seconds for the whole batch; None: no limit.
    :raises OperationFailed: (and any other error of one operation) without
        *return_exceptions*, the first to occur; the other operations are no longer waited
        for, and keep running.
    :raises OperationTimeout: *timeout* passed first, whatever *return_exceptions* says.
    """
    positions: dict[int, list[int]] = {}
    for index, op in enumerate(ops):
        positions.setdefault(id(op), []).append(index)
    unique = list({id(op): op for op in ops}.values())
    results: list[Any] = [None] * len(ops)
    async with contextlib.aclosing(_finishing(unique, timeout)) as finishing:
        async for op, error in finishing:
            outcome: Any = error
            if error is None:
                try:
                    outcome = op._outcome(op.operation)
                except Exception as exc:
                    outcome = exc
            if isinstance(outcome, Exception) and not return_exceptions:
                raise outcome
            for index in positions[id(op)]:
                results[index] = outcome
    return results
