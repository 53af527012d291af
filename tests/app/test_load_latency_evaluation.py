"""Latency under load against the engine-aware analytic model, by load level and on held-out
devices (``qlmio_opt.app.load_latency_evaluation``, ``evaluate-predictors --under-load``)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from qlmio_opt.app import load_latency_evaluation as evaluation
from qlmio_opt.app.load_latency_evaluation import evaluate_under_load
from qlmio_opt.faces.cli import main
from qlmio_opt.simulator.state_dataset import state_bench_data, write_state_bench_data

SMALL = {"max_iter": 10, "min_samples_leaf": 10}


@pytest.fixture(scope="module")
def table():
    return state_bench_data(30, seed=6).table


@pytest.fixture(scope="module")
def result(table):
    return evaluate_under_load(
        table, resamples=100, held_out=("device",), model_params=SMALL, random_state=1
    )


def test_levels_cover_the_test_rows_with_sizes_and_intervals(table, result):
    test = table[table["split"] == "test"]
    levels = result["by_load"]
    assert sum(levels[k]["rows"] for k in ("idle", "busy", "saturated") if k in levels) == len(test)
    assert levels["under_load"]["rows"] == int((test["load_level"] != "idle").sum())
    for group in levels.values():
        for name in ("analytic", "learned"):
            record = group[name]
            for key in ("mape", "p90_coverage"):
                lo, hi = record[f"{key}_ci95"]
                assert lo <= record[key] + 1e-12 and record[key] <= hi + 1e-12
        diff = group["learned_minus_analytic_mape"]
        assert diff == pytest.approx(group["learned"]["mape"] - group["analytic"]["mape"])


def test_the_guard_keeps_held_out_devices_analytic(result, table):
    held = result["held_out_devices"]
    assert held["values"] == sorted(table["device"].unique())
    assert held["learned"]["mape"] == held["analytic"]["mape"]
    # without the guard the residual acts on pairs it never saw
    assert held["learned_unguarded"]["mape"] != held["analytic"]["mape"]


def test_a_table_without_test_rows_is_refused(table):
    with pytest.raises(ValueError, match="no test rows"):
        evaluate_under_load(table[table["split"] != "test"], model_params=SMALL)


def test_evaluate_predictors_under_load_json_keys(tmp_path, capsys, monkeypatch):
    # the wiring is under test here, not the default model size: small models are quicker
    small = functools.partial(evaluation.evaluate_under_load, model_params=SMALL)
    monkeypatch.setattr(evaluation, "evaluate_under_load", small)
    state = state_bench_data(20, seed=6)
    write_state_bench_data(state, tmp_path)
    args = ["--requests", "20", "--resamples", "100", "--no-m4a1", "--format", "json"]
    capsys.readouterr()
    code = main(["evaluate-predictors", *args, "--under-load", "--state-data", str(tmp_path)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    latency = out["latency"]
    for level in ("idle", "busy", "saturated"):
        if level in latency["by_load"]:
            for name in ("analytic", "learned"):
                assert np.isfinite(latency["by_load"][level][name]["mape"])
                assert 0 <= latency["by_load"][level][name]["p90_coverage"] <= 1
    assert set(latency["held_out_devices"]) >= {"analytic", "learned", "learned_unguarded"}
    assert out["latency_under_load"]["data"]["rows"] == len(state.table)


def test_state_data_needs_under_load(tmp_path, capsys):
    code = main(["evaluate-predictors", "--no-m4a1", "--state-data", str(tmp_path)])
    assert code == 2
    assert "--state-data" in capsys.readouterr().err
