"""Waiting on what a test means: ``await until(condition, "what never happened")``.

A test synchronises on a condition it can read (a server's call log, the hub's state, a
row in the store), never on a fixed sleep: the wait ends as soon as the condition holds,
and on a loaded machine it waits as long as it must, up to *timeout*, then fails with a
line that says what never happened. ``until_value`` returns what the condition found;
``wait_until`` is the same for code outside an event loop (threads, subprocesses).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

TIMEOUT = 10.0  # seconds: generous, because a condition that holds ends the wait at once
STEP = 0.002  # seconds between looks at a condition nothing notifies


def _fail(what: str, timeout: float, details: Callable[[], object] | None) -> None:
    line = f"{what} (not within {timeout:g} s)"
    if details is not None:
        line += f": {details()}"
    pytest.fail(line, pytrace=False)


async def until_value(
    condition: Callable[[], T | None] | Callable[[], Awaitable[T | None]],
    what: str,
    *,
    timeout: float = TIMEOUT,
    details: Callable[[], object] | None = None,
) -> T:
    """Return ``condition()`` (sync or async) once it is truthy; fail with *what* after *timeout*.

    *details*, when given, is called on failure and its value appended to the line (the
    state the test saw instead).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            _fail(what, timeout, details)
        await asyncio.sleep(STEP)


async def until(
    condition: Callable[[], object] | Callable[[], Awaitable[object]],
    what: str,
    *,
    timeout: float = TIMEOUT,
    details: Callable[[], object] | None = None,
) -> None:
    """Return once ``condition()`` (sync or async) is truthy; fail with *what* after *timeout*."""
    await until_value(condition, what, timeout=timeout, details=details)


def wait_until(
    condition: Callable[[], T | None],
    what: str,
    *,
    timeout: float = TIMEOUT,
    step: float = 0.01,
    details: Callable[[], object] | None = None,
) -> T:
    """``until_value`` for code outside an event loop: blocks this thread, returns the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            _fail(what, timeout, details)
        time.sleep(step)
