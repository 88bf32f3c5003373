"""AsyncOperationsClient: the Operations RPCs over a grpc.aio channel, and AsyncOperations."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, overload

import grpc
from google.longrunning import operations_pb2
from google.protobuf import any_pb2

from ..errors import RpcError
from .bulk import BulkResult, OnResult, act_on
from .operation import AsyncOperation
from .policy import WaitPolicy
from .tokens import decode_token
from .transport import GrpcTransport, Metadata, OperationsTransport
from .waiting import Waiters
from .watching import Change

__all__ = ["ApiCoreOperation", "AsyncOperationsClient"]

R = TypeVar("R")
_BULK_PAGE = 1000  # the most a server gives per page: fewest ListOperations calls
M = TypeVar("M")


class ApiCoreOperation(Protocol):
    """A google-api-core ``operation.Operation`` or ``operation_async.AsyncOperation``."""

    @property
    def operation(self) -> operations_pb2.Operation: ...


def _from_api_core(
    operation: object, result_type: type[Any] | None, metadata_type: type[Any] | None
) -> tuple[operations_pb2.Operation | str, type[Any] | None, type[Any] | None]:
    """Take the proto (and, where not given, the types) of a google-api-core operation."""
    if isinstance(operation, (str, operations_pb2.Operation)):
        return operation, result_type, metadata_type
    proto = getattr(operation, "operation", None)
    if not isinstance(proto, operations_pb2.Operation):
        raise TypeError(
            "expected an operation name, an Operation proto or a google-api-core operation, "
            f"not {type(operation).__name__}"
        )
    if result_type is None:
        result_type = getattr(operation, "_result_type", None)
    if metadata_type is None:
        metadata_type = getattr(operation, "_metadata_type", None)
    return proto, result_type, metadata_type


class AsyncOperationsClient:
    """A client of ``google.longrunning.Operations``, and the home of its AsyncOperations.

    The client does not own the channel: close the channel yourself, after
    :meth:`aclose` (or leaving ``async with``), which ends every wait still running.
    Creating a client makes no RPC and needs no running event loop.

    Example::

        async with grpc.aio.insecure_channel(target) as channel:
            client = AsyncOperationsClient(channel, metadata=[("authorization", token)])
            op = client.operation(name, result_type=Resp, metadata_type=Md)
            resp = await op.result(timeout=60)

    :param channel: a ``grpc.aio`` channel, or any :class:`OperationsTransport`.
    :param metadata: request metadata sent with every RPC (e.g. auth headers); per-call
        ``metadata`` is appended to it.
    :param policy: how operations are waited for (long polls, polling, retries, pacing).
    """

    _close_transport: Callable[[], Awaitable[None]] | None = None  # set by from_url

    def __init__(
        self,
        channel: grpc.aio.Channel | OperationsTransport,
        *,
        metadata: Metadata = (),
        policy: WaitPolicy | None = None,
    ) -> None:
        transport = GrpcTransport(channel) if isinstance(channel, grpc.aio.Channel) else channel
        self._transport: OperationsTransport = transport
        self._metadata = tuple(metadata)
        self._policy = policy or WaitPolicy()
        self._waiters = Waiters(transport, self._metadata, self._policy)

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
        """A client of an HTTP/JSON Operations server, e.g. ``lro_async.http.asgi_app``.

        Needs the ``http`` extra (httpx). Operations behave exactly as over gRPC: the
        ``:wait`` long poll where the server has it, polling GetOperation where not. The
        client owns its HTTP connections: :meth:`aclose` closes them.

        Example::

            async with AsyncOperationsClient.from_url("http://127.0.0.1:8080") as client:
                resp = await client.operation(name, result_type=Resp)

        :param url: the server's base URL (``http://`` or ``https://``).
        :param headers: sent with every request (e.g. ``{"authorization": "Bearer ..."}``);
            per-call ``metadata`` is sent as headers too.
        :param prefix: the path in front of every route.
        :param policy: as for the constructor.
        :param ssl_context: for ``https://``, verify the server with this client-side
            context, e.g. ``ssl.create_default_context(cafile="ca.pem")``, and present the
            certificate loaded into it (``load_cert_chain``) to a server that asks for
            one; default: the system's CA certificates, no client certificate.
        :raises ValueError: for a URL that is not ``http(s)://``, or an *ssl_context*
            with ``http://``.
        """
        from .http import HttpTransport

        pairs = headers.items() if isinstance(headers, Mapping) else headers
        transport = HttpTransport(url, prefix=prefix, ssl_context=ssl_context)
        client = cls(transport, metadata=[(k.lower(), v) for k, v in pairs], policy=policy)
        client._close_transport = transport.aclose
        return client

    @property
    def policy(self) -> WaitPolicy:
        return self._policy

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End every wait still running (with a CANCELLED :class:`RpcError`) and its task.

        Remote operations are not cancelled; the channel is left open (the HTTP
        connections of a client made by :meth:`from_url` are closed).
        """
        await self._waiters.aclose()
        if self._close_transport is not None:
            close, self._close_transport = self._close_transport, None
            await close()

    # -- AsyncOperations ----------------------------------------------------------------

    @overload
    def operation(
        self,
        operation: ApiCoreOperation,
        *,
        result_type: None = None,
        metadata_type: None = None,
    ) -> AsyncOperation[Any, Any]: ...
    @overload
    def operation(
        self,
        operation: operations_pb2.Operation | str | ApiCoreOperation,
        *,
        result_type: type[R],
        metadata_type: type[M],
    ) -> AsyncOperation[R, M]: ...
    @overload
    def operation(
        self,
        operation: operations_pb2.Operation | str | ApiCoreOperation,
        *,
        result_type: type[R],
        metadata_type: None = None,
    ) -> AsyncOperation[R, any_pb2.Any]: ...
    @overload
    def operation(
        self,
        operation: operations_pb2.Operation | str | ApiCoreOperation,
        *,
        result_type: None = None,
        metadata_type: type[M],
    ) -> AsyncOperation[any_pb2.Any, M]: ...
    @overload
    def operation(
        self,
        operation: operations_pb2.Operation | str,
        *,
        result_type: None = None,
        metadata_type: None = None,
    ) -> AsyncOperation[any_pb2.Any, any_pb2.Any]: ...
    def operation(
        self,
        operation: operations_pb2.Operation | str | ApiCoreOperation,
        *,
        result_type: type[Any] | None = None,
        metadata_type: type[Any] | None = None,
    ) -> AsyncOperation[Any, Any]:
        """Return an :class:`AsyncOperation` for a name or an Operation proto, without an RPC.

        :param operation: the operation's name (to resume waiting by name), its proto
            (which is copied), or a google-api-core ``Operation``/``AsyncOperation`` (what
            a Google Cloud client's long-running call returns), whose proto is taken and,
            where not given here, its result and metadata types.
        :param result_type: the response message type, a protobuf or a proto-plus class
            (e.g. ``google.cloud.redis_v1.Instance``); None keeps the packed ``Any``.
        :param metadata_type: the metadata message type; None keeps the packed ``Any``.
        :raises TypeError: a type that is not a protobuf or proto-plus message class.
        """
        operation, result_type, metadata_type = _from_api_core(
            operation, result_type, metadata_type
        )
        if isinstance(operation, str):
            return AsyncOperation(
                operation, self, result_type=result_type, metadata_type=metadata_type
            )
        return AsyncOperation.from_operation(
            operation, self, result_type=result_type, metadata_type=metadata_type
        )

    def operation_from_token(self, token: str) -> AsyncOperation[Any, Any]:
        """Return the operation an ``op.token()`` names, typed as it was, without an RPC.

        The result and metadata types are looked up among the types this process has
        imported (the protobuf descriptor pool, or proto-plus's registry).

        Example::

            token = op.token()  # in one process
            op = client.operation_from_token(token)  # in another
            resp = await op

        :raises ValueError: a malformed, truncated or altered token, or a type this process
            does not know (import the module that defines it first).
        """
        name, result_type, metadata_type = decode_token(token)
        return AsyncOperation(name, self, result_type=result_type, metadata_type=metadata_type)

    # -- the RPCs -----------------------------------------------------------------------

    async def get_operation(
        self, name: str, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> operations_pb2.Operation:
        """GetOperation: the latest state of *name*.

        :param timeout: the RPC deadline in seconds; None: ``policy.rpc_timeout``.
        :param metadata: request metadata for this call, after the client's.
        :raises RpcError: e.g. :class:`OperationNotFound`, :class:`PermissionDenied`.
        """
        async with self._waiters.pacer.slot():
            return await self._transport.get(
                name, timeout=self._timeout(timeout), metadata=self._merge(metadata)
            )

    async def list_operations(
        self,
        parent: str,
        *,
        filter: str = "",
        page_size: int = 0,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncGenerator[operations_pb2.Operation, None]:
        """ListOperations: yield the operations under *parent*, fetching page after page.

        :param parent: the collection, e.g. ``"projects/p"`` (the request's ``name``).
        :param filter: an AIP-160 filter, e.g. ``"done = false"``.
        :param page_size: operations per page; 0 lets the server choose.
        :param timeout: the deadline of each page's RPC; None: ``policy.rpc_timeout``.
        :raises RpcError: e.g. :class:`InvalidArgument` for a bad filter.
        """
        token = ""
        while True:
            async with self._waiters.pacer.slot():
                page = await self._transport.list(
                    parent,
                    filter=filter,
                    page_size=page_size,
                    page_token=token,
                    timeout=self._timeout(timeout),
                    metadata=self._merge(metadata),
                )
            for operation in page.operations:
                yield operation
            token = page.next_page_token
            if not token:
                return

    async def watch(
        self,
        parent: str,
        *,
        filter: str = "",
        page_size: int = 0,
        metadata_changes: bool = False,
        metadata: Metadata = (),
    ) -> AsyncGenerator[Change, None]:
        """Watch a collection: yield its operations, then every change, over one stream.

        Needs lro_async's Watch extension on the server (over gRPC, or its Server-Sent
        Events routes over HTTP). First a ``"snapshot"``
        :class:`~lro_async.client.watching.Change` per matching operation and one
        ``"synced"``, then ``"created"``, ``"changed"`` (with *metadata_changes*: each
        metadata change), ``"done"`` and ``"deleted"`` as they happen. It ends when the
        server ends the stream (it shuts down); call again to resume from a new snapshot.

        >>> # async for change in client.watch("projects/p", filter="done = false"):
        >>> #     print(change.kind, change.name)

        :param parent: as ListOperations' ``name``: ``"projects/p"``, ``"operations"``, ``""``.
        :param filter: an AIP-160 filter, as for :meth:`list_operations`.
        :param page_size: snapshot operations per response; 0 lets the server choose.
        :raises RpcError: :class:`InvalidArgument` for a bad parent or filter,
            :class:`PermissionDenied`; UNIMPLEMENTED without the extension.
        """
        open_watch = getattr(self._transport, "watch_collection", None)
        if open_watch is None:
            raise RpcError(
                "this transport cannot watch collections", code=grpc.StatusCode.UNIMPLEMENTED
            )
        changes: AsyncGenerator[Change, None] = open_watch(
            parent,
            filter=filter,
            page_size=page_size,
            metadata_changes=metadata_changes,
            metadata=self._merge(metadata),
        )
        async with contextlib.aclosing(changes):
            async for change in changes:
                yield change

    async def cancel_operation(
        self, name: str, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> None:
        """CancelOperation: ask the server to cancel *name* (it ends later, with CANCELLED).

        :raises RpcError: e.g. :class:`OperationNotFound`.
        """
        async with self._waiters.pacer.slot():
            await self._transport.cancel(
                name, timeout=self._timeout(timeout), metadata=self._merge(metadata)
            )

    async def delete_operation(
        self, name: str, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> None:
        """DeleteOperation: forget *name* on the server (its work is not cancelled).

        :raises RpcError: e.g. :class:`OperationNotFound`.
        """
        async with self._waiters.pacer.slot():
            await self._transport.delete(
                name, timeout=self._timeout(timeout), metadata=self._merge(metadata)
            )

    # -- in bulk ------------------------------------------------------------------------

    async def count_operations(
        self,
        parent: str,
        *,
        filter: str = "",
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> int:
        """How many operations under *parent* match *filter*, counted by listing them.

        :param parent: as for :meth:`list_operations`, e.g. ``"projects/p"``; ``""``: all.
        :param filter: an AIP-160 filter, e.g. ``"done = false"``.
        :param timeout: the deadline of each page's RPC; None: ``policy.rpc_timeout``.
        :raises RpcError: e.g. :class:`InvalidArgument` for a bad filter.
        """
        count = 0
        async for _ in self.list_operations(
            parent, filter=filter, page_size=_BULK_PAGE, timeout=timeout, metadata=metadata
        ):
            count += 1
        return count

    async def cancel_operations(
        self,
        parent: str,
        *,
        filter: str = "",
        concurrency: int = 16,
        timeout: float | None = None,
        metadata: Metadata = (),
        on_result: OnResult | None = None,
    ) -> BulkResult:
        """Cancel every operation under *parent* that *filter* matches.

        Lists the matches first, then cancels them, *concurrency* CancelOperation calls
        at a time. Operations already done when listed are skipped without an RPC, as
        are those deleted before their turn; the others are done or failed (with why).

        Example::

            result = await client.cancel_operations("projects/p", filter="done = false")
            print(len(result.done), len(result.skipped), result.failed)

        :param concurrency: most CancelOperation calls in flight at once.
        :param timeout: the deadline of each RPC; None: ``policy.rpc_timeout``.
        :param on_result: called after each operation (for a progress bar).
        :raises RpcError: if the listing fails (a bad filter: :class:`InvalidArgument`);
            a refused cancel is a :attr:`BulkResult.failed` entry instead.
        :raises ValueError: if *concurrency* is below 1.
        """
        return await self._in_bulk(
            parent,
            filter,
            self.cancel_operation,
            skip_done=True,
            concurrency=concurrency,
            timeout=timeout,
            metadata=metadata,
            on_result=on_result,
        )

    async def delete_operations(
        self,
        parent: str,
        *,
        filter: str = "",
        concurrency: int = 16,
        timeout: float | None = None,
        metadata: Metadata = (),
        on_result: OnResult | None = None,
    ) -> BulkResult:
        """Delete the record of every operation under *parent* that *filter* matches.

        As :meth:`cancel_operations`, with DeleteOperation: running work is not
        cancelled; operations already gone when their turn comes are skipped.
        """
        return await self._in_bulk(
            parent,
            filter,
            self.delete_operation,
            skip_done=False,
            concurrency=concurrency,
            timeout=timeout,
            metadata=metadata,
            on_result=on_result,
        )

    async def _in_bulk(
        self,
        parent: str,
        filter: str,
        rpc: Callable[..., Awaitable[None]],
        *,
        skip_done: bool,
        concurrency: int,
        timeout: float | None,
        metadata: Metadata,
        on_result: OnResult | None,
    ) -> BulkResult:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency!r}")
        listed = [
            operation
            async for operation in self.list_operations(
                parent, filter=filter, page_size=_BULK_PAGE, timeout=timeout, metadata=metadata
            )
        ]

        async def act(name: str) -> None:
            await rpc(name, timeout=timeout, metadata=metadata)

        return await act_on(
            listed, act, skip_done=skip_done, concurrency=concurrency, on_result=on_result
        )

    async def wait_operation(
        self,
        name: str,
        timeout: float | None = None,
        *,
        metadata: Metadata = (),
    ) -> operations_pb2.Operation:
        """One WaitOperation call: return *name* when done or after *timeout* seconds.

        The server may answer earlier, with ``done=false``; no retry is made. To wait for
        the result, await :meth:`operation` instead.

        :param timeout: the wait asked of the server; None lets the server choose. The RPC
            deadline is ``policy.deadline_margin`` beyond it.
        :raises RpcError: e.g. :class:`OperationNotFound`; UNIMPLEMENTED if the server has
            no WaitOperation.
        """
        deadline = None if timeout is None else timeout + self._policy.deadline_margin
        await self._waiters.pacer.open()
        return await self._transport.wait(
            name, timeout, timeout=deadline, metadata=self._merge(metadata)
        )

    def _timeout(self, timeout: float | None) -> float:
        return self._policy.rpc_timeout if timeout is None else timeout

    def _merge(self, metadata: Metadata) -> Metadata:
        return self._metadata + tuple(metadata) if metadata else self._metadata
