"""Layers: the subpackages of salbench import each other in one direction only.

Every module of salbench/ is parsed (AST); every import at any depth counts, lazy imports
inside functions included, except those under ``if TYPE_CHECKING:`` (they never run). A
module ``salbench.<part>.…`` belongs to the node ``<part>`` (a subpackage, or a top-level
module such as ``errors``); an import of another node is an edge. A cycle among nodes fails
the test, which prints the whole graph. ``python tests/test_layers.py`` prints it too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "salbench"

#: Cycles tolerated, each as the exact set of nodes of one strongly connected component:
#: none. (``actors <-> pipeline`` and ``datasets <-> models`` were removed by moving the run
#: configuration and cell keys below the actors, and the crop geometry into ``imaging``.)
ALLOWED: set[frozenset[str]] = set()


def _node(module: str) -> str | None:
    """``salbench.a.b`` -> ``a``; the root package itself and other packages -> None."""
    parts = module.split(".")
    if parts[0] != "salbench" or len(parts) < 2:
        return None
    return parts[1]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute module names imported anywhere in ``tree`` outside TYPE_CHECKING blocks."""
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # ``from salbench import methods`` imports the subpackage ``methods``
            found.update(f"{base}.{alias.name}" for alias in node.names if base == "salbench")
        stack.extend(ast.iter_child_nodes(node))
    return found


def subpackage_graph() -> dict[str, set[str]]:
    """Node -> the other nodes it imports, over every module of salbench/."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        source = _node(module)
        if source is None:
            continue
        graph.setdefault(source, set())
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for imported in _imports(tree, module, is_package):
            target = _node(imported)
            if target is not None and target != source:
                graph[source].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The components of more than one node (Tarjan), i.e. the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def render(graph: dict[str, set[str]]) -> str:
    """One line per node: ``node -> imported, nodes``."""
    return "\n".join(f"{v} -> {', '.join(sorted(graph[v])) or '(nothing)'}"
                     for v in sorted(graph))


def test_the_scanner_sees_lazy_imports_and_skips_type_checking():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from salbench.pipeline import config\n"
        "else:\n    import salbench.errors\n"
        "def f():\n    from salbench.models.base import Classifier\n"
        "    from salbench import metrics\n"
        "from .base import x\n"
    )
    got = {_node(m) for m in _imports(tree, "salbench.methods.ig", False)} - {None}
    assert got == {"errors", "models", "metrics", "methods"}


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert strongly_connected(graph) == [frozenset("abc")]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_subpackages():
    graph = subpackage_graph()
    assert {"datasets", "models", "methods", "metrics"} <= set(graph)
    cycles = [c for c in strongly_connected(graph) if c not in ALLOWED]
    assert not cycles, (
        f"import cycles between subpackages: {[sorted(c) for c in cycles]}\n"
        f"the graph (node -> what it imports):\n{render(graph)}"
    )


if __name__ == "__main__":
    g = subpackage_graph()
    print(render(g))
    print("cycles:", [sorted(c) for c in strongly_connected(g)] or "none")
