"""The layout holds: imports point down the layers (docs/design.md, "Layers"), no import
cycle (not even inside a function or under TYPE_CHECKING), a domain of the standard
library and codecs only, and no module or function a newcomer must fear."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pm_streams", "tables", "web", "bridges")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
DOMAIN_MAY_IMPORT = {"orjson"}  # besides the standard library and the domain itself

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("domain", ("pm_streams.domain",)),
    (
        "base",
        (
            "pm_streams",  # the package itself: its version
            "pm_streams.settings",
            "pm_streams.env",
            "pm_streams.names",
            "pm_streams.logs",
            "pm_streams.metrics",
            "pm_streams.clock",
            "pm_streams.backoff",
            "pm_streams.topics",
            "pm_streams.events",
            "pm_streams.stored",
            "pm_streams.deps",
        ),
    ),
    ("runtime", ("pm_streams.runtime", "pm_streams.consumer", "pm_streams.processing")),
    ("adapters", ("tables", "bridges", "pm_streams.exposure", "pm_streams.prices")),
    ("tables of the agents", ("pm_streams.portfolio", "pm_streams.fill_ids")),
    ("context", ("pm_streams.context",)),
    ("agents and web", ("pm_streams.agents", "web")),
    (
        "roots",
        ("pm_streams.app", "pm_streams.cli", "pm_streams.cli_client", "pm_streams.outputs"),
    ),
]
"""Bottom to top; a module may import its own layer and those below. The roots (entry
points and the composition root) may import anything; nothing imports them."""


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = modules()


def imported(path: Path) -> Iterator[tuple[str, int]]:
    """Every module name an import statement anywhere in the file names, with its line."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def project_module(name: str) -> str | None:
    """The project module `name` refers to (a name inside a module: that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = {project_module(target) for target, _ in imported(path)}
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def layer_of(module: str) -> int:
    best = (-1, -1)  # (length of the matching prefix, layer)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), index))
    if best[1] < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return best[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    assert cycles(edges()) == []


def test_the_cycle_check_finds_a_lazy_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in edges().items()
        for target in targets
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_the_domain_imports_only_the_standard_library_and_codecs() -> None:
    allowed = set(sys.stdlib_module_names) | DOMAIN_MAY_IMPORT
    foreign = [
        f"{name}:{line} imports {target}"
        for name, path in MODULES.items()
        if name.startswith("pm_streams.domain")
        for target, line in imported(path)
        if not target.startswith("pm_streams.domain")
        and target.partition(".")[0] not in allowed
        and target != "__future__"
    ]
    assert foreign == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_and_function_sizes(name: str) -> None:
    source = MODULES[name].read_text()
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name}: {lines} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == [], f"{name}: functions over {MAX_FUNCTION_LINES} lines"
