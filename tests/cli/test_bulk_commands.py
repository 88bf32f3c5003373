"""count, and cancel/delete --filter: the real command in a subprocess against a real server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc
import pytest

import lro_async
import lro_async.testing

pytestmark = pytest.mark.timeout(90)

CLI = [sys.executable, "-m", "lro_async"]
PARENT = "projects/bulk"


@dataclasses.dataclass
class Fleet:
    manager: lro_async.OperationManager
    target: str
    running: list[str]
    done: list[str]  # succeeded, failed and cancelled
    elsewhere: list[str]
    denied: str  # running; the server refuses to cancel or delete it


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    manager = lro_async.OperationManager()

    async def made(count: int, parent: str = PARENT) -> list[str]:
        return [(await manager.create(parent=parent)).name for _ in range(count)]

    running, done, elsewhere = await made(5), await made(4), await made(3, "projects/other")
    await manager.complete(done[0])
    await manager.complete(done[1])
    await manager.fail(done[2], grpc.StatusCode.ABORTED, "it broke")
    await manager.cancel(done[3])
    denied = running[0]

    def authorize(access: lro_async.Access) -> bool:
        return access.resource != denied or access.rpc not in ("CancelOperation", "DeleteOperation")

    async with lro_async.testing.serve(manager, authorize=authorize) as served:
        yield Fleet(manager, served.target, running, done, elsewhere, denied)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


async def _cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_run, *args, "--target", fleet.target)


async def _running(fleet: Fleet) -> set[str]:
    names = fleet.running + fleet.elsewhere
    return {name for name in names if not (await fleet.manager.get(name)).done}


async def test_count_prints_how_many_match(fleet: Fleet) -> None:
    result = await _cli(fleet, "count")
    assert (result.returncode, result.stdout) == (0, "12\n"), result.stderr
    result = await _cli(fleet, "count", "--parent", PARENT, "--filter", "done = false")
    assert (result.returncode, result.stdout) == (0, "5\n"), result.stderr
    result = await _cli(fleet, "count", "--filter", "done = true", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == {"count": 4}


async def test_cancel_by_filter_cancels_skips_the_done_and_names_the_failure(fleet: Fleet) -> None:
    result = await _cli(fleet, "cancel", "--filter", "", "--parent", PARENT, "--yes")
    assert result.returncode == 6, result.stderr
    listed = [line.split("\t")[0] for line in result.stdout.splitlines() if "\t" in line]
    assert listed == fleet.running + fleet.done  # oldest first, as the server lists them
    assert "matched: 9\ncancelled: 4\nskipped: 4 (already done or gone)\nfailed: 1\n" in (
        result.stdout
    )
    assert f"  {fleet.denied}: PERMISSION_DENIED: permission denied" in result.stdout
    assert result.stderr == "lro-async cancel: 1 of 9 operations failed (see the summary)\n"
    assert await _running(fleet) == {fleet.denied, *fleet.elsewhere}
    for name in fleet.running[1:]:
        assert (await fleet.manager.get(name)).error.code == grpc.StatusCode.CANCELLED.value[0]


async def test_cancel_by_filter_prints_one_json_summary(fleet: Fleet) -> None:
    result = await _cli(
        fleet, "cancel", "--filter", "done = false", "--yes", "--json", "--concurrency", "2"
    )
    assert result.returncode == 6, result.stderr
    summary = json.loads(result.stdout)
    assert summary["matched"] == 8 and summary["filter"] == "done = false"
    assert set(summary["done"]) == set(fleet.running[1:] + fleet.elsewhere)
    assert summary["skipped"] == []
    assert [(f["name"], f["code"]) for f in summary["failed"]] == [
        (fleet.denied, "PERMISSION_DENIED")
    ]


async def test_delete_by_filter_deletes_what_matches_and_exits_zero(fleet: Fleet) -> None:
    result = await _cli(fleet, "delete", "--filter", "done = true", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert sorted(summary["done"]) == sorted(fleet.done)
    assert (summary["matched"], summary["skipped"], summary["failed"]) == (4, [], [])
    count = await _cli(fleet, "count")
    assert count.stdout == "8\n"


async def test_no_terminal_and_no_yes_refuses_and_changes_nothing(fleet: Fleet) -> None:
    result = await _cli(fleet, "cancel", "--filter", "done = false")
    assert result.returncode == 2 and not result.stdout
    assert result.stderr == (
        "lro-async cancel: no terminal to confirm on: add --yes to act on what --filter matches\n"
    )
    assert await _running(fleet) == set(fleet.running + fleet.elsewhere)


async def test_nothing_matched_is_a_zero_summary(fleet: Fleet) -> None:
    result = await _cli(fleet, "delete", "--filter", "done = true", "--parent", "projects/none")
    assert result.returncode == 2  # still no terminal, no --yes: refused before listing
    result = await _cli(fleet, "delete", "--filter", "", "--parent", "projects/none", "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "matched: 0\ndeleted: 0\nskipped: 0 (already gone)\nfailed: 0\n"


def _on_a_terminal(args: list[str], answer: str) -> tuple[int, str, str]:
    """Run the command with stdin and stderr on a pseudo-terminal; answer its question.

    :return: the exit code, stdout, and what the terminal showed.
    """
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    process = subprocess.Popen(
        [*CLI, *args], stdin=follower, stderr=follower, stdout=subprocess.PIPE, text=True, env=env
    )
    os.close(follower)
    shown = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # EIO: the command has exited and closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            if not answered and b"[y/N]" in shown:
                os.write(leader, answer.encode() + b"\n")
                answered = True
            if process.poll() is not None and not ready:
                break
        assert answered, f"the command never asked: {shown!r}"
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(leader)
    return process.returncode, out, shown.decode(errors="replace")


async def test_on_a_terminal_it_asks_and_no_changes_nothing(fleet: Fleet) -> None:
    args = ["cancel", "--filter", "done = false", "--parent", PARENT, "--target", fleet.target]
    code, out, shown = await asyncio.to_thread(_on_a_terminal, args, "n")
    assert code == 2, shown
    assert f"cancel these 5 operations under {PARENT!r}? [y/N]" in shown
    assert "not confirmed: nothing was changed" in shown
    assert sorted(out.splitlines()) == sorted(f"{name}\trunning" for name in fleet.running)
    assert await _running(fleet) == set(fleet.running + fleet.elsewhere)


async def test_on_a_terminal_yes_acts_with_a_progress_bar(fleet: Fleet) -> None:
    args = ["delete", "--filter", "done = true", "--target", fleet.target]
    code, out, shown = await asyncio.to_thread(_on_a_terminal, args, "y")
    assert code == 0, shown
    assert "delete these 4 operations? [y/N]" in shown
    assert "100%" in shown and "━" in shown, shown  # rich's bar, drawn on stderr
    assert "matched: 4\ndeleted: 4\n" in out and "━" not in out
    for name in fleet.done:
        with pytest.raises(lro_async.OperationNotFound):
            await fleet.manager.get(name)
