"""The request bootstrap: exact on repeated rows, clustered by request, narrowing with data."""

from __future__ import annotations

import numpy as np
import pytest

from qlmio_opt.app.bootstrap import (
    bootstrap,
    latency_scorer,
    percentile_interval,
    quality_scorer,
    request_counts,
)
from qlmio_opt.predictors.learned_latency import latency_metrics
from qlmio_opt.predictors.learned_quality import quality_metrics


def _quality_data(rng: np.random.Generator, n_requests: int, per_request: int):
    """Outcomes that follow the probabilities, scores rounded to 0.1 so that many tie."""
    request_idx = np.repeat(np.arange(n_requests), per_request)
    p = np.round(rng.uniform(0.05, 0.95, len(request_idx)), 1)
    y = (rng.random(len(p)) < p).astype(float)
    return y, p, request_idx


def test_scorers_equal_the_metrics_of_the_resampled_rows():
    """A resample is the rows repeated by their request's count: the scorers must give exactly
    quality_metrics / latency_metrics of that repeated table (AUC ties, ECE bins, even and odd
    medians included)."""
    rng = np.random.default_rng(4)
    y, p, idx = _quality_data(rng, 30, 3)
    actual = rng.uniform(0.2, 3.0, len(y))
    predicted = actual * rng.lognormal(0.0, 0.3, len(y))
    p90 = predicted * 1.3
    counts = request_counts(rng, 30, 8).astype(float)
    quality = quality_scorer(y, p, idx, 30)(counts)
    latency = latency_scorer(actual, predicted, p90, idx, 30)(counts)
    for b in range(len(counts)):
        rows = np.repeat(np.arange(len(y)), counts[b, idx].astype(int))
        expected_q = quality_metrics(y[rows], p[rows])
        expected_l = latency_metrics(actual[rows], predicted[rows], p90[rows])
        for key, values in quality.items():
            assert values[b] == pytest.approx(expected_q[key], abs=1e-12), key
        for key, values in latency.items():
            assert values[b] == pytest.approx(expected_l[key], abs=1e-12), key


def test_counts_of_one_give_the_point_estimates():
    rng = np.random.default_rng(5)
    y, p, idx = _quality_data(rng, 25, 2)
    ones = np.ones((1, 25))
    got = quality_scorer(y, p, idx, 25)(ones)
    for key, value in quality_metrics(y, p).items():
        if key != "rows":
            assert got[key][0] == pytest.approx(value, abs=1e-12), key


def test_an_auc_of_one_class_is_undefined_and_left_out_of_the_interval():
    y = np.array([1.0, 0.0])
    p = np.array([0.8, 0.3])
    counts = np.array([[2.0, 0.0], [1.0, 1.0]])  # resample 0 holds the positive request only
    auc = quality_scorer(y, p, np.array([0, 1]), 2)(counts)["auc"]
    assert np.isnan(auc[0]) and auc[1] == 1.0
    assert percentile_interval(auc) == [1.0, 1.0]
    assert percentile_interval(np.array([np.nan])) is None


def test_the_percentile_interval_of_known_values():
    assert percentile_interval(np.arange(1001.0)) == pytest.approx([25.0, 975.0])


def _auc_interval(y, p, idx, n_requests, resamples=400):
    scorer = {"q": quality_scorer(y, p, idx, n_requests)}
    return percentile_interval(bootstrap(scorer, n_requests, resamples=resamples)["q"]["auc"])


def test_rows_of_one_request_are_resampled_together():
    """Copies of a request's row add no information: with every request's row repeated four
    times the request bootstrap gives exactly the interval of one row per request (a row
    bootstrap would shrink it by about half)."""
    rng = np.random.default_rng(6)
    y, p, idx = _quality_data(rng, 200, 1)
    repeated = np.repeat(np.arange(200), 4)
    single = _auc_interval(y, p, idx, 200)
    copies = _auc_interval(y[repeated], p[repeated], repeated, 200)
    assert copies == pytest.approx(single, abs=1e-12)


def test_intervals_narrow_with_more_requests_and_contain_the_estimate():
    rng = np.random.default_rng(7)
    widths = []
    for n_requests in (100, 1600):
        y, p, idx = _quality_data(rng, n_requests, 3)
        lo, hi = _auc_interval(y, p, idx, n_requests)
        assert lo <= quality_metrics(y, p)["auc"] <= hi
        widths.append(hi - lo)
    assert widths[1] < 0.4 * widths[0]  # 16 times the data: about a quarter of the width


def test_the_draws_are_fixed_by_the_seed_not_by_the_chunking(monkeypatch):
    from qlmio_opt.app import bootstrap as module

    rng = np.random.default_rng(8)
    y, p, idx = _quality_data(rng, 50, 2)
    scorer = {"q": quality_scorer(y, p, idx, 50)}
    first = bootstrap(scorer, 50, resamples=250, seed=3)["q"]["auc"]
    other = bootstrap(scorer, 50, resamples=250, seed=4)["q"]["auc"]
    monkeypatch.setattr(module, "CHUNK", 7)
    again = bootstrap(scorer, 50, resamples=250, seed=3)["q"]["auc"]
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert len(first) == 250
