"""The README is a test: its Python examples and every line of its tour run as written (from a
folder that holds the repository's ``instances/``), each reading what the lines before it wrote;
its set-up commands are the ones CI runs. The Scheduler page (docs/scheduler.md) runs too."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

README = (ROOT / "README.md").read_text()
SCHEDULER_PAGE = (ROOT / "docs" / "scheduler.md").read_text()

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


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_blocks_run(monkeypatch):
    blocks = python_blocks(README)
    assert blocks
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})  # our own README, run as documentation


def test_readme_shows_the_scheduler_loop():
    """One of the blocks the test above runs drives a Scheduler through its whole loop."""
    calls = ("Scheduler(", ".decide(", ".observe(", ".complete(")
    assert any(all(call in block for call in calls) for block in python_blocks(README))


def test_scheduler_page_blocks_run_in_order(monkeypatch, capsys):
    """docs/scheduler.md's blocks build on each other: they run in one namespace, in order."""
    blocks = python_blocks(SCHEDULER_PAGE)
    assert len(blocks) >= 2
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/scheduler.md", "exec"), namespace)  # our own page
    # the observed state went in as the gauges and records gave it: one running, one waiting
    state = namespace["scheduler"].node_state(namespace["node"].id, now=6.0)
    assert (len(state.running), len(state.waiting)) == (1, 1)
    assert state.running[0].output_tokens == 12
    assert "q1" in capsys.readouterr().out


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
    # the measures the README names for `simulate --format json`, on the segment and engine asked
    replay = json.loads((tmp_path / "replay.json").read_text())
    assert replay["config"]["start_s"] == 600 and replay["config"]["engine"] == "serial-prefill"
    measures = {"mean_latency_s", "tcr", "expected_tcr", "predicted_mean_latency_s"}
    measures |= {"latency_prediction_error", "node_share", "node_latency_ratio"}
    assert all(f"`{name}`" in README for name in measures)
    assert set(replay["policies"]) == {"exact", "cloud-only"}
    for policy in replay["policies"].values():
        assert measures <= set(policy)
