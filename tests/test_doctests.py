"""The ``>>>`` examples in the package's docstrings run, so they stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lro_async


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(lro_async.__path__, prefix="lro_async."):
        if info.name.endswith(("_pb2", "_pb2_grpc")) or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        if any(test.examples for test in doctest.DocTestFinder().find(module)):
            names.append(info.name)
    return names


MODULES = _modules_with_examples()


def test_the_examples_are_found() -> None:
    # The main classes carry runnable examples (STYLE.md 10); losing them all is a bug here.
    assert {"lro_async.backoff", "lro_async.server.manager", "lro_async.testing"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, report=True, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
