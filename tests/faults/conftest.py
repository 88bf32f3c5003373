"""The fault suite: every test here is marked ``faults`` (and ``slow``), and gets a seed.

``LRO_ASYNC_FAULT_SEED=N`` replays a failed run's fault schedule; without it each
scenario draws a fresh seed and prints it.
"""

from __future__ import annotations

import pytest

from .harness import SEED_ENV, seed


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name == "faults" and item.path.parent.parent.name == "tests":
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def fault_seed(request: pytest.FixtureRequest) -> int:
    """This scenario's seed, printed so that a failure can be replayed."""
    chosen = seed()
    print(f"\n{request.node.name}: seed {chosen} (replay with {SEED_ENV}={chosen})")
    return chosen
