"""`qlmio-opt evaluate-predictors`: shipped models on a fresh table, with n and 95% intervals."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pandas as pd
import pytest

from qlmio_opt.app import predictor_evaluation as evaluation
from qlmio_opt.faces.cli import main
from qlmio_opt.predictors.learned_latency import LearnedLatencyModel
from qlmio_opt.predictors.learned_quality import LearnedQualityModel, quality_metrics
from qlmio_opt.simulator.dataset import bench_data, split_of, write_bench_data

REQUESTS = 100
QUICK = ["--requests", str(REQUESTS), "--resamples", "200", "--no-m4a1", "--format", "json"]


def _no_training(monkeypatch):
    """Make every way of training a model fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("evaluate-predictors trained a model")

    monkeypatch.setattr(LearnedQualityModel, "fit", refuse)
    monkeypatch.setattr(LearnedLatencyModel, "fit", refuse)
    monkeypatch.setattr(evaluation, "train_models", refuse)


def _run(args: list[str], capsys) -> dict:
    capsys.readouterr()
    assert main(["evaluate-predictors", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def default_run():
    """The default command (shipped models, fresh table) on 100 requests, training forbidden."""
    buffer = io.StringIO()  # capsys is per test; the JSON goes to stdout through print
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buffer):
        _no_training(mp)
        assert main(["evaluate-predictors", *QUICK]) == 0
    return json.loads(buffer.getvalue())


def test_the_default_scores_the_shipped_models_on_a_fresh_held_out_table(default_run):
    r = default_run
    assert r["data"] == {
        "source": "bench_data",
        "seed": evaluation.FRESH_SEED,
        "requests": REQUESTS,
        "rows": REQUESTS * 14,
    }
    assert r["scored"]["trained_here"] is False
    assert r["scored"]["training_prefixes"] == ["mb0"]  # the shipped models' training table
    assert f"mb{evaluation.FRESH_SEED}" not in r["scored"]["training_prefixes"]
    assert r["scored"]["rows_left_out"] == 0  # every row of every split is scored
    assert r["scored"]["requests"] == REQUESTS
    assert r["scored"]["quality_rows"] == REQUESTS * 9  # one row per request and model
    assert r["scored"]["latency_rows"] == REQUESTS * 14
    assert "shipped" in r["predictors"]


def test_the_learned_figures_are_the_shipped_models_own(default_run):
    """Recompute the learned AUC and Brier from the shipped quality model on the same table."""
    from qlmio_opt.predictors import get_predictor

    table = bench_data(REQUESTS, evaluation.FRESH_SEED).table
    rows = table.drop_duplicates(["request", "model"])
    shipped = get_predictor("learned").quality_model_
    expected = quality_metrics(rows["completed"], shipped.predict_proba_table(rows))
    got = default_run["quality"]["learned"]
    assert got["auc"] == pytest.approx(expected["auc"], abs=1e-12)
    assert got["brier"] == pytest.approx(expected["brier"], abs=1e-12)


def _check_interval(point: float, interval: list[float], name: str) -> None:
    lo, hi = interval
    assert lo <= point <= hi, name
    assert hi > lo, name  # 100 requests cannot pin a metric down exactly


def test_every_metric_has_its_size_and_an_interval_around_it(default_run):
    r = default_run
    assert r["bootstrap"] == {
        "unit": "request",
        "resamples": 200,
        "seed": 0,
        "interval": "percentile, 95%",
    }
    for section, sizes in (("quality", (900, REQUESTS)), ("latency", (1400, REQUESTS))):
        for name in ("analytic", "learned"):
            part = r[section][name]
            assert (part["rows"], part["requests"]) == sizes
            metrics = [k for k in part if f"{k}_ci95" in part]
            assert len(metrics) >= (6 if section == "quality" else 3)
            for key in metrics:
                _check_interval(part[key], part[f"{key}_ci95"], f"{section}.{name}.{key}")
        diff = r[section]["learned_minus_analytic"]
        for key in [k for k in diff if not k.endswith("_ci95")]:
            expected = r[section]["learned"][key] - r[section]["analytic"][key]
            assert diff[key] == pytest.approx(expected), key
            _check_interval(diff[key], diff[f"{key}_ci95"], f"{section}.difference.{key}")
    assert {"auc_ci95", "brier_ci95"} <= set(r["quality"]["learned"])
    assert "mape_ci95" in r["latency"]["learned"] and "mape_ci95" in r["latency"]["analytic"]
    for record in r["quality_per_model"]:
        assert (record["rows"], record["requests"]) == (REQUESTS, REQUESTS)
        for key in ("auc_analytic", "auc_learned", "brier_learned_minus_analytic"):
            lo, hi = record[f"{key}_ci95"]
            assert lo <= record[key] <= hi, (record["model"], key)


def _test_requests(seed: int) -> int:
    """Requests of the fresh table's test split (a split is a pure function of the id)."""
    return sum(split_of(f"mb{seed}-{i:06d}") == "test" for i in range(REQUESTS))


def test_the_seed_the_models_trained_on_scores_only_its_test_split(capsys, monkeypatch):
    _no_training(monkeypatch)
    r = _run([*QUICK, "--seed", "0"], capsys)
    n_test = _test_requests(0)
    assert 0 < n_test < REQUESTS
    assert r["scored"]["rows_left_out"] == (REQUESTS - n_test) * 14
    assert r["scored"]["requests"] == n_test
    assert r["latency"]["learned"]["rows"] == n_test * 14


def test_held_out_rows_by_prefix_and_split():
    table = pd.DataFrame(
        {
            "request": ["mb0-000001", "mb0-000002", "mb0-000003", "mb7-000001", "mb7-000002"],
            "split": ["train", "validation", "test", "train", "test"],
        }
    )
    assert evaluation.held_out_rows(table, ("mb0",)).tolist() == [False, False, True, True, True]
    assert evaluation.held_out_rows(table, ("mb0", "mb7")).tolist() == [0, 0, 1, 0, 1]
    assert evaluation.held_out_rows(table, None).tolist() == [0, 0, 1, 0, 1]  # unrecorded


def test_train_still_trains_and_scores_only_the_test_split(capsys, monkeypatch):
    """--train fits new models on the table (small settings here, to keep the test fast)."""
    calls = []

    def small_models(table, random_state=0):
        calls.append(len(table))
        quality = LearnedQualityModel(
            max_iter=5, text_folds=2, text_buckets=256, random_state=random_state
        )
        latency = LearnedLatencyModel(max_iter=5, random_state=random_state)
        return quality.fit(table), latency.fit(table)

    monkeypatch.setattr(evaluation, "train_models", small_models)
    r = _run([*QUICK, "--seed", "9", "--train"], capsys)
    assert calls == [REQUESTS * 14]
    assert r["scored"]["trained_here"] is True
    assert r["scored"]["training_prefixes"] == ["mb9"]
    assert r["scored"]["rows_left_out"] == (REQUESTS - _test_requests(9)) * 14
    assert r["quality"]["learned"]["auc_ci95"] is not None


def test_a_quality_model_alone_is_scored_with_analytic_latency(tmp_path, capsys, monkeypatch):
    from qlmio_opt.predictors import TRAINED_DIR

    for suffix in (".json", ".npz"):  # the quality model without its latency model
        shutil.copy(TRAINED_DIR / f"default{suffix}", tmp_path / f"default{suffix}")
    _no_training(monkeypatch)
    r = _run([*QUICK, "--predictors", str(tmp_path / "default.json")], capsys)
    assert set(r["latency"]) == {"analytic"}
    assert r["quality"]["learned"]["rows"] == REQUESTS * 9
    assert str(tmp_path) in r["predictors"]


def test_the_table_output_names_the_seed_and_the_sizes(capsys, monkeypatch):
    _no_training(monkeypatch)
    capsys.readouterr()
    assert main(["evaluate-predictors", *QUICK[:-2]]) == 0
    text = capsys.readouterr().out
    assert f"seed {evaluation.FRESH_SEED}, {REQUESTS} requests, 1,400 request-node rows" in text
    assert "every row held out (the models were trained on request ids mb0-*)" in text
    assert "200 resamples" in text
    assert "900 request-model rows of 100 requests" in text
    assert "learned - analytic" in text


def test_the_steps_report_their_progress():
    table = bench_data(40, evaluation.FRESH_SEED).table
    from qlmio_opt.predictors import get_predictor

    shipped = get_predictor("learned")
    steps: dict[str, tuple[int, int]] = {}
    evaluation.evaluate_predictors(
        table,
        shipped.quality_model_,
        shipped.latency_model_,
        resamples=150,
        m4a1=False,
        progress=lambda step, done, total: steps.__setitem__(step, (done, total)),
    )
    assert steps == {"predictions": (2, 2), "bootstrap": (150, 150)}


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bench")
    write_bench_data(bench_data(3, 1), folder)
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{bench}", "--seed", "3"], "drop them with --data"),
        (["--train", "--predictors", "learned"], "drop --predictors"),
        (["--predictors", "analytic"], "give learned or a model saved by qlmio-opt train"),
        (["--predictors", "{tmp}/none.json"], "no saved predictor model"),
        (["--data", "{tmp}"], "no bench.csv.gz"),
        (["--data", "{partial}"], "not a bench table; no column"),
    ],
)
def test_bad_arguments_exit_2_naming_the_option(args, message, tiny_bench, tmp_path, capsys):
    partial = tmp_path / "partial.csv.gz"
    table = pd.read_csv(tiny_bench / "bench.csv.gz")
    table.drop(columns=["latency_s"]).to_csv(partial, index=False)
    filled = [a.format(bench=tiny_bench, tmp=tmp_path, partial=partial) for a in args]
    assert main(["evaluate-predictors", *filled, "--no-m4a1"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_the_help_states_the_defaults_the_code_uses():
    # the help is written out (building it must not import the evaluation): this keeps it true
    import argparse

    from qlmio_opt.app.bootstrap import RESAMPLES
    from qlmio_opt.faces.cli import parser

    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    params = {a.dest: a for a in commands.choices["evaluate-predictors"]._actions}
    assert f"default {evaluation.FRESH_SEED}" in params["seed"].help
    assert f"default {evaluation.FRESH_REQUESTS}" in params["requests"].help
    assert params["resamples"].default == RESAMPLES
