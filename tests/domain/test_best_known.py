"""Best-known values apply to exactly the window file they were computed for."""

import shutil

import pytest
from conftest import INSTANCES

from qlmio_opt.domain.best_known import KnownValues, file_sha256, read_bks
from qlmio_opt.faces.cli import main


def _bks(folder, name, objective, sha):
    (folder / "bks.csv").write_text(
        "instance,status,objective,bound,instance_sha256\n"
        f"{name},optimal,{objective},{objective},{sha}\n"
    )


def test_a_row_applies_to_its_own_file_only(tmp_path):
    window = tmp_path / "window_041.json"
    shutil.copy(INSTANCES / "window_041.json", window)
    _bks(tmp_path, "window_041", -10.0, file_sha256(window))
    assert read_bks(tmp_path / "bks.csv")["window_041"].optimal
    assert KnownValues.beside(window).objective("window_041") == -10.0
    assert KnownValues.beside(window).objective("window_099") is None
    window.write_text(window.read_text().replace('"name"', ' "name"', 1))  # an edited copy
    assert KnownValues.beside(window).objective("window_041") is None


def test_compare_reports_the_gap_to_the_best_known_value(tmp_path, capsys):
    window = tmp_path / "window_041.json"
    shutil.copy(INSTANCES / "window_041.json", window)
    assert main(["solve", str(window), "--format", "json"]) == 0
    import json

    optimum = json.loads(capsys.readouterr().out)["objective"]
    # a made-up best-known value 10% better than the optimum, to see the column move
    best = optimum - 0.1 * abs(optimum)
    _bks(tmp_path, "window_041", best, file_sha256(window))
    out_csv = tmp_path / "c.csv"
    assert main(["compare", str(window), "--solvers", "exact,greedy", "--out", str(out_csv)]) == 0
    import pandas as pd

    frame = pd.read_csv(out_csv).set_index("solver")
    assert frame.loc["exact", "gap_to_bks"] == pytest.approx((optimum - best) / abs(best))
    assert frame.loc["exact", "gap_to_exact"] == 0
    assert frame.loc["greedy", "bound_source"] == "lagrangian"
    assert frame.loc["exact", "gap"] <= 1e-4
    assert "median_gap_to_bks" in capsys.readouterr().out
