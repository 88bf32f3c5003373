"""The client commands: get, list, wait, watch, cancel, delete, start."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any, cast

import grpc
from google.longrunning import operations_pb2
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from ..client.bulk import BulkResult, Outcome, act_on
from ..client.operation import AsyncOperation
from ..client.operations import AsyncOperationsClient
from ..client.policy import channel_options
from ..errors import OperationFailed, OperationTimeout, RpcError
from . import render
from .exits import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_RPC,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CommandError,
    unreachable,
)
from .reflection import TypeResolver
from .tls import check_files

__all__ = [
    "cancel",
    "channel_credentials",
    "count",
    "delete",
    "get",
    "list_",
    "start",
    "uses_tls",
    "wait",
    "watch",
]

_UNREACHED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def uses_tls(args: argparse.Namespace) -> bool:
    return any(getattr(args, flag, None) for flag in ("tls_ca", "tls_cert", "tls_key"))


def channel_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from ``--tls-ca``, ``--tls-cert`` and ``--tls-key``; None for plaintext.

    :raises CommandError: if the flags do not go together or a file cannot be used.
    """
    if not uses_tls(args):
        return None
    cert, key, ca = check_files(args.tls_cert, args.tls_key, args.tls_ca, server=False)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


@dataclasses.dataclass(frozen=True)
class _Session:
    client: AsyncOperationsClient
    channel: grpc.aio.Channel
    types: TypeResolver


@contextlib.asynccontextmanager
async def _connect(args: argparse.Namespace) -> AsyncIterator[_Session]:
    credentials = channel_credentials(args)
    async with (
        (
            grpc.aio.insecure_channel(args.target, options=channel_options())
            if credentials is None
            else grpc.aio.secure_channel(args.target, credentials, options=channel_options())
        ) as channel,
        AsyncOperationsClient(channel) as client,
    ):
        yield _Session(client, channel, TypeResolver(channel, args.rpc_timeout))


async def _show(
    args: argparse.Namespace, session: _Session, operation: operations_pb2.Operation
) -> None:
    await render.learn(operation, session.types)
    if args.json:
        print(render.dumps(render.operation_json(operation, session.types)), flush=True)
    else:
        print(render.describe(operation, session.types), flush=True)


def _outcome(args: argparse.Namespace, operation: operations_pb2.Operation) -> int:
    """1 if *operation* finished with an error (the rule of get, wait and watch), else 0."""
    if operation.HasField("error"):
        if not args.json:
            print(f"lro-async {args.command}: {render.state(operation)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def get(args: argparse.Namespace) -> int:
    async with _connect(args) as session:
        operation = await session.client.get_operation(args.name, timeout=args.rpc_timeout)
        await _show(args, session, operation)
    return _outcome(args, operation)


async def list_(args: argparse.Namespace) -> int:
    shown: list[operations_pb2.Operation] = []
    async with _connect(args) as session:
        async for operation in session.client.list_operations(
            args.parent,
            filter=args.filter,
            page_size=min(args.page_size, args.limit or args.page_size),
            timeout=args.rpc_timeout,
        ):
            shown.append(operation)
            if not args.json:
                print(f"{operation.name}\t{render.state(operation)}", flush=True)
            if args.limit and len(shown) >= args.limit:
                break
        if args.json:
            for operation in shown:
                await render.learn(operation, session.types)
            listed = [render.operation_json(op, session.types) for op in shown]
            print(render.dumps({"operations": listed}), flush=True)
    return EXIT_OK


async def count(args: argparse.Namespace) -> int:
    async with _connect(args) as session:
        matched = await session.client.count_operations(
            args.parent, filter=args.filter, timeout=args.rpc_timeout
        )
    print(render.dumps({"count": matched}) if args.json else matched, flush=True)
    return EXIT_OK


async def cancel(args: argparse.Namespace) -> int:
    if _in_bulk(args):
        return await _bulk(args, "cancel")
    async with _connect(args) as session:
        await session.client.cancel_operation(args.name, timeout=args.rpc_timeout)
        operation = await session.client.get_operation(args.name, timeout=args.rpc_timeout)
        if args.json:
            await _show(args, session, operation)
        else:
            print(f"{operation.name}: {render.state(operation)}")
    return EXIT_OK


async def delete(args: argparse.Namespace) -> int:
    if _in_bulk(args):
        return await _bulk(args, "delete")
    async with _connect(args) as session:
        await session.client.delete_operation(args.name, timeout=args.rpc_timeout)
    if not args.json:
        print(f"{args.name}: deleted")
    return EXIT_OK


def _in_bulk(args: argparse.Namespace) -> bool:
    """True for ``--filter``; refuses a mix of a name and the bulk options (exit 2)."""
    if args.filter is not None:
        if args.name is not None:
            raise CommandError("give an operation name or --filter, not both", EXIT_USAGE)
        if not args.yes and not sys.stdin.isatty():
            raise CommandError(
                "no terminal to confirm on: add --yes to act on what --filter matches",
                EXIT_USAGE,
            )
        return True
    if args.name is None:
        raise CommandError("give an operation name or --filter", EXIT_USAGE)
    for flag in ("parent", "yes", "concurrency"):
        if getattr(args, flag) not in (None, False):
            raise CommandError(f"--{flag} goes with --filter, not with a name", EXIT_USAGE)
    return False


_PAST = {"cancel": "cancelled", "delete": "deleted"}


async def _bulk(args: argparse.Namespace, action: str) -> int:
    """List what ``--filter`` matches, confirm, act with a progress bar; print a summary."""
    parent = args.parent or ""
    async with _connect(args) as session:
        client = session.client
        listed = [
            operation
            async for operation in client.list_operations(
                parent, filter=args.filter, page_size=1000, timeout=args.rpc_timeout
            )
        ]
        if not args.json:
            for operation in listed:
                print(f"{operation.name}\t{render.state(operation)}", flush=True)
        if listed and not args.yes and not _confirmed(action, len(listed), parent):
            raise CommandError("not confirmed: nothing was changed", EXIT_USAGE)
        rpc = client.cancel_operation if action == "cancel" else client.delete_operation

        async def act(name: str) -> None:
            await rpc(name, timeout=args.rpc_timeout)

        console = Console(stderr=True)
        concurrency = args.concurrency or 16
        if not console.is_terminal or not listed:
            result = await act_on(
                listed, act, skip_done=action == "cancel", concurrency=concurrency
            )
        else:
            columns = (TextColumn(action), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, transient=True) as bar:
                task = bar.add_task(action, total=len(listed))

                def advance(name: str, outcome: Outcome, error: RpcError | None) -> None:
                    bar.advance(task)

                result = await act_on(
                    listed,
                    act,
                    skip_done=action == "cancel",
                    concurrency=concurrency,
                    on_result=advance,
                )
    _summary(args, action, parent, result)
    if result.failed:
        print(
            f"lro-async {action}: {len(result.failed)} of {result.matched} operations "
            "failed (see the summary)",
            file=sys.stderr,
        )
        return EXIT_PARTIAL
    return EXIT_OK


def _confirmed(action: str, matched: int, parent: str) -> bool:
    where = f" under {parent!r}" if parent else ""
    print(f"{action} these {matched} operations{where}? [y/N] ", end="", file=sys.stderr)
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        return False
    return answer.strip().lower() in ("y", "yes")


def _summary(args: argparse.Namespace, action: str, parent: str, result: BulkResult) -> None:
    if args.json:
        document = {
            "action": action,
            "parent": parent,
            "filter": args.filter,
            "matched": result.matched,
            "done": list(result.done),
            "skipped": list(result.skipped),
            "failed": [
                {"name": name, "code": error.code.name, "message": error.message}
                for name, error in result.failed
            ],
        }
        print(render.dumps(document), flush=True)
        return
    skipped = "already done or gone" if action == "cancel" else "already gone"
    print(f"matched: {result.matched}", flush=True)
    print(f"{_PAST[action]}: {len(result.done)}", flush=True)
    print(f"skipped: {len(result.skipped)} ({skipped})", flush=True)
    print(f"failed: {len(result.failed)}", flush=True)
    for name, error in result.failed:
        print(f"  {name}: {error.code.name}: {_line(error.message)}", flush=True)


def _line(text: str) -> str:
    return " ".join(text.split())


async def start(args: argparse.Namespace) -> int:
    """Start a demo operation on a server (``lro-async serve`` runs the demo service)."""
    from ..demo import demo_pb2, demo_pb2_grpc
    from ..errors import rpc_call
    from ..protobuf import seconds_duration

    failure = demo_pb2.Failure(
        code=args.fail or 0,
        message="told to fail (lro-async start --fail)",
        at_percent=args.fail_at,
    )
    async with _connect(args) as session:
        stub = cast("demo_pb2_grpc.DemoAsyncStub", demo_pb2_grpc.DemoStub(session.channel))
        if args.kind == "sleep":
            request = demo_pb2.SleepRequest(
                parent=args.parent,
                duration=seconds_duration(args.seconds),
                steps=args.steps,
                failure=failure,
            )
            operation = await rpc_call(stub.Sleep(request, timeout=args.rpc_timeout))
        else:
            export = demo_pb2.ExportRequest(
                parent=args.parent,
                rows=args.rows,
                rows_per_second=args.rows_per_second,
                failure=failure,
            )
            operation = await rpc_call(stub.Export(export, timeout=args.rpc_timeout))
        if args.json:
            await _show(args, session, operation)
        else:
            print(operation.name, flush=True)
    return EXIT_OK


async def _reach(args: argparse.Namespace, session: _Session) -> operations_pb2.Operation:
    """The operation's state, from a server reached within ``--rpc-timeout``.

    The library retries an unreachable server for as long as a wait lasts; the command
    does not wait on a server it has never reached: exit 4 with the reason.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.rpc_timeout
    pause = 0.1
    while True:
        left = deadline - loop.time()
        try:
            return await session.client.get_operation(args.name, timeout=max(left, 0.001))
        except RpcError as exc:
            if exc.code not in _UNREACHED:
                raise
            if loop.time() + pause >= deadline:
                raise CommandError(
                    f"{unreachable(exc, tls=uses_tls(args))} "
                    f"(gave up after --rpc-timeout {args.rpc_timeout:g}s)",
                    EXIT_RPC,
                ) from exc
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)


async def wait(args: argparse.Namespace) -> int:
    """Wait with a progress bar on stderr (on a terminal) fed by the metadata; print it."""
    async with _connect(args) as session:
        reached = await _reach(args, session)
        await render.learn(reached, session.types)  # before following: no RPC between changes
        op = session.client.operation(reached)
        console = Console(stderr=True)
        if not console.is_terminal:
            await _await_following(args, session, op, None)
            await _show(args, session, op.operation)
            return _outcome(args, op.operation)
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),  # no percentage while it is unknown
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(args.name, total=None)  # a pulsing bar until a fraction shows

            async def follow() -> None:
                async for metadata in op.progress():
                    await session.types.learn(metadata.TypeName())
                    percent = render.percent_of(render.unpack_any(metadata, session.types))
                    if percent is not None:
                        bar.update(task, total=100, completed=percent)

            await _await_following(args, session, op, follow())
        await _show(args, session, op.operation)
        return _outcome(args, op.operation)


async def watch(args: argparse.Namespace) -> int:
    """Print a line (a JSON object with ``--json``) for each change until it is done."""
    if (args.name is None) == (args.parent is None):
        raise CommandError("give an operation name or --parent, not both", EXIT_USAGE)
    if args.parent is not None:
        return await _watch_collection(args)
    async with _connect(args) as session:
        reached = await _reach(args, session)
        await render.learn(reached, session.types)  # before following: no RPC between changes
        op = session.client.operation(reached)

        async def follow() -> None:
            async for metadata in op.progress():
                if args.json:
                    await render.learn(op.operation, session.types)
                    line = render.compact(render.operation_json(op.operation, session.types))
                else:
                    await session.types.learn(metadata.TypeName())
                    decoded = render.unpack_any(metadata, session.types)
                    percent = render.percent_of(decoded)
                    shown = "" if percent is None else f"{percent:.0f}% "
                    line = f"{op.name}: {shown}{render.any_text(metadata, session.types)}"
                print(line, flush=True)

        await _await_following(args, session, op, follow())
        await render.learn(op.operation, session.types)
        if args.json:
            print(render.compact(render.operation_json(op.operation, session.types)), flush=True)
        else:
            print(f"{op.name}: {render.state(op.operation)}", flush=True)
        return _outcome(args, op.operation)


async def _watch_collection(args: argparse.Namespace) -> int:
    """Print each change under ``--parent`` until the server ends the watch (or --timeout)."""
    async with _connect(args) as session:
        try:
            async with asyncio.timeout(args.timeout):
                changes = session.client.watch(args.parent, filter=args.filter)
                async for change in changes:
                    operation = change.operation
                    if operation is not None:
                        await render.learn(operation, session.types)
                    if args.json:
                        state = None
                        if operation is not None:
                            state = render.operation_json(operation, session.types)
                        document = {"kind": change.kind, "name": change.name, "operation": state}
                        print(render.compact(document), flush=True)
                    elif operation is not None:
                        print(f"{change.kind} {change.name} {render.state(operation)}", flush=True)
                    else:
                        print(f"{change.kind} {change.name}".rstrip(), flush=True)
        except TimeoutError as exc:
            raise OperationTimeout(f"watched {args.parent!r} for {args.timeout} s") from exc
    return EXIT_OK


async def _await_following(
    args: argparse.Namespace,
    session: _Session,
    op: AsyncOperation[Any, Any],
    follow: Coroutine[Any, Any, None] | None,
) -> None:
    """Await *op* while *follow* shows its progress; a failed operation is not an error here.

    If *follow* fails (stdout closed: ``| head``), that ends the wait with its error.

    :raises CommandError: exit 5 when ``--timeout`` passes with the operation running,
        exit 4 when by then the server no longer answers.
    """
    waiting = asyncio.ensure_future(op.result(timeout=args.timeout))
    follower = asyncio.ensure_future(follow) if follow is not None else None
    try:
        if follower is not None:
            await asyncio.wait((waiting, follower), return_when=asyncio.FIRST_COMPLETED)
            if follower.done() and not follower.cancelled() and follower.exception():
                raise cast("BaseException", follower.exception())
        await waiting
    except OperationFailed:
        pass  # reported by _outcome
    except OperationTimeout as exc:
        raise await _timed_out(args, session, exc) from exc
    finally:
        for task in (waiting, follower):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def _timed_out(
    args: argparse.Namespace, session: _Session, exc: OperationTimeout
) -> CommandError:
    """Exit 5 if the server still answers that the operation runs; exit 4 if it is gone."""
    try:
        latest = await session.client.get_operation(args.name, timeout=min(args.rpc_timeout, 5.0))
    except RpcError as error:
        if error.code in _UNREACHED:
            return CommandError(
                f"--timeout {args.timeout:g}s passed and the server no longer answers: "
                + unreachable(error, tls=uses_tls(args)),
                EXIT_RPC,
            )
        return CommandError(str(error), EXIT_RPC)
    return CommandError(
        f"{args.name} is still {render.state(latest)} after --timeout {args.timeout:g}s",
        EXIT_TIMEOUT,
    )
