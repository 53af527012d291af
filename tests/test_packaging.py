"""The built wheel holds the pillar folders inside the one package, and its data files."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_contents(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        # without build isolation the build needs setuptools in this environment
        pytest.fail(proc.stdout[-2000:] + proc.stderr[-2000:])
    (wheel,) = tmp_path.glob("qlmio_opt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "qlmio_opt/__init__.py",
        "qlmio_opt/formulations/__init__.py",
        "qlmio_opt/formulations/problem.py",
        "qlmio_opt/predictors/analytic.py",
        "qlmio_opt/solvers/baselines.py",
        "qlmio_opt/domain/schema/instance.schema.json",
        "qlmio_opt/faces/service/openapi.json",
        "qlmio_opt/domain/catalog/data/models.toml",
        "qlmio_opt/domain/catalog/data/devices.toml",
        "qlmio_opt/py.typed",
    ):
        assert module in names, module
    assert any(n.startswith("qlmio_opt/data/") for n in names)
    top = {n.split("/")[0] for n in names}
    assert top <= {"qlmio_opt", *(n.split("/")[0] for n in names if ".dist-info" in n)}, top
