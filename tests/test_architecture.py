"""The package's shape: imports only go downward (no cycle, counting imports inside functions).

The import graph is read from the source with ``ast`` (nothing is imported), so an import
hidden inside a function to dodge a cycle still counts as an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "poisonprobe"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` reads from (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Edges module -> module inside the package: ``import a.b`` is an edge to ``a.b``;
    ``from a import x`` an edge to ``a.x`` when that is a module, else to ``a``."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, module, path.name == "__init__.py")
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            graph[module].update(t for t in targets if t in modules and t != module)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, set(comp)) for comp in components]


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first search)."""
    start = min(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError("a strongly connected component without a cycle")


def test_the_graph_is_read_from_the_source() -> None:
    graph = import_graph()
    # relative, nested and function-level imports are all edges
    assert "poisonprobe.head.objective" in graph["poisonprobe.head.curvature"]
    assert "poisonprobe.errors" in graph["poisonprobe.head.config"]
    assert graph["poisonprobe.errors"] == set()


def test_cycle_finder_on_a_toy_graph() -> None:
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert find_cycles(toy) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    if cycles:
        pytest.fail(
            "import cycles (import downward instead):\n" + "\n".join(" -> ".join(c) for c in cycles)
        )


MAX_LINES = 60
"""Longest function body (def line to last line, docstring included) outside the allowlist."""

LONG_FUNCTIONS = {
    # (module path under src/poisonprobe, function): each carries a `# long:` reason comment
    ("attacks/emn.py", "emn"),
    ("attacks/gc/feature.py", "feature_gc"),
    ("attacks/ft/attack.py", "__call__"),  # FeatureTargeted.__call__
    ("attacks/ft/invert.py", "feature_match"),
    ("attacks/kkt.py", "kkt"),
    ("attacks/tgda.py", "tgda"),
    ("attacks/tgda.py", "tgda_feature"),
    ("cli.py", "export"),
    ("data/folder.py", "load_image_folder"),
    ("head/solvers.py", "lbfgs_float32"),
    ("report/markdown.py", "write_report"),
}
"""Functions allowed over ``MAX_LINES``; each has a ``# long: why`` comment right above it."""


def _functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef, list[str]]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((rel, node, text.splitlines()))
    return found


def _length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return (node.end_lineno or node.lineno) - node.lineno + 1


def _reason_above(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> str:
    """The ``# long:`` comment on the line above the function (above its decorators)."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    above = lines[first - 2].strip() if first >= 2 else ""
    return above.removeprefix("# long:").strip() if above.startswith("# long:") else ""


def test_no_long_functions() -> None:
    too_long = [
        f"{rel}:{node.lineno} {node.name} ({_length(node)} lines)"
        for rel, node, _ in _functions()
        if _length(node) > MAX_LINES and (rel, node.name) not in LONG_FUNCTIONS
    ]
    assert not too_long, f"functions over {MAX_LINES} lines (split them):\n" + "\n".join(too_long)


def test_allowlisted_long_functions_say_why() -> None:
    seen = {(rel, node.name): (node, lines) for rel, node, lines in _functions()}
    for key in sorted(LONG_FUNCTIONS):
        assert key in seen, f"allowlisted {key} no longer exists: drop it from LONG_FUNCTIONS"
        node, lines = seen[key]
        assert _length(node) > MAX_LINES, f"{key} is short now: drop it from LONG_FUNCTIONS"
        assert _reason_above(node, lines), f"{key}: add a '# long: why' comment above it"
