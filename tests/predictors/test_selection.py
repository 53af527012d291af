"""The selection calibration of quality differences (predictors/selection.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shared_fits

from qlmio_opt.predictors import DEFAULT_LEARNED
from qlmio_opt.predictors.learned import LearnedPredictor
from qlmio_opt.predictors.selection import (
    SelectionCalibration,
    pair_differences,
    reference_nodes,
    selection_path,
)

INSTANCES = Path(__file__).resolve().parents[2] / "instances"
EDGE_MODELS = ("e-small", "e-big")
CLOUD_MODELS = ("c-a", "c-b")


class _FakeQuality:
    """Stands in for a quality model: the table's ``ql`` / ``qa`` columns are its output."""

    class _Spec:
        @staticmethod
        def names() -> list[str]:
            return ["analytic_quality", "learned"]

    feature_spec_ = _Spec()

    def features_table(self, table, catalog=None):
        return np.column_stack([table["qa"].to_numpy(), table["ql"].to_numpy()])

    def predict_proba_features(self, X, calibrated=True):
        return X[:, 1]


def synthetic_table(n: int = 4000, noise: float = 0.6, seed: int = 0) -> pd.DataFrame:
    """Every request on every model; learned = truth's logit plus noise that is independent per
    pair (so its differences are over-dispersed), analytic = the per-model mean."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.0, n)
    ability = {"e-small": 1.0, "e-big": 1.6, "c-a": 2.0, "c-b": 2.2}
    rows = []
    for model, a in ability.items():
        logit = a - difficulty
        p = 1.0 / (1.0 + np.exp(-logit))
        learned = 1.0 / (1.0 + np.exp(-(logit + rng.normal(0.0, noise, n))))
        rows.append(
            pd.DataFrame(
                {
                    "request": [f"r{i}" for i in range(n)],
                    "model": model,
                    "tier": "cloud" if model in CLOUD_MODELS else "edge",
                    "qa": np.full(n, p.mean()),
                    "ql": learned,
                    "completed": (rng.random(n) < p).astype(int),
                    "true_completion_prob": p,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_pair_differences_one_row_per_reference_and_other_model():
    table = synthetic_table(50)
    pairs = pair_differences(table, table["ql"].to_numpy(), table["qa"].to_numpy())
    # 2 cloud references x 3 other models per request
    assert len(pairs) == 50 * 2 * 3
    assert set(pairs["cls"]) == {0, 1}
    assert (pairs["reference"] != pairs["model"]).all()
    one = pairs[(pairs["request"] == "r3") & (pairs["reference"] == "c-a")]
    ref = table[(table["request"] == "r3") & (table["model"] == "c-a")]
    other = table[(table["request"] == "r3") & (table["model"] == "e-big")]
    row = one[one["model"] == "e-big"].iloc[0]
    assert row["d_learned"] == pytest.approx(ref["ql"].iloc[0] - other["ql"].iloc[0])
    assert row["d_observed"] == ref["completed"].iloc[0] - other["completed"].iloc[0]


def test_fit_shrinks_noisy_learned_differences_and_is_calibrated_in_the_mean():
    table = synthetic_table()
    cal = SelectionCalibration().fit(table, _FakeQuality())
    # independent noise per pair: the learned departure deserves a weight well below one
    assert 0.0 < cal.coef_[0, 2] < 0.9
    pairs = pair_differences(table, table["ql"].to_numpy(), table["qa"].to_numpy())
    d = cal.differences(pairs["d_analytic"], pairs["d_learned"], pairs["cls"])
    for k in (0, 1):  # least squares with an intercept: mean of fit = mean of observations
        rows = (pairs["cls"] == k).to_numpy()
        assert d[rows].mean() == pytest.approx(pairs["d_observed"][rows].mean(), abs=1e-9)
    # and calibrated where an optimiser looks: the pairs with the smallest predicted difference
    edge = pairs[pairs["cls"] == 0]
    low = edge["d_learned"] < edge["d_learned"].quantile(0.2)
    raw_gap = edge["d_observed"][low].mean() - edge["d_learned"][low].mean()
    fit_gap = edge["d_observed"][low].mean() - d[(pairs["cls"] == 0).to_numpy()][low].mean()
    assert raw_gap > 0.01  # the optimiser's curse in the raw differences
    assert abs(fit_gap) < raw_gap / 2


def test_fit_reads_observed_outcomes_only_and_is_deterministic():
    table = synthetic_table(1500)
    a = SelectionCalibration().fit(table, _FakeQuality())
    b = SelectionCalibration().fit(table, _FakeQuality())
    np.testing.assert_array_equal(a.coef_, b.coef_)
    hidden = table.assign(true_completion_prob=np.random.default_rng(1).random(len(table)))
    c = SelectionCalibration().fit(hidden, _FakeQuality())
    np.testing.assert_array_equal(a.coef_, c.coef_)  # the hidden truth is never read
    flipped = table.assign(completed=1 - table["completed"])
    d = SelectionCalibration().fit(flipped, _FakeQuality())
    assert not np.allclose(a.coef_, d.coef_)  # the outcomes are


def test_adjust_keeps_reference_and_probabilities_in_range():
    cal = SelectionCalibration(margin=0.02)
    cal.coef_ = np.array([[0.05, 1.0, 0.5], [0.0, 1.0, 0.5]])
    rng = np.random.default_rng(0)
    quality = rng.random((40, 4))
    quality[0] = [0.0, 1.0, 0.0, 1.0]
    analytic = rng.random((40, 4))
    is_cloud = np.array([False, False, True, True])
    reference = rng.choice([2, 3], 40)
    reference[5] = -1
    out = cal.adjust(quality, analytic, reference, is_cloud)
    assert out.shape == quality.shape
    assert ((out >= 0.0) & (out <= 1.0)).all()
    rows = np.arange(40)
    np.testing.assert_array_equal(
        out[rows, reference][reference >= 0], quality[rows, reference][reference >= 0]
    )
    np.testing.assert_array_equal(out[5], quality[5])  # no reference: unchanged
    r, n = 7, 0
    k = reference[r]
    d = (
        0.05
        + (analytic[r, k] - analytic[r, n])
        + 0.5 * ((quality[r, k] - quality[r, n]) - (analytic[r, k] - analytic[r, n]))
    )
    assert out[r, n] == pytest.approx(np.clip(quality[r, k] - d - 0.02, 0.0, 1.0))


def test_reference_is_the_lowest_latency_eligible_cloud_node():
    latency = np.array([[1.0, 5.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    eligible = np.array([[True, True, True], [True, False, True], [True, False, False]])
    is_cloud = np.array([False, True, True])
    np.testing.assert_array_equal(reference_nodes(latency, eligible, is_cloud), [2, 2, -1])


def test_save_load_round_trip_and_refusals(tmp_path):
    cal = SelectionCalibration(margin=0.004).fit(synthetic_table(500), _FakeQuality())
    path = cal.save(tmp_path / "m-selection.json")
    back = SelectionCalibration.load(path)
    np.testing.assert_array_equal(back.coef_, cal.coef_)
    assert back.margin == 0.004
    meta = json.loads(path.read_text())
    meta["coef"][0][2] = 1.0
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="sha256"):
        SelectionCalibration.load(path)
    meta["format"] = "something else"
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format"):
        SelectionCalibration.load(path)
    path.write_bytes(b"\x80\x04not json")
    with pytest.raises(ValueError, match="JSON"):
        SelectionCalibration.load(path)
    with pytest.raises(ValueError, match="margin"):
        SelectionCalibration(margin=-0.1).fit(synthetic_table(100), _FakeQuality())


def test_selection_path():
    assert selection_path("a/b/default.json").as_posix() == "a/b/default-selection.json"
    assert selection_path("a/b/mine").as_posix() == "a/b/mine-selection.json"


@pytest.fixture(scope="module")
def window():
    from qlmio_opt import read_instance

    return read_instance(INSTANCES / "window_042.json")


def test_shipped_learned_predictor_applies_the_shipped_calibration(window):
    assert selection_path(DEFAULT_LEARNED).exists()
    on = LearnedPredictor(DEFAULT_LEARNED).fit()
    off = LearnedPredictor(DEFAULT_LEARNED, selection=False).fit()
    assert on.selection_ is not None and off.selection_ is None
    p_on, p_off = on.predict(window), off.predict(window)
    np.testing.assert_array_equal(p_on.latency_s, p_off.latency_s)
    assert ((p_on.quality >= 0) & (p_on.quality <= 1)).all()
    assert (p_on.quality[~p_on.eligible] == 0).all()
    is_cloud = np.array([n.tier == "cloud" for n in window.nodes])
    ref = reference_nodes(p_on.latency_s, p_on.eligible, is_cloud)
    rows = np.flatnonzero(ref >= 0)
    assert rows.size
    np.testing.assert_array_equal(p_on.quality[rows, ref[rows]], p_off.quality[rows, ref[rows]])
    # the differences to the reference are larger (pessimistic) on average
    edge = p_on.eligible[rows] & ~is_cloud[None, :]
    d_on = (p_on.quality[rows, ref[rows]][:, None] - p_on.quality[rows])[edge]
    d_off = (p_off.quality[rows, ref[rows]][:, None] - p_off.quality[rows])[edge]
    assert d_on.mean() > d_off.mean()


def test_selection_options():
    shipped = LearnedPredictor(DEFAULT_LEARNED).fit()
    with pytest.raises(ValueError, match="not fitted"):
        LearnedPredictor(DEFAULT_LEARNED, selection=SelectionCalibration()).fit()
    margin = LearnedPredictor(DEFAULT_LEARNED, selection_margin=0.01).fit()
    assert margin.selection_.margin == 0.01
    np.testing.assert_array_equal(margin.selection_.coef_, shipped.selection_.coef_)
    with pytest.raises(ValueError, match="margin"):
        LearnedPredictor(DEFAULT_LEARNED, selection_margin=2.0).fit()


def test_fit_on_a_table_never_fits_the_selection_in_sample():
    from qlmio_opt.simulator.dataset import bench_data

    trained = shared_fits.trained_predictor()  # LearnedPredictor().fit(table)
    assert trained.selection_ is None
    predictor = copy.copy(trained)
    other = bench_data(60, seed=8)  # the calibration is fitted on another table
    assert predictor.fit_selection(other) is predictor
    assert predictor.selection_.training_data_["requests"] == 60
    assert trained.selection_ is None
