"""AsyncOperation: an awaitable, typed view of one long-running operation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

import grpc
from google.longrunning import operations_pb2
from google.protobuf import any_pb2

from ..errors import OperationFailed, OperationTimeout, UnexpectedOperationState
from ..protobuf import check_message_type, describe, unpack
from .tokens import encode_token

if TYPE_CHECKING:
    from .operations import AsyncOperationsClient
    from .waiting import Observer, Ticket, Waiter

__all__ = ["AsyncOperation"]

# Protobuf messages, proto-plus messages, or the packed Any when no type is given.
ResultT = TypeVar("ResultT")
MetadataT = TypeVar("MetadataT")
R = TypeVar("R")
M = TypeVar("M")

_CANCELLED = grpc.StatusCode.CANCELLED.value[0]


class AsyncOperation(Generic[ResultT, MetadataT]):
    """A long-running operation you can await, typed by its response and metadata.

    Every AsyncOperation of one name on one client shares a single waiter task and one
    stream of RPCs, however many tasks await it. Nothing happens until something awaits
    it (or iterates :meth:`progress`); creating one makes no RPC and needs no event loop.

    Example::

        op = client.operation("operations/42", result_type=Resp, metadata_type=Md)
        async for md in op.progress():
            print(md)
        resp = await op  # Resp, or raises OperationFailed

    :param operation: the operation, or just its name (to resume waiting by name).
    :param client: the client whose RPCs it uses.
    :param result_type: the message type of the response (a protobuf or a proto-plus
        class); None keeps the packed ``Any``.
    :param metadata_type: the message type of the metadata; None keeps the packed ``Any``.
    :raises TypeError: a type that is neither a protobuf nor a proto-plus message class.
    """

    # Thousands are awaited at once: slots, one name string, and no proto until a state
    # is seen (an Operation made only to hold a name costs some 550 bytes). Weak
    # references still work (a cache of operations by name, say).
    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_client",
        "_metadata_type",
        "_name",
        "_operation",
        "_result_type",
    )

    def __init__(
        self,
        operation: operations_pb2.Operation | str,
        client: AsyncOperationsClient,
        *,
        result_type: type[ResultT] | None = None,
        metadata_type: type[MetadataT] | None = None,
    ) -> None:
        name = operation if isinstance(operation, str) else operation.name
        if not name:
            raise ValueError("an operation needs a name")
        if result_type is not None:
            check_message_type(result_type, what="result_type")
        if metadata_type is not None:
            check_message_type(metadata_type, what="metadata_type")
        self._name = name
        # The latest state seen; None until one is (an operation resumed by name).
        self._operation: operations_pb2.Operation | None = (
            None if isinstance(operation, str) else operation
        )
        self._client = client
        self._result_type = result_type
        self._metadata_type = metadata_type
        # A tuple: () costs nothing, and thousands of operations have no callback.
        self._callbacks: tuple[Callable[[AsyncOperation[ResultT, MetadataT]], object], ...] = ()

    @overload
    @classmethod
    def from_operation(
        cls,
        operation: operations_pb2.Operation,
        client: AsyncOperationsClient,
        *,
        result_type: type[R],
        metadata_type: type[M],
    ) -> AsyncOperation[R, M]: ...
    @overload
    @classmethod
    def from_operation(
        cls,
        operation: operations_pb2.Operation,
        client: AsyncOperationsClient,
        *,
        result_type: type[R],
        metadata_type: None = None,
    ) -> AsyncOperation[R, any_pb2.Any]: ...
    @overload
    @classmethod
    def from_operation(
        cls,
        operation: operations_pb2.Operation,
        client: AsyncOperationsClient,
        *,
        result_type: None = None,
        metadata_type: type[M],
    ) -> AsyncOperation[any_pb2.Any, M]: ...
    @overload
    @classmethod
    def from_operation(
        cls,
        operation: operations_pb2.Operation,
        client: AsyncOperationsClient,
        *,
        result_type: None = None,
        metadata_type: None = None,
    ) -> AsyncOperation[any_pb2.Any, any_pb2.Any]: ...
    @classmethod
    def from_operation(
        cls,
        operation: operations_pb2.Operation,
        client: AsyncOperationsClient,
        *,
        result_type: type[Any] | None = None,
        metadata_type: type[Any] | None = None,
    ) -> AsyncOperation[Any, Any]:
        """Wrap an Operation proto returned by any service's RPC (or by google-api-core).

        The proto is copied; no RPC is made.

        :param operation: e.g. the answer of a ``CreateThing`` RPC, or ``op.operation`` of a
            google-api-core ``AsyncOperation``.
        """
        copy = operations_pb2.Operation()
        copy.CopyFrom(operation)
        return AsyncOperation(copy, client, result_type=result_type, metadata_type=metadata_type)

    # -- local state (no RPC) -----------------------------------------------------------

    @property
    def name(self) -> str:
        """The operation's name, e.g. ``"projects/p/operations/42"``."""
        return self._name

    @property
    def operation(self) -> operations_pb2.Operation:
        """The latest Operation proto seen (do not mutate it); only the name before any."""
        operation = self._operation
        if operation is None:
            operation = self._operation = operations_pb2.Operation(name=self._name)
        return operation

    @property
    def done(self) -> bool:
        """Whether the operation is known to be done."""
        return self._operation is not None and self._operation.done

    @property
    def metadata(self) -> MetadataT | None:
        """The latest metadata, unpacked to ``metadata_type``; None if it has none.

        :raises UnexpectedOperationState: if the metadata is of another type.
        """
        operation = self._operation
        if operation is None or not operation.HasField("metadata"):
            return None
        return self._unpack_metadata(operation.metadata)

    def cancelled(self) -> bool:
        """Whether the operation is known to have finished with CANCELLED."""
        operation = self._operation
        return (
            operation is not None
            and operation.done
            and operation.HasField("error")
            and operation.error.code == _CANCELLED
        )

    def __repr__(self) -> str:
        return f"<AsyncOperation {describe(self.operation)}>"

    # -- waiting ------------------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, ResultT]:
        if self.done:
            return _ready(self._outcome(self.operation))
        # One generator frame for the whole wait: thousands of awaits hold no more.
        return self._client._waiters.waiting(self._name, self, self._outcome)

    async def result(self, timeout: float | None = None) -> ResultT:
        """Wait until the operation is done and return its response.

        :param timeout: seconds to wait at most; None waits as long as it takes.
        :raises OperationFailed: the operation failed (:class:`OperationCancelled` if cancelled).
        :raises OperationTimeout: *timeout* passed first; the remote operation keeps running.
        :raises UnexpectedOperationState: done without a result, or one of another type.
        :raises RpcError: waiting failed for good (e.g. :class:`OperationNotFound`).
        """
        if timeout is None:
            return await self
        return self._outcome(await self._wait(timeout))

    async def exception(self, timeout: float | None = None) -> Exception | None:
        """Wait until the operation is done and return the error :meth:`result` would raise.

        :return: None if it succeeded, else the :class:`OperationFailed` (or the
            :class:`UnexpectedOperationState`).
        :raises OperationTimeout: *timeout* passed first.
        :raises RpcError: waiting failed for good.
        """
        operation = await self._wait(timeout)
        try:
            self._outcome(operation)
        except (OperationFailed, UnexpectedOperationState) as exc:
            return exc
        return None

    async def cancel(self, *, timeout: float | None = None) -> bool:
        """Ask the server to cancel the operation (CancelOperation).

        The operation ends later, with CANCELLED, unless it finishes first; await it to know.

        :return: False, without an RPC, if the operation is known to be done; else True.
        :raises RpcError: e.g. :class:`OperationNotFound`.
        """
        if self.done:
            return False
        await self._client.cancel_operation(self.name, timeout=timeout)
        return True

    async def refresh(self, *, timeout: float | None = None) -> operations_pb2.Operation:
        """Fetch the operation's latest state now (one GetOperation) and return it.

        A done operation answers without an RPC. Seeing it done runs the done callbacks.

        :raises RpcError: e.g. :class:`OperationNotFound`.
        """
        if self.done:
            return self.operation
        operation = await self._client.get_operation(self.name, timeout=timeout)
        if not self.done:  # a waiter may have seen the end meanwhile
            self._operation_changed(operation)
        return self.operation

    async def progress(self) -> AsyncGenerator[MetadataT, None]:
        """Yield the metadata now and each time it changes; end when the operation is done.

        Against lro_async's server every change at least one round trip apart is seen;
        against other servers the metadata is polled while someone iterates. Use
        ``contextlib.aclosing`` to stop listening at a ``break`` without waiting for
        garbage collection.

        :raises RpcError: waiting failed for good (an operation that fails just ends).
        """
        async with contextlib.aclosing(self._changes()) as changes:
            async for operation in changes:
                yield self._unpack_metadata(operation.metadata)

    async def until(
        self, predicate: Callable[[MetadataT], object], timeout: float | None = None
    ) -> MetadataT:
        """Wait until the metadata satisfies *predicate*; return that metadata.

        The current metadata is checked first, then each change :meth:`progress` sees
        (sharing the one waiter of this operation), including the final metadata of an
        operation that succeeds.

        Example::

            md = await op.until(lambda md: md.percent >= 50, timeout=600)

        :param predicate: called with each metadata, unpacked to ``metadata_type``.
        :param timeout: seconds to wait at most; None waits as long as it takes.
        :raises OperationFailed: the operation failed first (:class:`OperationCancelled`
            if it was cancelled), whatever its last metadata says.
        :raises UnexpectedOperationState: the operation succeeded and not even its final
            metadata satisfies *predicate* (the condition can no longer come true).
        :raises OperationTimeout: *timeout* passed first; the remote operation keeps running.
        :raises RpcError: waiting failed for good.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0, not {timeout!r}")
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                return await self._until(predicate)
        except TimeoutError:
            if not limit.expired():
                raise
            raise OperationTimeout(
                f"the metadata of operation {self.name!r} did not satisfy the predicate "
                f"within {timeout} s; the operation keeps running"
            ) from None

    async def _until(self, predicate: Callable[[MetadataT], object]) -> MetadataT:
        async with contextlib.aclosing(self._changes()) as changes:
            async for operation in changes:
                if operation.done and operation.HasField("error"):
                    break
                metadata = self._unpack_metadata(operation.metadata)
                if predicate(metadata):
                    return metadata
        self._outcome(self.operation)  # raises the error of a failed operation
        raise UnexpectedOperationState(
            f"operation {self.name!r} succeeded but its metadata never satisfied the predicate"
        )

    def token(self) -> str:
        """A compact, URL-safe string from which another process resumes this operation.

        It carries the operation's name and the names of its result and metadata types
        (JSON, never pickle); pass it to ``client.operation_from_token``. It is not a
        secret and not a signature: access is whatever the server grants the caller.
        """
        return encode_token(self.name, self._result_type, self._metadata_type)

    def add_done_callback(self, fn: Callable[[AsyncOperation[ResultT, MetadataT]], object]) -> None:
        """Call ``fn(self)`` once, when the operation is seen done or waiting for it fails.

        A callback does not start waiting: it runs when something awaiting this operation
        (or iterating its progress) sees the end. If the operation is already done it is
        scheduled at once. Timeouts and cancellation of an awaiter do not call it.
        """
        if self.done:
            self._schedule(fn)
        else:
            self._callbacks += (fn,)

    def remove_done_callback(
        self, fn: Callable[[AsyncOperation[ResultT, MetadataT]], object]
    ) -> int:
        """Remove every registration of *fn*; return how many were removed."""
        before = len(self._callbacks)
        self._callbacks = tuple(cb for cb in self._callbacks if cb != fn)
        return before - len(self._callbacks)

    # -- internals ----------------------------------------------------------------------

    async def _changes(self) -> AsyncGenerator[operations_pb2.Operation, None]:
        """Yield the state now if it has metadata, then each state with changed metadata."""
        current = self.operation
        last: any_pb2.Any | None = None
        if current.HasField("metadata"):
            last = current.metadata
            yield current
        if current.done:
            return
        waiter, ticket = self._join(progress=True)
        try:
            async with contextlib.aclosing(waiter.updates()) as updates:
                async for operation in updates:
                    if operation.HasField("metadata") and operation.metadata != last:
                        last = operation.metadata
                        yield operation
        finally:
            await waiter.leave(ticket)

    def _join(
        self, *also: Observer, deadline: float | None = None, progress: bool = False
    ) -> tuple[Waiter, Ticket]:
        return self._client._waiters.join(
            self.name, (self, *also), deadline=deadline, progress=progress
        )

    async def _wait(self, timeout: float | None) -> operations_pb2.Operation:
        if self.done:
            return self.operation
        deadline = None
        if timeout is not None:
            if timeout < 0:
                raise ValueError(f"timeout must be >= 0, not {timeout!r}")
            deadline = asyncio.get_running_loop().time() + timeout
        try:
            return await self._client._waiters.wait(self.name, self, deadline)
        except TimeoutError:
            raise OperationTimeout(
                f"operation {self.name!r} is not done after {timeout} s; it keeps running"
            ) from None

    def _outcome(self, operation: operations_pb2.Operation) -> ResultT:
        """Return the response of a done operation or raise its error."""
        if operation.HasField("error"):
            raise OperationFailed.from_status(operation.error, operation)
        if not operation.HasField("response"):
            raise UnexpectedOperationState(
                f"operation {operation.name!r} is done but has neither a response nor an error"
            )
        if self._result_type is None:
            return cast(ResultT, operation.response)
        return unpack(
            operation.response, self._result_type, what=f"response of operation {self.name!r}"
        )

    def _unpack_metadata(self, packed: any_pb2.Any) -> MetadataT:
        if self._metadata_type is None:
            return cast(MetadataT, packed)
        return unpack(packed, self._metadata_type, what=f"metadata of operation {self.name!r}")

    def _schedule(self, fn: Callable[[AsyncOperation[ResultT, MetadataT]], object]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            fn(self)
        else:
            loop.call_soon(fn, self)

    def _fire_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, ()
        for fn in callbacks:
            self._schedule(fn)

    # Observer protocol (waiting.Observer): called by the shared waiter.

    def _operation_changed(self, operation: operations_pb2.Operation) -> None:
        self._operation = operation
        if operation.done:
            self._fire_callbacks()

    def _wait_failed(self, error: Exception) -> None:
        self._fire_callbacks()


def _ready(value: R) -> Generator[Any, None, R]:
    """An awaitable's iterator that has *value* at once."""
    return value
    yield  # type: ignore[unreachable]  # makes this a generator function
