"""Count the import graph of a package: modules, arrows, floors, import circles and arrows that run back up.

Why: the shape of the code (issue 27's before/after figures) is measured, not described.
Arrows are our own imports (anywhere in a file, function-local and ``TYPE_CHECKING`` ones
included), resolved to the module they name.  A *circle* is a strongly connected set of
modules; an arrow *runs back up* when it closes one: a back edge of a depth-first walk over
the modules in name order.  Floors are the longest chain of arrows below a module, circles
counted as one floor.  ``lint-imports`` (pyproject.toml) enforces the layers; this only counts.

    python scripts/import_graph.py [ROOT] [PACKAGE]     # defaults: the repository, sweep
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path


def modules(root: Path, package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def arrows(mods: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def main(root: Path, package: str) -> None:
    mods = modules(root, package)
    graph = arrows(mods)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []
    comp: dict[str, int] = {}
    back = 0
    state: dict[str, int] = {}                      # 1: on the walk's path, 2: done

    def visit(v: str) -> None:                      # Tarjan's strongly connected components + back edges
        nonlocal back
        index[v] = low[v] = len(index)
        stack.append(v)
        state[v] = 1
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif state.get(w) == 1:
                back += 1
            if w in stack:
                low[v] = min(low[v], index[w])
        state[v] = 2
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                members.append(w)
                comp[w] = len(circles)
                if w == v:
                    break
            circles.append(sorted(members))

    sys.setrecursionlimit(10_000)
    for v in sorted(mods):
        if v not in index:
            visit(v)
    floor: dict[int, int] = {}

    def floor_of(c: int) -> int:
        if c not in floor:
            floor[c] = 0
            below = {comp[w] for v in circles[c] for w in graph[v]} - {c}
            floor[c] = 1 + max((floor_of(d) for d in below), default=-1)
        return floor[c]

    top = len([p for p in (root / package).glob("*.py")])
    real = [c for c in circles if len(c) > 1]
    print(f"{package}: {len(mods)} modules ({top} files at {package}/ top level), "
          f"{sum(map(len, graph.values()))} arrows, {1 + max(map(floor_of, range(len(circles))))} floors, "
          f"{len(real)} import circles, {back} arrows that run back up")
    for c in real:
        print("  circle:", " ".join(c))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent,
         sys.argv[2] if len(sys.argv) > 2 else "sweep")
