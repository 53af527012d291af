"""The command line end to end: tables, JSON, exit codes, no tracebacks."""

import json
import subprocess
import sys

import pytest
from conftest import INSTANCES, SMALL

from qlmio_opt.faces.cli import EXIT_INFEASIBLE, EXIT_INPUT, main


def run(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "qlmio_opt.faces.cli", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def test_solve_default_window_prints_the_decision_table():
    proc = run("solve", str(INSTANCES / "window_042.json"))
    assert proc.returncode == 0, proc.stderr
    for word in ("decision per node", "links over the window", "mean predicted latency", "edge-0"):
        assert word in proc.stdout


def test_solve_json_has_the_solution_fields(capsys):
    code = main(
        ["solve", str(SMALL / "memory.json"), "--solver", "latency-greedy", "--format", "json"]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    for key in (
        "status",
        "objective",
        "assignment",
        "solver",
        "requests",
        "nodes",
        "links",
        "times",
    ):
        assert key in data
    assert data["status"] == "feasible"
    assert data["assignment"] == {"r0": "edge-0", "r1": "cloud-0", "r2": "cloud-0"}
    assert data["requests"][0] == {
        "request": "r0",
        "node": "edge-0",
        "quality": 0.8,
        "latency_s": 0.4,
    }


def test_solve_writes_solution_files(tmp_path, capsys):
    files = [str(SMALL / "memory.json"), str(SMALL / "bandwidth.json")]
    assert main(["solve", *files, "--solver", "latency-greedy", "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["bandwidth.solution.json", "memory.solution.json"]
    assert "solved windows" in capsys.readouterr().out
    assert main(["validate", *map(str, tmp_path.iterdir())]) == 0


def test_infeasible_window_exits_3_with_the_reason(capsys):
    code = main(["solve", str(SMALL / "infeasible.json")])
    out = capsys.readouterr().out
    assert code == EXIT_INFEASIBLE
    assert 'memory on node "edge-0": requests "r0", "r1" may run only there' in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["solve", "--solver", "magic"], "--solver magic: unknown solver"),
        (["solve", "--predictors", "psychic"], 'unknown predictors "psychic"'),
        (["generate", "--scenario", "nope", "--count", "1"], 'unknown scenario "nope"'),
    ],
)
def test_bad_options_are_usage_errors(args, message, capsys):
    code = main([*args[:1], str(SMALL / "memory.json"), *args[1:]] if args[0] == "solve" else args)
    assert code == EXIT_INPUT
    assert message in capsys.readouterr().err


def test_unknown_command_is_a_usage_error():
    proc = run("frobnicate")
    assert proc.returncode == 2
    assert "invalid choice: 'frobnicate'" in proc.stderr


def test_schema_command_prints_json_schema(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "Instance"
    assert "requests" in schema["properties"]


def test_catalog_command_lists_models_and_devices(capsys):
    assert main(["catalog", "models"]) == 0
    assert "qwen2-vl-72b" in capsys.readouterr().out
    assert main(["catalog", "devices"]) == 0
    assert "jetson-agx-orin" in capsys.readouterr().out


def test_generate_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["generate", "--count", "2", "--seed", "7", "--out", str(a)]) == 0
    assert main(["generate", "--count", "2", "--seed", "7", "--out", str(b)]) == 0
    for name in ("window_000.json", "window_001.json"):
        assert (a / name).read_text() == (b / name).read_text()
    assert main(["validate", str(a / "window_000.json"), str(a / "window_001.json")]) == 0


def test_committed_windows_are_what_the_generator_writes(tmp_path):
    assert main(["generate", "--count", "3", "--seed", "0", "--out", str(tmp_path)]) == 0
    for name in ("window_000.json", "window_001.json", "window_002.json"):
        assert (tmp_path / name).read_text() == (INSTANCES / name).read_text()


def test_compare_prints_gaps_and_writes_csv(tmp_path, capsys):
    out_csv = tmp_path / "c.csv"
    files = [str(SMALL / "memory.json"), str(SMALL / "bandwidth.json")]
    code = main(
        ["compare", *files, "--solvers", "exact,latency-greedy,all-cloud", "--out", str(out_csv)]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "median_gap_to_exact" in text and "latency-greedy" in text
    import pandas as pd

    frame = pd.read_csv(out_csv)
    mem = frame[(frame.instance == "small_memory") & (frame.solver == "latency-greedy")]
    assert mem.gap_to_exact.iloc[0] == pytest.approx((-21.7 + 22.3) / 22.3)
    assert mem.gap_to_bks.isna().all()  # instances/small has no bks.csv


def test_check_command_accepts_a_good_solution_and_rejects_a_tampered_one(tmp_path, capsys):
    sol = tmp_path / "s.json"
    assert main(["solve", str(SMALL / "memory.json"), "--out", str(sol)]) == 0
    assert main(["check", str(SMALL / "memory.json"), str(sol)]) == 0
    data = json.loads(sol.read_text())
    data["assignment"]["r2"] = "edge-0"  # 1.5 GB on a 0.8 GB node
    sol.write_text(json.dumps(data))
    assert main(["check", str(SMALL / "memory.json"), str(sol)]) == EXIT_INFEASIBLE
    assert "memory" in capsys.readouterr().out


def test_pareto_writes_csv_and_png(tmp_path):
    assert (
        main(["pareto", str(SMALL / "analytic.json"), "--points", "3", "--out", str(tmp_path)]) == 0
    )
    import pandas as pd

    frame = pd.read_csv(tmp_path / "analytic.pareto.csv")
    assert len(frame) == 3
    assert list(frame.status) == ["optimal"] * 3
    # the curve starts at the fastest decision and its three points differ
    assert frame.quality_target[0] == pytest.approx(frame.mean_quality[0])
    assert len(set(zip(frame.mean_quality, frame.mean_latency_s, strict=True))) == 3
    # a higher quality target never buys a lower latency
    assert frame.mean_latency_s.is_monotonic_increasing
    assert (tmp_path / "analytic.pareto.png").stat().st_size > 1000


def test_a_spinner_appears_only_when_a_solve_makes_one_wait(monkeypatch):
    import io
    import time

    from rich.console import Console

    from qlmio_opt.faces.cli import console

    buffer = io.StringIO()
    monkeypatch.setattr(console, "err", lambda: Console(file=buffer, force_terminal=True))
    with console.spinner_after(0.5, "quick one"):
        pass
    with console.spinner_after(0.05, "slow one"):
        time.sleep(0.4)
    text = buffer.getvalue()
    assert "slow one" in text and "quick one" not in text
