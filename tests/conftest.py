from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from .waiting import until


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Every test ends with no task of its own left running: owners end what they start."""
    before = set(asyncio.all_tasks())
    yield
    here = asyncio.current_task()

    def leaked() -> set[asyncio.Task[object]]:
        return {t for t in asyncio.all_tasks() - before if not t.done() and t is not here}

    # Finished tasks' callbacks and closings get half a second to run.
    await until(
        lambda: not leaked(),
        "tasks leaked by the test",
        timeout=0.5,
        details=lambda: sorted(t.get_name() for t in leaked()),
    )
