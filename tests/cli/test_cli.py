"""The lro-async command, run as a user runs it: real subprocesses against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2

from lro_async.demo import demo_pb2, demo_pb2_grpc

pytestmark = pytest.mark.timeout(90)

CLI = [sys.executable, "-m", "lro_async"]


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _serve(store: str) -> tuple[str, subprocess.Popen[str]]:
    """Start ``lro-async serve`` on a free port; return its address once it serves."""
    process = subprocess.Popen(
        [*CLI, "serve", "--port", "0", "--store", store, "--grace", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "serving on" in line, line + (process.stderr.read() if process.stderr else "")
    return line.split("serving on ")[1].split()[0], process


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/ops.db"


@pytest.fixture
def server(store: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``lro-async serve`` on a free port with a SQLite store in tmp_path."""
    target, process = _serve(store)
    try:
        yield target, process
    finally:
        _stop(process)


@pytest.fixture
async def demo(
    server: tuple[str, subprocess.Popen[str]],
) -> AsyncIterator[demo_pb2_grpc.DemoAsyncStub]:
    async with grpc.aio.insecure_channel(server[0]) as channel:
        yield cast("demo_pb2_grpc.DemoAsyncStub", demo_pb2_grpc.DemoStub(channel))


def _sleep(seconds: float, fail_code: int = 0) -> demo_pb2.SleepRequest:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return demo_pb2.SleepRequest(
        parent="projects/cli",
        duration=duration,
        steps=5,
        failure=demo_pb2.Failure(code=fail_code, message="told to fail", at_percent=40),
    )


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_run, *args)


async def test_wait_prints_the_result_and_exits_zero(
    server: tuple[str, subprocess.Popen[str]], demo: demo_pb2_grpc.DemoAsyncStub
) -> None:
    op = await demo.Sleep(_sleep(0.5))
    result = await _cli("wait", op.name, "--target", server[0])
    assert result.returncode == 0, result.stderr
    assert op.name in result.stdout and "state:    done" in result.stdout
    assert "lro_async.demo.v1.SleepResponse" in result.stdout


async def test_wait_on_a_failing_operation_exits_one_with_the_error(
    server: tuple[str, subprocess.Popen[str]], demo: demo_pb2_grpc.DemoAsyncStub
) -> None:
    op = await demo.Sleep(_sleep(0.3, fail_code=9))
    result = await _cli("wait", op.name, "--target", server[0])
    assert result.returncode == 1
    assert "FAILED_PRECONDITION: told to fail" in result.stderr
    assert "Traceback" not in result.stderr


async def test_watch_prints_each_progress_change(
    server: tuple[str, subprocess.Popen[str]], demo: demo_pb2_grpc.DemoAsyncStub
) -> None:
    # Changes 0.5 s apart: each is at least one round trip after the one before, even on a
    # loaded machine (1 s for five steps sometimes showed two lines).
    op = await demo.Sleep(_sleep(2.5))
    result = await _cli("watch", op.name, "--target", server[0])
    assert result.returncode == 0, result.stderr
    percents = [line for line in result.stdout.splitlines() if '"percent":' in line]
    assert len(percents) >= 3, result.stdout
    assert '"percent": 100' in result.stdout
    assert f"{op.name}: 100% " in result.stdout  # the fraction progress_fraction reads


async def test_watch_parent_prints_the_snapshot_and_each_change(
    server: tuple[str, subprocess.Popen[str]], demo: demo_pb2_grpc.DemoAsyncStub
) -> None:
    before = await demo.Sleep(_sleep(0.2))
    command = ("watch", "--parent", "projects/cli", "--timeout", "8", "--target", server[0])
    watching = asyncio.create_task(_cli(*command))
    later = await demo.Sleep(_sleep(4.0))  # finishes while the command watches
    result = await watching
    assert result.returncode == 5, result.stderr  # --timeout ended it
    lines = result.stdout.splitlines()
    assert "synced" in lines, result.stdout
    assert any(before.name in line for line in lines), result.stdout
    about_later = [line for line in lines if later.name in line]
    assert about_later and about_later[-1] == f"done {later.name} done", result.stdout


async def test_watch_usage_errors_exit_two_with_one_line(
    server: tuple[str, subprocess.Popen[str]],
) -> None:
    for args in (
        ("watch",),
        ("watch", "operations/x", "--parent", "projects/p"),
        ("watch", "--parent", "projects/p", "--filter", "done = maybe"),
    ):
        result = await _cli(*args, "--target", server[0])
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


async def test_get_list_cancel_delete_with_json(
    server: tuple[str, subprocess.Popen[str]], demo: demo_pb2_grpc.DemoAsyncStub
) -> None:
    target = server[0]
    running = await demo.Sleep(_sleep(30))
    got = await _cli("get", running.name, "--target", target, "--json")
    assert got.returncode == 0, got.stderr
    document = json.loads(got.stdout)
    assert document["name"] == running.name and "done" not in document
    assert document["metadata"]["@type"] == "type.googleapis.com/lro_async.demo.v1.SleepMetadata"

    cancelled = await _cli("cancel", running.name, "--target", target, "--json")
    assert json.loads(cancelled.stdout)["error"]["code"] == 1

    listed = await _cli(
        "list",
        "--target",
        target,
        "--parent",
        "projects/cli",
        "--json",
        "--filter",
        "error.code = CANCELLED",
    )
    assert [op["name"] for op in json.loads(listed.stdout)["operations"]] == [running.name]

    deleted = await _cli("delete", running.name, "--target", target)
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    gone = await _cli("get", running.name, "--target", target)
    assert gone.returncode == 3 and "not found" in gone.stderr
    assert gone.stderr.count("\n") == 1, "one line, no traceback"


async def test_bad_input_exits_two_with_one_line(
    server: tuple[str, subprocess.Popen[str]],
) -> None:
    bad_filter = await _cli("list", "--target", server[0], "--filter", "done = maybe")
    assert bad_filter.returncode == 2 and "filter" in bad_filter.stderr
    bad_name = await _cli("get", "not-an-operation", "--target", server[0])
    assert bad_name.returncode == 2 and bad_name.stderr.count("\n") == 1


def test_an_unreachable_target_exits_four_with_one_line() -> None:
    result = _run("get", "operations/x", "--target", "127.0.0.1:1", "--rpc-timeout", "2")
    assert result.returncode == 4
    assert "cannot reach" in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_store_is_a_usage_error(tmp_path: Path) -> None:
    result = _run("serve", "--port", "0", "--store", "mysql://nope")
    assert result.returncode == 2 and "unknown store" in result.stderr


async def test_sigterm_drains_gracefully_and_loses_nothing(
    server: tuple[str, subprocess.Popen[str]], demo: demo_pb2_grpc.DemoAsyncStub, store: str
) -> None:
    target, process = server
    async with grpc.aio.insecure_channel(target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        status = await check(health_pb2.HealthCheckRequest(service=""))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        quick = await demo.Sleep(_sleep(0.5))
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 15)
    assert code == 0
    assert process.stderr is not None and "stopped" in process.stderr.read()
    # The operation finished within the grace period, and SQLite kept it: serve again.
    target, restarted = await asyncio.to_thread(_serve, store)
    try:
        result = await _cli("get", quick.name, "--target", target, "--json")
        assert json.loads(result.stdout).get("done") is True, result.stdout
    finally:
        restarted.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(restarted.wait, 15) == 0
        _stop(restarted)


def test_the_demo_runs_end_to_end() -> None:
    env = {**os.environ, "COLUMNS": "120"}
    result = subprocess.run(
        [*CLI, "demo", "--operations", "6", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cancelled" in result.stdout and "failed" in result.stdout
    assert "6 operations in" in result.stdout
    # Three sleeps spread evenly from half to 1.2 times --seconds.
    sleeps = sorted({float(s) for s in re.findall(r"sleep (\d+\.\d)s ", result.stdout)})
    assert sleeps in ([0.5, 0.8, 1.2], [0.5, 0.9, 1.2]), result.stdout
