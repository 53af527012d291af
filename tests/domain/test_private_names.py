"""No module of the domain or the simulator reads another module's private names.

A name with a leading underscore is its module's own business: another module that needs it
should get a public, documented name instead (the simulator's workload and dataset once imported
the window generator's ``_requests``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("qlmio_opt/domain", "qlmio_opt/simulator")


def _private_uses(path: Path) -> list[str]:
    """Imports of ``_name`` from other modules and ``x._name`` reads on anything but
    ``self``/``cls``, with their line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            found += [
                f"{node.lineno}: from {node.module} import {alias.name}"
                for alias in node.names
                if alias.name.startswith("_") and not alias.name.startswith("__")
            ]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if not own and not node.attr.startswith("__"):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


FILES = sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_no_private_name_of_another_module_is_read(path):
    assert _private_uses(path) == []
