"""Waiting on what a test means: ``await until(condition, "what never happened")``.

A test synchronises on a condition it can read (a server's call log, the hub's state, a
row in the store), never on a fixed sleep: the wait ends as soon as the condition holds,
and on a loaded machine it waits as long as it must, up to *timeout*, then fails with a
line that says what never happened.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import pytest

TIMEOUT = 10.0  # seconds: generous, because a condition that holds ends the wait at once
STEP = 0.002  # seconds between looks at a condition nothing notifies


async def until(
    condition: Callable[[], object] | Callable[[], Awaitable[object]],
    what: str,
    *,
    timeout: float = TIMEOUT,
) -> None:
    """Return once ``condition()`` (sync or async) is truthy; fail with *what* after *timeout*."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if loop.time() >= deadline:
            pytest.fail(f"{what} (not within {timeout:g} s)", pytrace=False)
        await asyncio.sleep(STEP)
