"""The package's shape, checked on its source: no import cycle, and neither the library nor the benchmarks import
the pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stillhouse"
BENCHMARKS = PACKAGE.parent / "benchmarks"
# What may not import ``stillhouse.pipelines``: the library packages, the shared modules beside them, and the
# benchmarks (which call the library's functions, or the command line for what a run built).
LIBRARY = ("stillhouse.retrievers", "stillhouse.generators", "stillhouse.eval", "stillhouse.settings",
           "stillhouse.artifacts", "benchmarks")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, modules: set[str]) -> set[str]:
    """Every project module ``path`` imports, at module level or inside a function (a lazy import still couples)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from a.b import c``: the module a.b.c when c is one, else a.b
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted([*PACKAGE.rglob("*.py"), *BENCHMARKS.rglob("*.py")])
    modules = {module_name(p) for p in paths}
    return {module_name(p): project_imports(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph[node]):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
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


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    # A function-level import (search_task's hybrid import) and a package-relative one are both edges.
    assert "stillhouse.pipelines.tasks.hybrid" in graph["stillhouse.pipelines.dag"]
    assert "stillhouse.pipelines.cli" in graph["stillhouse.__main__"]
    assert "stillhouse.eval.query_cost" in graph["benchmarks.impact_latency"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_inside_the_project() -> None:
    assert cycles(import_graph()) == []


def test_the_library_packages_and_benchmarks_never_import_the_pipeline() -> None:
    offending = {module: sorted(t for t in targets if t.startswith("stillhouse.pipelines"))
                 for module, targets in import_graph().items() if module.startswith(LIBRARY)}
    assert {m: t for m, t in offending.items() if t} == {}


def test_the_architecture_doc_shows_the_main_jobs_dag_as_the_code_builds_it(beir_dir: Path) -> None:
    from stillhouse.pipelines.config import load_config
    from stillhouse.pipelines.dag import build_roots, family_graph, mermaid

    root = PACKAGE.parent
    roots = build_roots(load_config(root / "configs" / "scifact.toml"), root / "work", beir_dir)
    doc = (root / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawn = doc.split("```mermaid\n", 1)[1].split("\n```", 1)[0]
    assert drawn == mermaid(family_graph(roots)), "regenerate with `stillhouse status configs/scifact.toml --graph`"


def test_every_task_build_is_wiring_of_at_most_fifteen_lines() -> None:
    """A task reads its inputs, calls one library function and writes its outputs: the method lives in the library."""
    lengths = {}
    for path in sorted((PACKAGE / "pipelines" / "tasks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for method in node.body:
                    if isinstance(method, ast.FunctionDef) and method.name == "build":
                        lengths[f"{path.stem}.{node.name}"] = method.end_lineno - method.lineno + 1
    assert len(lengths) > 30  # every task of the DAG was seen
    assert {task: n for task, n in lengths.items() if n > 15} == {}
