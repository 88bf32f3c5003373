"""The house's import rules (DESIGN.md section 1), read from the code's own imports.

Every import counts here, at module level, inside functions and under ``TYPE_CHECKING``:
a room that needs a name from above it has its dependency the wrong way round, however late
it imports it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lro_async"

VOCABULARY = frozenset(
    {
        "lro_async.backoff",
        "lro_async.errors",
        "lro_async.filtering",
        "lro_async.names",
        "lro_async.progress",
        "lro_async.protobuf",
        "lro_async.telemetry",
        "lro_async.wire",
    }
)
"""What both halves share, at the bottom: it imports nothing above it."""

# The room, and the rooms it may import besides itself and the vocabulary.
ALLOWED = {
    "vocabulary": frozenset(),
    "stores": frozenset(),
    "client": frozenset(),
    "server": frozenset({"stores"}),
    "http": frozenset({"server", "stores"}),
    "demo": frozenset({"server", "stores", "client", "http", "top"}),
}
"""``top``: the package's facades (``lro_async``, ``sync``, ``testing``); ``cli`` is above all."""


def _module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_of(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "_pb2" not in path.name and not _module_of(path).startswith("lro_async.v1")
    }


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str, *, at_runtime: bool = False) -> Iterator[tuple[str, int]]:
    """Yield ``(imported lro_async module, line)`` for each import in *module*."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    nodes = _runtime_imports(tree) if at_runtime else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target.startswith("lro_async"):
                yield target, node.lineno


def _runtime_imports(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:`` (imports that only type checkers run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            yield from (n for child in node.orelse for n in [child, *_runtime_imports(child)])
            continue
        yield node
        yield from _runtime_imports(node)


def room_of(module: str) -> str:
    """The room a module lives in: a key of :data:`ALLOWED`, ``cli`` or ``top``."""
    if module in VOCABULARY:
        return "vocabulary"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "v1":
        return "vocabulary"  # generated wire types: they import only protobuf and grpc
    if len(parts) > 1 and (parts[1] in ALLOWED or parts[1] == "cli"):
        return parts[1]
    return "top"


def _violations(room: str) -> list[str]:
    found = []
    for module in MODULES:
        if room_of(module) != room:
            continue
        for target, line in _imports(module):
            if target in MODULES or target.startswith("lro_async.v1"):
                there = room_of(target)
                if there in (room, "vocabulary") or there in ALLOWED[room]:
                    continue
                found.append(f"{module}:{line} imports {target} ({there})")
    return found


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_each_room_imports_only_downward(room: str) -> None:
    assert _violations(room) == []


def test_the_command_is_imported_by_nothing_but_itself_and_the_entry_point() -> None:
    found = [
        f"{module}:{line}"
        for module in MODULES
        if room_of(module) != "cli" and module != "lro_async.__main__"
        for target, line in _imports(module)
        if target == "lro_async.cli" or target.startswith("lro_async.cli.")
    ]
    assert found == []


def test_no_import_cycles_between_modules() -> None:
    """Imports that run (at module level or in a function) never go round in a circle."""
    graph = {
        module: {t for t, _ in _imports(module, at_runtime=True) if t in MODULES}
        for module in MODULES
    }
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively over the modules in name order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


# -- tests, examples and benchmarks use the public API ---------------------------------

PUBLIC = (
    "lro_async",
    "lro_async.stores",
    "lro_async.http",
    "lro_async.testing",
    "lro_async.sync",
    "lro_async.telemetry",
)
"""The modules a user imports (the README documents each); ``lro_async.demo`` too, for its
generated service, though it exports nothing."""

USERS = ("tests", "examples", "benchmarks")


def _public_names() -> dict[int, str]:
    """``id`` of every object the public modules export -> the module to import it from."""
    import importlib

    found: dict[int, str] = {}
    for name in reversed(PUBLIC):  # the shortest path wins: lro_async's over its parts'
        module = importlib.import_module(name)
        for exported in getattr(module, "__all__", ()):
            found[id(getattr(module, exported))] = name
    return found


def _internal_imports_of_public_names() -> Iterator[str]:
    import importlib

    public = _public_names()
    root = PACKAGE.parent
    for folder in USERS:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom) or node.level or node.module is None:
                    continue
                if not node.module.startswith("lro_async.") or node.module in PUBLIC:
                    continue
                if path.stem == f"test_{node.module.rpartition('.')[2]}":
                    continue  # a test of that module itself
                module = importlib.import_module(node.module)
                for alias in node.names:
                    value = getattr(module, alias.name, None)
                    if value is None or isinstance(value, type(module)):
                        continue
                    home = public.get(id(value))
                    if home is not None:
                        where = f"{path.relative_to(root)}:{node.lineno}"
                        yield f"{where}: {alias.name} from {node.module}, not from {home}"


def test_tests_examples_and_benchmarks_import_public_names_from_the_public_api() -> None:
    """A name the public API exports is imported from it, never through an internal path:
    what users read and what the suite exercises stay the same (an internal module's own
    names, which no public module exports, may still be imported to test them)."""
    wrong = list(_internal_imports_of_public_names())
    assert not wrong, "\n".join(wrong)
