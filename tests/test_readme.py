"""The README's Python snippets are valid Python (the quickstart's are run by hand and in CI)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
SNIPPETS = _BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_snippets() -> None:
    assert len(SNIPPETS) >= 5


@pytest.mark.parametrize("number", range(len(SNIPPETS)))
def test_snippet_compiles(number: int) -> None:
    # Fragments may await at the top level, as they would in a notebook or an async function.
    compile(
        SNIPPETS[number],
        f"README.md snippet {number}",
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
    )


def test_every_lro_async_name_a_snippet_uses_exists() -> None:
    import lro_async

    used = set()
    for snippet in SNIPPETS:
        used |= set(re.findall(r"\blro_async\.([A-Za-z_]\w*)", snippet))
    missing = {
        name
        for name in used
        if not hasattr(lro_async, name)
        and name not in {"stores", "sync", "http", "testing", "demo"}
    }
    assert not missing, f"the README uses lro_async.{sorted(missing)}, which do not exist"
