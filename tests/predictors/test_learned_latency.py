"""The learned latency model: contract, determinism, analytic parts and metrics."""

from __future__ import annotations

import numpy as np
import pytest

from qlmio_opt.predictors.learned_latency import (
    LearnedLatencyModel,
    analytic_parts,
    latency_metrics,
)
from qlmio_opt.simulator.dataset import bench_data


@pytest.fixture(scope="module")
def table():
    return bench_data(60, seed=5).table


def test_fit_predict_shapes_and_bounds(table):
    model = LearnedLatencyModel(max_iter=20, random_state=0).fit(table)
    pred = model.predict_table(table)
    for key in ("output_tokens", "latency_s", "latency_p90_s"):
        assert pred[key].shape == (len(table),)
        assert np.isfinite(pred[key]).all() and (pred[key] > 0).all()
    assert (pred["output_tokens"] <= table["max_output_tokens"].to_numpy()).all()
    assert (pred["output_tokens"] >= 1).all()


def test_same_random_state_same_predictions(table):
    a = LearnedLatencyModel(max_iter=15, random_state=3).fit(table).predict_table(table)
    b = LearnedLatencyModel(max_iter=15, random_state=3).fit(table).predict_table(table)
    for key in a:
        assert np.array_equal(a[key], b[key])


def test_unfitted_and_empty_are_clear_errors(table):
    with pytest.raises(ValueError, match="not fitted"):
        LearnedLatencyModel().predict_table(table)
    with pytest.raises(ValueError, match="empty"):
        LearnedLatencyModel().fit(table.iloc[:0])


def test_analytic_parts_add_up(table):
    parts = analytic_parts(table)
    total = sum(parts[k] for k in ("transfer_s", "rtt_s", "vision_s", "prefill_s", "decode_s"))
    assert np.allclose(total, parts["latency_s"])
    assert np.allclose(parts["decode_s"], parts["typical_output_tokens"] * parts["per_token_s"])


def test_latency_metrics_by_hand():
    m = latency_metrics(np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 2.0]), np.array([1, 3, 3]))
    assert m["mae_s"] == pytest.approx(1.0)
    assert m["mape"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert m["median_ape"] == pytest.approx(0.5)
    assert m["p90_coverage"] == pytest.approx(2 / 3)
