"""Unit layer: the package's layers never run back up, and no module imports itself round a circle.

Each process package (one per program of the container) imports only itself and the shared layers (settings,
preflight, paths, state, log, tmuxctl, ipc, wire, programs, ...); a shared layer imports no process package. Read
from the source with ast, lazy imports inside functions included.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "container" / "persistent_notebooks"
PROCESSES = {"server", "keeper", "runner", "tmux", "supervisor", "cli"}


def module_name(path: Path, root: Path, prefix: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([prefix, *parts])


def runtime_nodes(tree: ast.AST):
    """Every node, but those under `if TYPE_CHECKING:` (imports for annotations only, never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of `known` that the file imports (a package's __init__ counts as the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known]
            targets = submodules or [module]  # `from . import x` of a sibling module is not an import of the package
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(root: Path, prefix: str) -> dict[str, set[str]]:
    files = {module_name(p, root, prefix): p for p in root.rglob("*.py")}
    return {name: imports_of(path, name, set(files)) for name, path in files.items()}


def process_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PROCESSES else None


def breaks(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in edges.items():
        for target in targets:
            if process_of(target) and process_of(target) != process_of(module):
                where = f"process package {process_of(module)}" if process_of(module) else "a shared layer"
                found.append(f"{module} ({where}) imports {target} (process package {process_of(target)})")
    return sorted(found)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every circle of imports, each found once (from its smallest module)."""
    found = []

    def walk(start: str, node: str, trail: list[str]) -> None:
        for target in sorted(edges.get(node, ())):
            if target == start:
                found.append([*trail, start])
            elif target > start and target not in trail:
                walk(start, target, [*trail, target])

    for start in sorted(edges):
        walk(start, start, [start])
    return found


def test_process_packages_import_only_themselves_and_the_shared_layers():
    """No process package should import another one, and no shared layer any process package."""
    assert breaks(graph(PACKAGE, "persistent_notebooks")) == []


@pytest.mark.parametrize(("root", "prefix"), [(PACKAGE, "persistent_notebooks"),
                                              (REPO / "hub" / "persistent_hub", "persistent_hub"),
                                              (REPO / "benchmarks", "benchmarks"),
                                              (REPO / "tests", "tests")])
def test_no_module_imports_itself_round_a_circle(root, prefix):
    """No circle of imports, in the package, the hub's, the benchmarks or the tests' helpers."""
    edges = graph(root, prefix)
    if prefix in ("benchmarks", "tests"):  # scripts beside each other, imported by their bare names
        flat = {name.rpartition(".")[2]: name for name in edges}
        for path in root.glob("*.py"):
            name = module_name(path, root, prefix)
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and not node.level and node.module in flat:
                    edges[name].add(flat[node.module])
                elif isinstance(node, ast.Import):
                    edges[name].update(flat[a.name] for a in node.names if a.name in flat)
    assert circles(edges) == []


def test_the_check_finds_a_break_and_a_circle():
    """The two checks themselves: a process package importing another, and two modules importing each other."""
    edges = {"persistent_notebooks.cli.a": {"persistent_notebooks.runner.b"},
             "persistent_notebooks.runner.b": {"persistent_notebooks.cli.a"},
             "persistent_notebooks.paths": {"persistent_notebooks.server.c"}}
    assert len(breaks(edges)) == 3
    assert circles(edges) == [["persistent_notebooks.cli.a", "persistent_notebooks.runner.b",
                               "persistent_notebooks.cli.a"]]


if __name__ == "__main__":
    print("\n".join(breaks(graph(PACKAGE, "persistent_notebooks"))), file=sys.stderr)
