"""The package's import structure: no cycles, imports only downward, no private names across modules.

Read from the sources with :mod:`ast` (every ``import`` statement, including those inside
functions), so the check does not depend on what happened to be imported first. Layers, lowest
first, as in ``../shared/STYLE.md``: a module may import its own layer and the layers below.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "implicitlab"

# rank of each top-level part of the package; a module may import modules of equal or lower rank
LAYERS: dict[str, int] = {
    "version": 0,
    "seeds": 0,
    "config": 1,
    "environment": 1,
    "losses": 2,
    "plots": 2,
    "models": 3,
    "references": 3,
    "data": 4,
    "diagnostics": 4,
    "train": 5,
    "measure": 5,  # `implicitlab measure`: a user's model from files, through the diagnostics
    "integrations": 6,  # loggers and callbacks for a user's own training loop (CSV, TensorBoard, Lightning)
    "experiments": 7,
    "sweep": 8,
    "runner": 9,
    "report": 9,
    "check": 10,
    "cli": 11,
    "__init__": 11,  # the package root re-exports the public API
    "__main__": 12,  # `python -m implicitlab` (what torchrun runs on each rank): the command line
}


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every import of a package module."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "implicitlab":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, "", node.lineno) if sub in modules else (target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "implicitlab"]
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS["__init__"] if len(parts) == 1 else LAYERS[parts[1]]


def test_every_top_level_part_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or
            (p.is_dir() and (p / "__init__.py").exists())}
    assert tops <= set(LAYERS), f"give these a layer in LAYERS: {sorted(tops - set(LAYERS))}"


def private_imports(package: Path = PACKAGE) -> list[str]:
    modules = _modules(package)
    return [f"{name}:{line} imports {target}.{imported}"
            for name, path in modules.items() for target, imported, line in _imports(name, path, modules)
            if imported.startswith("_") and not imported.startswith("__")]


def upward_imports(package: Path = PACKAGE) -> list[str]:
    modules = _modules(package)
    return [f"{name}:{line} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
            for name, path in modules.items() for target, _, line in _imports(name, path, modules)
            if _layer(target) > _layer(name)]


def import_cycles(package: Path = PACKAGE) -> list[list[str]]:
    modules = _modules(package)
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for target, _, _ in _imports(name, path, modules):
            if target in modules and target != name:
                graph[name].add(target)
    # Tarjan's strongly connected components: a component of more than one module is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return cycles


def test_no_private_name_is_imported_across_modules():
    bad = private_imports()
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_imports_only_point_down():
    bad = upward_imports()
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycle():
    cycles = import_cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in cycles)


def test_the_checks_see_a_planted_cycle_upward_import_and_private_import(tmp_path):
    """The checks above can fail: on a planted package they report each defect."""
    pkg = tmp_path / "implicitlab"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "losses.py").write_text("def f():\n    from .train import gd  # inside a function: still an import\n")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "gd.py").write_text("from ..losses import _hidden\n")
    assert import_cycles(pkg) == [["implicitlab.losses", "implicitlab.train.gd"]]
    assert private_imports(pkg) == ["implicitlab.train.gd:1 imports implicitlab.losses._hidden"]
    assert upward_imports(pkg) == ["implicitlab.losses:2 (layer 2) imports implicitlab.train.gd (layer 5)"]
