"""Layers: the subpackages of salbench import each other in one direction only, and no
module imports itself through others.

Every module of salbench/ is parsed (AST); every import at any depth counts, lazy imports
inside functions included, except those under ``if TYPE_CHECKING:`` (they never run).

Packages: a module ``salbench.<part>.…`` belongs to the node ``<part>`` (a subpackage, or a
top-level module such as ``errors``); an import of another node is an edge. A cycle among
nodes fails the test, which prints the whole graph.

Modules: each module (a package's ``__init__`` is the package) is a node; ``import a.b`` is
an edge to ``a.b``, ``from a import n`` to the module ``a.n`` when there is one, else to
``a``. Importing ``a.b`` also runs ``a``'s ``__init__`` first, but that is no edge: a
package that imports its own modules is no circle unless one of them imports a name of the
package back (``from a import register`` in ``a/x.py``, which is one). A cycle among modules
fails, inside a package or across packages.

The results layer (``salbench.results``) imports nothing of the execution side
(``salbench.pipeline``, ``salbench.actors``, Ray), and the writer actor's process imports no
torch. ``python tests/test_layers.py`` prints both graphs' cycles.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
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


def _statements(tree: ast.AST, module: str,
                is_package: bool) -> Iterator[tuple[str | None, list[str]]]:
    """Each import of ``tree`` outside TYPE_CHECKING blocks, lazy ones included, as
    ``(None, [names])`` for ``import a.b`` and ``(absolute base, [names])`` for
    ``from base import names`` (relative bases resolved against ``module``)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield None, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base, [alias.name for alias in node.names]
        stack.extend(ast.iter_child_nodes(node))


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute module names imported anywhere in ``tree`` outside TYPE_CHECKING blocks."""
    found: set[str] = set()
    for base, names in _statements(tree, module, is_package):
        if base is None:
            found.update(names)
            continue
        found.add(base)
        # ``from salbench import methods`` imports the subpackage ``methods``
        found.update(f"{base}.{name}" for name in names if base == "salbench")
    return found


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of salbench/: dotted name -> (file, is a package's ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        is_package = rel.name == "__init__"
        out[".".join(rel.parts[:-1] if is_package else rel.parts)] = (path, is_package)
    return out


def _known(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    """The longest prefix of ``name`` that is a module of salbench/, or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def module_imports(tree: ast.AST, module: str, is_package: bool,
                   modules: dict[str, tuple[Path, bool]]) -> set[str]:
    """The modules of salbench/ that ``tree`` imports outside TYPE_CHECKING blocks:
    ``import a.b`` -> ``a.b``; ``from a import n`` -> ``a.n`` when it is a module, else
    ``a``."""
    found: set[str | None] = set()
    for base, names in _statements(tree, module, is_package):
        if base is None:
            found.update(_known(name, modules) for name in names)
            continue
        for name in names:
            sub = f"{base}.{name}"
            found.add(sub if sub in modules else _known(base, modules))
    return {m for m in found if m is not None and m != module}


def module_graph() -> dict[str, set[str]]:
    """Module -> the modules of salbench/ it imports (see the module docstring)."""
    modules = _modules()
    graph = {}
    for module, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = module_imports(tree, module, is_package, modules)
    return graph


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


def test_the_module_scanner_resolves_submodules_and_names():
    modules = {m: (Path(), m in ("p", "p.sub")) for m in
               ("p", "p.a", "p.b", "p.sub", "p.sub.c", "q")}
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import q\n"
        "from p import b, register\n"       # p.b a module, register a name of p
        "from .sub import c\n"
        "def f():\n    import p.sub.c.x\n"  # lazy, and deeper than any module
        "import numpy\n"
    )
    assert module_imports(tree, "p.a", False, modules) == {"p.b", "p", "p.sub.c"}


def test_no_import_cycle_between_modules():
    graph = module_graph()
    assert {"salbench.results.scan", "salbench.pipeline.writer"} <= set(graph)
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles between modules:\n" + "\n".join(
        "  " + ", ".join(sorted(c)) + "\n    " + "\n    ".join(
            f"{m} -> {', '.join(sorted(graph[m] & c))}" for m in sorted(c))
        for c in cycles)


def _closure(graph: dict[str, set[str]], roots: list[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return seen


def test_the_results_layer_imports_nothing_of_the_execution_side():
    """``salbench.results`` and everything it imports, lazily or not: no module of
    ``salbench.pipeline`` or ``salbench.actors``, and no import of Ray."""
    graph, modules = module_graph(), _modules()
    reached = _closure(graph, [m for m in graph if m.split(".")[:2] == ["salbench", "results"]])
    assert len(reached) > 8
    execution = sorted(m for m in reached if m.split(".")[1] in ("pipeline", "actors"))
    assert not execution, f"the results layer reaches the execution side: {execution}"
    with_ray = sorted(m for m in reached if any(
        n.split(".")[0] == "ray" for n in _imports(ast.parse(modules[m][0].read_text(
            encoding="utf-8")), m, modules[m][1])))
    assert not with_ray, f"the results layer reaches modules that import Ray: {with_ray}"


def test_others_use_only_the_results_layers_public_names():
    """Outside ``salbench.results``, nothing imports a private name (``_x``) of it."""
    private = []
    for module, (path, _) in _modules().items():
        if module.split(".")[:2] == ["salbench", "results"]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level and (
                    node.module or "").startswith("salbench.results"):
                private += [f"{module}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_")]
    assert not private, private


#: Modules imported in a fresh process that must not load torch: the writer actor's (it
#: writes Parquet on the driver's node), the run's small actors (cell counter, crash
#: journal: each its own Ray worker process) and the results layer's readers.
TORCH_FREE = ("salbench.pipeline.writer_actor", "salbench.actors.progress",
              "salbench.actors.journal", "salbench.results.tables",
              "salbench.results.scan", "salbench.results.groups", "salbench.results.samples",
              "salbench.results.reuse")


def test_the_writer_actor_and_the_readers_import_no_torch():
    code = ("import sys\n"
            + "".join(f"import {m}\n" for m in TORCH_FREE)
            + "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'torch')\n"
            + "assert not loaded, loaded[:5]\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


if __name__ == "__main__":
    g = subpackage_graph()
    print(render(g))
    print("cycles:", [sorted(c) for c in strongly_connected(g)] or "none")
    print("module cycles:", [sorted(c) for c in strongly_connected(module_graph())] or "none")
