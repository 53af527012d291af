"""The layers of docs/architecture.md, enforced: every module's imports (read with ``ast``) follow
the layer order and the never-rules, and no two files import each other in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

import qlmio_opt

PACKAGE = Path(qlmio_opt.__file__).resolve().parent

LAYERS = {
    "qlmio_opt.domain": 0,
    "qlmio_opt.predictors": 1,
    "qlmio_opt.formulations": 2,
    "qlmio_opt.solvers": 3,
    "qlmio_opt.app": 4,
    "qlmio_opt.simulator": 4,
    "qlmio_opt.faces": 5,
    "qlmio_opt.client": 5,  # the service's client: a face, beside faces.service
}
"""The layer of every module, by the package it is in (docs/architecture.md)."""

WORLD_INTERNALS = tuple(
    f"qlmio_opt.simulator.{name}" for name in ("world", "engine", "speeds", "truth_draws", "oracle")
)
PUBLIC_PILLAR_MODULES = {
    "qlmio_opt.solvers",
    "qlmio_opt.solvers.base",
    "qlmio_opt.predictors",
    "qlmio_opt.predictors.base",
}


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (the pillar links are followed)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(["qlmio_opt", *parts])
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = module_files()


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (imports for annotations
    only, never executed)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path) -> set[str]:
    """The qlmio_opt modules ``name`` imports when it runs (top level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # "from qlmio_opt.x import y" may import the submodule x.y
            found |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
    return {m for m in found if m == "qlmio_opt" or m.startswith("qlmio_opt.")}


def layer(module: str) -> int | None:
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


IMPORTS = {name: imports_of(name, path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if m != "qlmio_opt" and layer(m) is None]
    assert not unplaced, f"modules outside every layer: {unplaced}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m != "qlmio_opt"))
def test_imports_follow_the_layer_order(name):
    mine = layer(name)
    upward = sorted(m for m in IMPORTS[name] if m == "qlmio_opt" or layer(m) > mine)
    assert not upward, f"{name} (layer {mine}) imports from above: {upward}"


def test_solvers_never_call_predictors():
    for name, imported in IMPORTS.items():
        if name.startswith("qlmio_opt.solvers"):
            bad = sorted(m for m in imported if m.startswith("qlmio_opt.predictors"))
            assert not bad, f"{name} imports {bad}"


def test_formulations_never_run_highs():
    for name, path in MODULES.items():
        if name.startswith("qlmio_opt.formulations"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
            assert "highspy" not in names, f"{name} imports highspy"


def test_nothing_outside_the_simulator_reads_its_truth():
    for name, imported in IMPORTS.items():
        if name.startswith("qlmio_opt.simulator"):
            continue
        bad = sorted(m for m in imported if m.startswith(WORLD_INTERNALS))
        assert not bad, f"{name} imports the world's internals {bad}"


def test_the_simulator_uses_only_the_pillars_public_interfaces():
    for name, imported in IMPORTS.items():
        if not name.startswith("qlmio_opt.simulator"):
            continue
        bad = sorted(
            m
            for m in imported
            if m.startswith(("qlmio_opt.solvers", "qlmio_opt.predictors"))
            and m not in PUBLIC_PILLAR_MODULES
        )
        assert not bad, f"{name} reaches into {bad}"


def test_the_checker_shares_no_code_with_the_model_it_checks():
    imported = IMPORTS["qlmio_opt.app.check"]
    bad = sorted(
        m for m in imported if m.startswith(("qlmio_opt.formulations", "qlmio_opt.solvers"))
    )
    assert not bad, f"the independent checker imports {bad}"


def test_no_cycle_between_files():
    graph = nx.DiGraph()
    for name, imported in IMPORTS.items():
        for other in imported:
            # a package's __init__ importing its own submodules is a re-export, not a cycle
            if other in MODULES and other != name and not other.startswith(name + "."):
                graph.add_edge(name, other)
    cycles = list(nx.simple_cycles(graph, length_bound=6))
    assert not cycles, f"import cycles: {cycles[:5]}"
