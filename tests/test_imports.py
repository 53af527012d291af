"""Lazy faces: importing the package, the command line or one solver loads only what it needs
(checked in a fresh interpreter; run times are measured by benchmarks/startup.py, not here)."""

import json
import subprocess
import sys

import pytest

HEAVY = ("pandas", "torch", "sklearn", "highspy", "pyomo", "matplotlib", "rich", "typer")


def loaded_after(statement: str) -> set[str]:
    """Top-level names of the modules a fresh interpreter holds after ``statement``."""
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_importing_the_package_loads_nothing_heavy():
    modules = loaded_after("import qlmio_opt")
    assert not {m for m in modules if m.split(".")[0] in (*HEAVY, "numpy", "pydantic")}
    assert {m for m in modules if m.startswith("qlmio_opt")} <= {
        "qlmio_opt",
        "qlmio_opt.domain",
        "qlmio_opt.domain.version",
    }


def test_the_command_line_parser_loads_no_library_of_a_command():
    modules = loaded_after("from qlmio_opt.faces.cli import parser; parser()")
    assert not {m for m in modules if m.split(".")[0] in (*HEAVY, "numpy", "pydantic")}


@pytest.mark.parametrize(
    "module", ["qlmio_opt.solvers.greedy_state", "qlmio_opt.solvers.greedy", "qlmio_opt.solvers"]
)
def test_a_solver_loads_no_pandas_torch_predictor_or_simulator(module):
    modules = loaded_after(f"import {module}")
    for forbidden in ("pandas", "torch", "sklearn", "qlmio_opt.predictors", "qlmio_opt.simulator"):
        assert not {m for m in modules if m == forbidden or m.startswith(forbidden + ".")}, (
            f"{module} loads {forbidden}"
        )


def test_a_public_name_is_imported_on_first_use():
    modules = loaded_after("import qlmio_opt; qlmio_opt.read_instance")
    assert "qlmio_opt.domain.io" in modules
    assert "qlmio_opt.app.solve" not in modules
