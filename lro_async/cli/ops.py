"""The client commands: get, list, wait, watch, cancel, delete."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import grpc
from google.longrunning import operations_pb2
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..client.operation import AsyncOperation
from ..client.operations import AsyncOperationsClient
from ..errors import OperationFailed, OperationTimeout
from . import EXIT_USAGE, CommandError, read_pem, render

__all__ = ["cancel", "channel_credentials", "delete", "get", "list_", "wait", "watch"]

EXIT_OK, EXIT_FAILED = 0, 1


def channel_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from ``--tls-ca``, ``--tls-cert`` and ``--tls-key``; None for plaintext.

    :raises CommandError: if the flags do not go together or a file cannot be read.
    """
    ca, cert, key = args.tls_ca, args.tls_cert, args.tls_key
    if ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        raise CommandError("a client certificate needs both --tls-cert and --tls-key", EXIT_USAGE)
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca, "--tls-ca") if ca is not None else None,
        private_key=read_pem(key, "--tls-key") if key is not None else None,
        certificate_chain=read_pem(cert, "--tls-cert") if cert is not None else None,
    )


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace) -> AsyncIterator[AsyncOperationsClient]:
    credentials = channel_credentials(args)
    async with (
        (
            grpc.aio.insecure_channel(args.target)
            if credentials is None
            else grpc.aio.secure_channel(args.target, credentials)
        ) as channel,
        AsyncOperationsClient(channel) as client,
    ):
        yield client


def _show(args: argparse.Namespace, operation: operations_pb2.Operation) -> None:
    if args.json:
        print(render.dumps(render.operation_json(operation)))
    else:
        print(render.describe(operation))


async def get(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        _show(args, await client.get_operation(args.name, timeout=args.rpc_timeout))
    return EXIT_OK


async def list_(args: argparse.Namespace) -> int:
    shown: list[operations_pb2.Operation] = []
    async with _client(args) as client:
        async for operation in client.list_operations(
            args.parent, filter=args.filter, page_size=args.page_size, timeout=args.rpc_timeout
        ):
            if args.json:
                shown.append(operation)
            else:
                print(f"{operation.name}\t{render.state(operation)}", flush=True)
            if args.limit and len(shown) >= args.limit:
                break
    if args.json:
        print(render.dumps({"operations": [render.operation_json(op) for op in shown]}))
    return EXIT_OK


async def cancel(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        await client.cancel_operation(args.name, timeout=args.rpc_timeout)
        operation = await client.get_operation(args.name, timeout=args.rpc_timeout)
    if args.json:
        _show(args, operation)
    else:
        print(f"{operation.name}: {render.state(operation)}")
    return EXIT_OK


async def delete(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        await client.delete_operation(args.name, timeout=args.rpc_timeout)
    if not args.json:
        print(f"{args.name}: deleted")
    return EXIT_OK


async def _finish(args: argparse.Namespace, operation: operations_pb2.Operation) -> int:
    _show(args, operation)
    if operation.HasField("error"):
        if not args.json:
            print(f"lro-async {args.command}: {render.state(operation)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def wait(args: argparse.Namespace) -> int:
    """Wait with a progress bar on stderr fed by the metadata; print the operation."""
    async with _client(args) as client:
        op = client.operation(args.name)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(args.name, total=100)

            async def follow() -> None:
                async for metadata in op.progress():
                    percent = render.percent_of(render.unpack_any(metadata))
                    if percent is not None:
                        bar.update(task, completed=percent)

            await _await_following(op, args.timeout, follow())
        return await _finish(args, op.operation)


async def watch(args: argparse.Namespace) -> int:
    """Print a line (or a JSON document) for each change until the operation is done."""
    if (args.name is None) == (args.parent is None):
        raise CommandError("give an operation name or --parent, not both", EXIT_USAGE)
    if args.parent is not None:
        return await _watch_collection(args)
    async with _client(args) as client:
        op = client.operation(args.name)

        async def follow() -> None:
            async for metadata in op.progress():
                if args.json:
                    print(render.dumps(render.operation_json(op.operation)), flush=True)
                else:
                    print(f"{op.name}: {render.any_text(metadata)}", flush=True)

        await _await_following(op, args.timeout, follow())
        return await _finish(args, op.operation)


async def _watch_collection(args: argparse.Namespace) -> int:
    """Print each change under ``--parent`` until the server ends the watch (or --timeout)."""
    async with _client(args) as client:
        try:
            async with asyncio.timeout(args.timeout):
                async for change in client.watch(args.parent, filter=args.filter):
                    if args.json:
                        state = (
                            render.operation_json(change.operation) if change.operation else None
                        )
                        document = {"kind": change.kind, "name": change.name, "operation": state}
                        print(render.dumps(document), flush=True)
                    elif change.operation is not None:
                        line = f"{change.kind} {change.name} {render.state(change.operation)}"
                        print(line, flush=True)
                    else:
                        print(f"{change.kind} {change.name}".rstrip(), flush=True)
        except TimeoutError as exc:
            raise OperationTimeout(f"watched {args.parent!r} for {args.timeout} s") from exc
    return EXIT_OK


async def _await_following(
    op: AsyncOperation[Any, Any], timeout: float | None, follow: Coroutine[Any, Any, None]
) -> None:
    """Await *op* while *follow* shows its progress; a failed operation is not an error here."""
    follower = asyncio.create_task(follow)
    try:
        await op.result(timeout=timeout)
    except OperationFailed:
        pass  # reported by _finish
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
