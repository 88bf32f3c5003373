from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Every test ends with no task of its own left running: owners end what they start."""
    before = set(asyncio.all_tasks())
    yield
    for _ in range(50):  # let finished tasks' callbacks and closings run
        leaked = {t for t in asyncio.all_tasks() - before if not t.done()}
        leaked.discard(asyncio.current_task())
        if not leaked:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"tasks leaked by the test: {sorted(t.get_name() for t in leaked)}")
