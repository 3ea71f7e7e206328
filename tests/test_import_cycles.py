"""No import cycles among stoke's modules.

Every module under ``src/stoke`` is parsed with ``ast`` (nothing is imported) and each explicit import of
a stoke module is an edge: absolute and relative imports, ``from package import submodule`` as an import
of the submodule, imports inside functions and under ``if TYPE_CHECKING:`` included. The implicit import
of a module's parent packages is not an edge (``import stoke.format.shard`` runs ``stoke/__init__.py``
and ``stoke/format/__init__.py`` first, but a package's ``__init__`` importing its own submodules is the
usual layout, not a cycle). A strongly connected component of more than one module is a cycle: modules
that cannot be understood, tested or imported one without the other. A function-local import hides a
cycle from Python, not from a reader, so it counts too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "stoke"


def modules() -> dict[str, Path]:
    """Every module of stoke by its dotted name (a package by its own name, for its ``__init__.py``)."""
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The stoke modules that module ``name`` (at ``path``) imports explicitly, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _stoke_module(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in known:  # from stoke.format import shard: the submodule itself
                    yield submodule
                else:
                    yield from _stoke_module(target, known)


def _stoke_module(dotted: str, known: dict[str, Path]) -> Iterator[str]:
    """``dotted`` if it names a stoke module (``import stoke.x.y`` imports ``stoke.x.y``)."""
    if dotted in known:
        yield dotted


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imported(name, path, known)) - {name} for name, path in known.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` with more than one node, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        # iterative depth-first search: (node, iterator over its successors)
        work: list[tuple[str, Iterator[str]]] = []
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work.append((root, iter(sorted(graph[root]))))
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return sorted(components)


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    """One line per component: its modules and, for each, which of the others it imports."""
    members = set(component)
    edges = "; ".join(f"{name} -> {', '.join(sorted(graph[name] & members))}" for name in component)
    return f"{' <-> '.join(component)} ({edges})"


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph()
    assert "stoke.errors" in graph["stoke.format.shard"]  # from stoke.errors import FormatError
    assert "stoke.format.atomic" in graph["stoke.format.shard"]
    assert "stoke.format.mapguard" in graph["stoke.format.shard"]  # from stoke.format.mapguard import ...
    # from stoke.format import _mapguard would name a compiled module: not a .py file, not a node
    assert all(target.startswith(PACKAGE) for targets in graph.values() for target in targets)


def test_relative_and_function_local_imports_are_edges(tmp_path: Path) -> None:
    root = tmp_path / PACKAGE
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("from . import a\n")
    (root / "a.py").write_text("def f():\n    from stoke.sub import b\n")
    (root / "sub" / "__init__.py").write_text("")
    (root / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\nfrom .c import g\n"
    )
    (root / "sub" / "c.py").write_text("import stoke.a\n")
    known = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(tmp_path).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        known[".".join(parts)] = path
    graph = {name: set(imported(name, path, known)) - {name} for name, path in known.items()}
    assert graph == {
        "stoke": {"stoke.a"},
        "stoke.a": {"stoke.sub.b"},
        "stoke.sub": set(),
        "stoke.sub.b": {"stoke.a", "stoke.sub.c"},
        "stoke.sub.c": {"stoke.a"},
    }
    assert strongly_connected(graph) == [["stoke.a", "stoke.sub.b", "stoke.sub.c"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = [describe(component, graph) for component in strongly_connected(graph)]
    assert not cycles, "import cycles among stoke's modules:\n" + "\n".join(cycles)
