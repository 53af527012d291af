"""The README is a test: its Python example and every line of its tour run as written (from a
folder that holds the repository's ``instances/``), each reading what the lines before it wrote;
its set-up commands are the ones CI runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

README = (ROOT / "README.md").read_text()

# Sizes the tour test shrinks so that the whole tour runs in about a minute; every other word of
# each line runs as written. (pattern in the README line, replacement)
SMALLER = [
    (r"--points 12", "--points 3 --time-limit 1"),
    (r"--duration 60", "--duration 10"),
    (r"--requests 400", "--requests 150"),
    (r"--count 4", "--count 2"),
    (r"evaluate-predictors(?=\s|$)", "evaluate-predictors --requests 100 --resamples 100"),
]


def _block_after(heading: str, language: str) -> str:
    section = README[README.index(heading) :]
    return re.search(rf"```{language}\n(.*?)```", section, flags=re.S).group(1)


def tour_lines() -> list[str]:
    """The tour's commands, comments dropped (a comment starts at '  #')."""
    lines = []
    for raw in _block_after("## A short tour", "bash").splitlines():
        line = raw.split("  #")[0].strip()
        if line:
            lines.append(line)
    return lines


def test_readme_python_blocks_run(monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})  # our own README, run as documentation


def test_setup_commands_are_what_ci_runs():
    setup = [
        line
        for line in _block_after("## Set-up", "bash").splitlines()
        if line and not line.startswith("#")
    ]
    assert len(setup) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    for command in setup:
        assert command in ci, f"README set-up command not run by .ci/run: {command}"


def test_tour_reads_only_files_it_ships_or_writes():
    named = set(re.findall(r"instances/[\w./\[\]*-]+", "\n".join(tour_lines())))
    for pattern in named:
        assert list(ROOT.glob(pattern)), f"{pattern} matches no file of the repository"


@pytest.mark.slow
def test_tour_runs_line_by_line(tmp_path):
    (tmp_path / "instances").symlink_to(ROOT / "instances")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MPLBACKEND": "Agg",
    }
    for line in tour_lines():
        command = line
        for pattern, replacement in SMALLER:
            command = re.sub(pattern, replacement, command)
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        assert "Traceback" not in proc.stderr, command
    for written in ("solution.json", "out", "generated", "solutions", "replay", "bench", "models"):
        assert (tmp_path / written).exists(), written
