"""The package's import graph: no circles, and layers import only downwards (docs/ARCHITECTURE.md).

Read from the source (every ``import`` statement, at module level or inside a function), so a lazy
import that closes a circle counts as much as a top-level one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# where each installed package's source lives (pyproject's package-dir)
PACKAGES = {"autoaug": ROOT / "autoaug", "autoaug.trainers": ROOT / "trainers", "autoaug.storage": ROOT / "storage",
            "autoaug.dashboards": ROOT / "dashboards"}
# layer -> the layers it may import (besides itself); docs/ARCHITECTURE.md, "Layers"
ALLOWED = {
    "errors": set(),
    "batch": {"errors"},
    "ops": {"errors", "batch"},
    "policy": {"errors", "batch", "ops"},
    "trainers": {"errors", "batch", "ops", "policy", "synthetic"},
    "storage": {"errors"},
    "search": {"errors", "batch", "ops", "policy", "trainers", "storage", "synthetic", "version"},
    "dashboards": {"errors", "policy", "search", "storage", "version"},
}


def _modules() -> dict[str, Path]:
    modules = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [part for part in path.relative_to(folder).with_suffix("").parts if part != "__init__"]
            if prefix == "autoaug" and parts and parts[0] in ("trainers", "storage", "dashboards"):
                continue
            modules[".".join([prefix, *parts])] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports (``from a import b`` counts as a.b when that is a module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rsplit(".", 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    found.add(f"{base}.{alias.name}")
                elif base in MODULES:
                    found.add(base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
    found.discard(name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1] == "__main__" or parts[1] == "cli":
        return "cli"
    return {"__init__": "version"}.get(parts[1], parts[1])


def _cycles() -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(GRAPH[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    return components


def test_the_graph_is_read_from_the_source():
    # a reader that found nothing would pass every check below
    assert len(MODULES) > 50
    assert "autoaug.search.study" in GRAPH["autoaug.search.controller"]
    assert "autoaug.ops.registry" in GRAPH["autoaug.ops"]


def test_no_import_circles():
    assert _cycles() == []


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_downwards(layer):
    upward = sorted(f"{module} imports {target}" for module, targets in GRAPH.items() if _layer(module) == layer
                    for target in targets if _layer(target) not in ALLOWED[layer] | {layer, "package"})
    assert upward == []
