"""A synchronous face for scripts, Django views, Celery tasks and notebooks.

:class:`OperationsClient` runs an :class:`~lro_async.AsyncOperationsClient` on one
background thread with its own event loop (anyio's blocking portal), and hands out
:class:`Operation` objects whose methods block the calling thread. Any number of threads
may use one client at once: every call is carried out on the loop thread, so operations
still share one waiter per name. A thread that runs an event loop of its own (a
notebook cell) can call it too: the loop it waits on is not its own.

A blocking call waits in short slices, so Ctrl-C (``KeyboardInterrupt``) interrupts it,
and the wait it stood for is cancelled on the loop thread (the remote operation keeps
running). :meth:`OperationsClient.close` (or leaving ``with``) ends every wait and the
thread.

Example::

    with lro_async.sync.OperationsClient("localhost:50051") as client:
        op = client.operation(name, result_type=Resp, metadata_type=Md)
        for md in op.progress():
            print(md)
        resp = op.result(timeout=600)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ssl
import threading
from collections.abc import (
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, overload

import grpc
from anyio.from_thread import BlockingPortal, start_blocking_portal
from google.longrunning import operations_pb2
from google.protobuf import any_pb2

from .client.bulk import BulkResult
from .client.many import as_completed as _async_as_completed
from .client.operation import AsyncOperation
from .client.operations import ApiCoreOperation, AsyncOperationsClient
from .client.policy import WaitPolicy
from .client.transport import Metadata
from .client.watching import Change
from .errors import RpcError

__all__ = ["Operation", "OperationsClient", "as_completed"]

T = TypeVar("T")
R = TypeVar("R")
M = TypeVar("M")
ResultT = TypeVar("ResultT")
MetadataT = TypeVar("MetadataT")

#: How long a blocked thread waits at a time before checking for a signal again.
_SLICE = 0.2


def _block(future: concurrent.futures.Future[T]) -> T:
    """Wait for *future* in slices; on an interruption cancel what it stands for."""
    try:
        while not future.done():
            concurrent.futures.wait([future], timeout=_SLICE)
    except BaseException:  # KeyboardInterrupt, or whatever a signal handler raised
        future.cancel()
        raise
    return future.result()


class OperationsClient:
    """A blocking client of ``google.longrunning.Operations``, safe from many threads.

    Made from a target (the client makes and owns the channel) or from a channel factory
    (called on the loop thread; the client owns the channel it returns). Create and
    close it once, not per call: it owns a thread.

    Example::

        with OperationsClient("localhost:50051") as client:
            resp = client.operation(name, result_type=Resp).result(timeout=60)

    :param target: ``host:port`` of the Operations server.
    :param credentials: TLS credentials for *target* (``grpc.ssl_channel_credentials``);
        None: plaintext.
    :param options: gRPC channel options for *target*, e.g.
        ``[("grpc.max_receive_message_length", 1 << 24)]``.
    :param channel_factory: instead of a target: a callable returning a ``grpc.aio``
        channel, called once on the loop thread.
    :param metadata: request metadata sent with every RPC.
    :param policy: how operations are waited for.
    :raises ValueError: neither or both of *target* and *channel_factory*.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        channel_factory: Callable[[], grpc.aio.Channel] | None = None,
        metadata: Metadata = (),
        policy: WaitPolicy | None = None,
    ) -> None:
        if (target is None) == (channel_factory is None):
            raise ValueError("give either a target or a channel_factory")
        if channel_factory is None:
            assert target is not None
            channel_factory = _channel_factory(target, credentials, tuple(options))

        async def open_client() -> tuple[AsyncOperationsClient, Callable[[], Awaitable[None]]]:
            channel = channel_factory()
            if not isinstance(channel, grpc.aio.Channel):
                raise TypeError(
                    f"channel_factory must return a grpc.aio channel, not {type(channel)!r}"
                )
            client = AsyncOperationsClient(channel, metadata=metadata, policy=policy)

            async def close() -> None:
                try:
                    await client.aclose()
                finally:
                    await channel.close()

            return client, close

        self._start(open_client)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | Metadata = (),
        prefix: str = "/v1",
        policy: WaitPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Self:
        """A blocking client of an HTTP/JSON Operations server (needs the ``http`` extra).

        The parameters are those of :meth:`AsyncOperationsClient.from_url`.
        """

        async def open_client() -> tuple[AsyncOperationsClient, Callable[[], Awaitable[None]]]:
            client = AsyncOperationsClient.from_url(
                url, headers=headers, prefix=prefix, policy=policy, ssl_context=ssl_context
            )
            return client, client.aclose

        self = cls.__new__(cls)
        self._start(open_client)
        return self

    def _start(
        self,
        open_client: Callable[
            [], Awaitable[tuple[AsyncOperationsClient, Callable[[], Awaitable[None]]]]
        ],
    ) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._portal_cm = start_blocking_portal("asyncio")
        self._portal: BlockingPortal = self._portal_cm.__enter__()
        try:
            self._client, self._close = self._portal.call(open_client)
        except BaseException as exc:
            self._portal_cm.__exit__(type(exc), exc, exc.__traceback__)
            raise

    # -- lifetime -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """End every wait (with a CANCELLED :class:`RpcError`), close the channel, end the thread.

        Remote operations are not cancelled. Closing twice is harmless.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._portal.call(self._close)
            self._portal.call(self._portal.stop, True)
        finally:
            self._portal_cm.__exit__(None, None, None)

    @property
    def async_client(self) -> AsyncOperationsClient:
        """The client running on the loop thread (use it only from that thread)."""
        return self._client

    def run(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        """Run ``await fn(*args)`` on the loop thread and return its value (interruptible).

        :raises RpcError: CANCELLED if the client is closed.
        """
        if self._closed:
            raise RpcError("the OperationsClient is closed", code=grpc.StatusCode.CANCELLED)
        try:
            future = self._portal.start_task_soon(fn, *args)
        except RuntimeError:  # the portal stopped between the check and the call
            raise RpcError(
                "the OperationsClient is closed", code=grpc.StatusCode.CANCELLED
            ) from None
        return _block(future)

    def iterate(self, generator: Any) -> Generator[Any, None, None]:
        """Iterate an async generator (made by the caller, run on the loop thread)."""
        try:
            while True:
                try:
                    item = self.run(generator.__anext__)
                except StopAsyncIteration:
                    return
                yield item
        finally:
            if not self._closed:
                with contextlib.suppress(RpcError):
                    self.run(generator.aclose)

    # -- operations -----------------------------------------------------------------------

    @overload
    def operation(
        self,
        operation: ApiCoreOperation,
        *,
        result_type: None = None,
        metadata_type: None = None,
    ) -> Operation[Any, Any]: ...
    @overload
    def operation(
        self,
        operation: operations_pb2.Operation | str | ApiCoreOperation,
        *,
        result_type: type[R],
        metadata_type: type[M],
    ) -> Operation[R, M]: ...
    @overload
    def operation(
        self,
        operation: operations_pb2.Operation | str | ApiCoreOperation,
        *,
        result_type: type[R],
        metadata_type: None = None,
    ) -> Operation[R, any_pb2.Any]: ...
    @overload
    def operation(
        self,
        operation: operations_pb2.Operation | str | ApiCoreOperation,
        *,
        result_type: None = None,
        metadata_type: type[M],
    ) -> Operation[any_pb2.Any, M]: ...
    @overload
    def operation(
        self,
        operation: operations_pb2.Operation | str,
        *,
        result_type: None = None,
        metadata_type: None = None,
    ) -> Operation[any_pb2.Any, any_pb2.Any]: ...
    def operation(
        self,
        operation: operations_pb2.Operation | str | ApiCoreOperation,
        *,
        result_type: type[Any] | None = None,
        metadata_type: type[Any] | None = None,
    ) -> Operation[Any, Any]:
        """Return an :class:`Operation` for a name, an Operation proto or an api-core operation.

        No RPC is made; the parameters are those of :meth:`AsyncOperationsClient.operation`.

        :raises TypeError: a type that is not a protobuf or proto-plus message class.
        """
        return Operation(
            self._client.operation(
                operation,
                result_type=result_type,
                metadata_type=metadata_type,
            ),
            self,
        )

    def operation_from_token(self, token: str) -> Operation[Any, Any]:
        """Return the operation an ``op.token()`` names, typed as it was, without an RPC.

        :raises ValueError: a malformed, truncated or altered token, or an unknown type.
        """
        return Operation(self._client.operation_from_token(token), self)

    def as_completed(
        self, ops: Iterable[Operation[R, M]], *, timeout: float | None = None
    ) -> Generator[Operation[R, M], None, None]:
        """Yield each operation as it finishes; see :func:`lro_async.as_completed`.

        :raises OperationTimeout: *timeout* passed first; the operations keep running.
        :raises ValueError: an operation of another client.
        """
        batch = list(ops)
        by_async: dict[int, Operation[R, M]] = {}
        for op in batch:
            if op._client is not self:
                raise ValueError(f"{op!r} belongs to another OperationsClient")
            by_async[id(op._op)] = op
        generator = _async_as_completed([op._op for op in batch], timeout=timeout)
        for finished in self.iterate(generator):
            yield by_async[id(finished)]

    # -- the RPCs -------------------------------------------------------------------------

    def get_operation(
        self, name: str, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> operations_pb2.Operation:
        """GetOperation; see :meth:`AsyncOperationsClient.get_operation`."""
        return self.run(_call(self._client.get_operation, name, timeout, metadata))

    def cancel_operation(
        self, name: str, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> None:
        """CancelOperation; see :meth:`AsyncOperationsClient.cancel_operation`."""
        self.run(_call(self._client.cancel_operation, name, timeout, metadata))

    def delete_operation(
        self, name: str, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> None:
        """DeleteOperation; see :meth:`AsyncOperationsClient.delete_operation`."""
        self.run(_call(self._client.delete_operation, name, timeout, metadata))

    def list_operations(
        self, parent: str, *, filter: str = "", page_size: int = 0, timeout: float | None = None
    ) -> Iterator[operations_pb2.Operation]:
        """ListOperations, page after page; see :meth:`AsyncOperationsClient.list_operations`."""
        return self.iterate(
            self._client.list_operations(
                parent, filter=filter, page_size=page_size, timeout=timeout
            )
        )

    def watch(
        self,
        parent: str,
        *,
        filter: str = "",
        page_size: int = 0,
        metadata_changes: bool = False,
        metadata: Metadata = (),
    ) -> Generator[Change, None, None]:
        """Watch a collection: its operations, then every change, as a plain iterator; see
        :meth:`AsyncOperationsClient.watch`. Close it (``contextlib.closing``) to stop at a
        ``break`` at once rather than at garbage collection."""
        return self.iterate(
            self._client.watch(
                parent,
                filter=filter,
                page_size=page_size,
                metadata_changes=metadata_changes,
                metadata=metadata,
            )
        )

    def count_operations(
        self, parent: str, *, filter: str = "", timeout: float | None = None
    ) -> int:
        """How many match; see :meth:`AsyncOperationsClient.count_operations`."""
        client = self._client

        def call() -> Awaitable[int]:
            return client.count_operations(parent, filter=filter, timeout=timeout)

        return self.run(call)

    def cancel_operations(
        self,
        parent: str,
        *,
        filter: str = "",
        concurrency: int = 16,
        timeout: float | None = None,
    ) -> BulkResult:
        """Cancel what matches; see :meth:`AsyncOperationsClient.cancel_operations`."""
        client = self._client

        def call() -> Awaitable[BulkResult]:
            return client.cancel_operations(
                parent, filter=filter, concurrency=concurrency, timeout=timeout
            )

        return self.run(call)

    def delete_operations(
        self,
        parent: str,
        *,
        filter: str = "",
        concurrency: int = 16,
        timeout: float | None = None,
    ) -> BulkResult:
        """Delete what matches; see :meth:`AsyncOperationsClient.delete_operations`."""
        client = self._client

        def call() -> Awaitable[BulkResult]:
            return client.delete_operations(
                parent, filter=filter, concurrency=concurrency, timeout=timeout
            )

        return self.run(call)


def _call(
    method: Callable[..., Awaitable[T]], name: str, timeout: float | None, metadata: Metadata
) -> Callable[[], Awaitable[T]]:
    def call() -> Awaitable[T]:
        return method(name, timeout=timeout, metadata=metadata)

    return call


def _channel_factory(
    target: str, credentials: grpc.ChannelCredentials | None, options: tuple[tuple[str, Any], ...]
) -> Callable[[], grpc.aio.Channel]:
    def factory() -> grpc.aio.Channel:
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, credentials, options=options)

    return factory


class Operation(Generic[ResultT, MetadataT]):
    """A long-running operation whose methods block, made by :meth:`OperationsClient.operation`.

    Like google-api-core's ``operation.Operation``: :meth:`result`, :meth:`exception`,
    :meth:`done`, :meth:`cancel`, :attr:`metadata`; plus :meth:`progress` as an iterator,
    :meth:`until` and :meth:`token`.
    """

    def __init__(self, op: AsyncOperation[ResultT, MetadataT], client: OperationsClient) -> None:
        self._op = op
        self._client = client

    def __repr__(self) -> str:
        return repr(self._op).replace("<AsyncOperation", "<sync.Operation", 1)

    @property
    def name(self) -> str:
        return self._op.name

    @property
    def operation(self) -> operations_pb2.Operation:
        """The latest Operation proto seen (do not mutate it)."""
        return self._op.operation

    @property
    def metadata(self) -> MetadataT | None:
        """The latest metadata seen, unpacked; None if it has none (no RPC)."""
        return self._op.metadata

    @property
    def async_operation(self) -> AsyncOperation[ResultT, MetadataT]:
        """The AsyncOperation behind it (use it only from the client's loop thread)."""
        return self._op

    def done(self) -> bool:
        """Whether the operation is done: known locally, or asked of the server (GetOperation).

        :raises RpcError: e.g. :class:`~lro_async.OperationNotFound`.
        """
        if self._op.done:
            return True
        return self._client.run(self._op.refresh).done

    def cancelled(self) -> bool:
        """Whether the operation is known to have finished with CANCELLED (no RPC)."""
        return self._op.cancelled()

    def result(self, timeout: float | None = None) -> ResultT:
        """Block until the operation is done; return its response.

        Raises what :meth:`AsyncOperation.result` raises, and ``KeyboardInterrupt`` on
        Ctrl-C (the wait stops; the remote operation keeps running).
        """
        if self._op.done:
            return self._op._outcome(self._op.operation)
        return self._client.run(self._op.result, timeout)

    def exception(self, timeout: float | None = None) -> Exception | None:
        """Block until the operation is done; return its error, or None if it succeeded."""
        return self._client.run(self._op.exception, timeout)

    def cancel(self) -> bool:
        """Ask the server to cancel the operation; False if it is known to be done."""
        return self._client.run(self._op.cancel)

    def progress(self) -> Generator[MetadataT, None, None]:
        """Yield the metadata now and each time it changes; end when the operation is done.

        Close the iterator (or leave a ``with contextlib.closing(...)`` block) to stop
        listening at a ``break`` at once rather than at garbage collection.
        """
        return self._client.iterate(self._op.progress())

    def until(
        self, predicate: Callable[[MetadataT], object], timeout: float | None = None
    ) -> MetadataT:
        """Block until the metadata satisfies *predicate*; see :meth:`AsyncOperation.until`.

        *predicate* runs on the loop thread.
        """
        return self._client.run(self._op.until, predicate, timeout)

    def token(self) -> str:
        """A string from which another process resumes this operation; see ``AsyncOperation``."""
        return self._op.token()


def as_completed(
    ops: Iterable[Operation[R, M]], *, timeout: float | None = None
) -> Iterator[Operation[R, M]]:
    """Yield each operation as it finishes (all of one :class:`OperationsClient`).

    Example::

        for op in lro_async.sync.as_completed(ops, timeout=600):
            print(op.name, op.exception())

    :raises OperationTimeout: *timeout* passed first; the operations keep running.
    :raises ValueError: operations of different clients.
    """
    batch = list(ops)
    if not batch:
        return iter(())
    return batch[0]._client.as_completed(batch, timeout=timeout)
