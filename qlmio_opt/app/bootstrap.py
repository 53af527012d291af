"""95% intervals of predictor metrics by a bootstrap over requests.

The rows of one request are correlated (one prompt and one hidden difficulty on every node; the
nodes of one model share one outcome), so rows are not independent draws and a row bootstrap
would give intervals that are too narrow. Each resample draws the table's *requests* with
replacement: request ``r`` appears ``c_r`` times, ``c ~ Multinomial(R, 1/R)``, and every metric
is computed on the resampled table. A resampled table is the original rows repeated by their
request's count, so the scorers here take the counts ``(resamples, R)`` and equal, exactly, the
metrics of :func:`~qlmio_opt.predictors.learned_quality.quality_metrics` and
:func:`~qlmio_opt.predictors.learned_latency.latency_metrics` on the repeated rows (tests check
this). Means and calibration bins are sums per request, so they cost one small matrix product
per resample batch; only the AUC and the median walk the rows (sorted once).

All resamples are shared by every predictor and metric, so the difference of two predictors is
taken per resample (a paired interval). The interval is the percentile interval (the 2.5% and
97.5% quantiles of the resampled values); resamples where a metric is undefined (an AUC of one
class) are left out of its quantiles.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import numpy as np

from qlmio_opt.predictors.learned_latency import latency_metrics

__all__ = [
    "RESAMPLES",
    "Scorer",
    "bootstrap",
    "latency_scorer",
    "percentile_interval",
    "quality_scorer",
    "request_counts",
]

RESAMPLES = 2000
"""Default number of resamples. Efron and Tibshirani (*An Introduction to the Bootstrap*, 1993,
ch. 19) ask for 1,000 or more for percentile intervals; with 2,000 the Monte Carlo error of a
2.5% quantile is sqrt(0.025 * 0.975 / 2000) = 0.35 points of probability, about 0.06 standard
errors of a normally distributed metric, i.e. ~3% of the interval's half-width."""

CHUNK = 100
"""Resamples computed at once: bounds the (resamples x rows) arrays of the AUC and the median to
~25 MB on 28,000 rows; the draws do not depend on it."""

ECE_BINS = 10  # expected_calibration_error's default, so the point estimates match

Key = TypeVar("Key", bound=Hashable)

Scorer = Callable[[np.ndarray], dict[str, np.ndarray]]
"""Maps request counts ``(resamples, R)`` to ``{metric: values (resamples,)}``."""


def request_counts(rng: np.random.Generator, n_requests: int, resamples: int) -> np.ndarray:
    """How often each request appears in each resample: ``(resamples, n_requests)`` integers."""
    return rng.multinomial(n_requests, np.full(n_requests, 1.0 / n_requests), size=resamples)


def bootstrap(
    scorers: Mapping[Key, Scorer],
    n_requests: int,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[Key, dict[str, np.ndarray]]:
    """Every scorer's metrics on the same ``resamples`` resamples of the requests.

    Returns
    -------
    dict
        ``{scorer name: {metric: values (resamples,)}}``.
    """
    rng = np.random.default_rng(seed)
    parts: dict[Key, list[dict[str, np.ndarray]]] = {name: [] for name in scorers}
    for start in range(0, resamples, CHUNK):
        counts = request_counts(rng, n_requests, min(CHUNK, resamples - start)).astype(float)
        for name, scorer in scorers.items():
            parts[name].append(scorer(counts))
        if progress is not None:
            progress(min(start + CHUNK, resamples), resamples)
    return {
        name: {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
        for name, chunks in parts.items()
    }


def percentile_interval(values: np.ndarray) -> list[float] | None:
    """The 95% percentile interval ``[lo, hi]`` of resampled values (undefined ones left out)."""
    finite = np.asarray(values, float)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        return None
    lo, hi = np.quantile(finite, [0.025, 0.975])
    return [float(lo), float(hi)]


# --------------------------------------------------------------------------------------------
# scorers
# --------------------------------------------------------------------------------------------
def per_request_sums(request_idx: np.ndarray, n_requests: int, columns: np.ndarray) -> np.ndarray:
    """``(n_requests, k)`` sums of the rows' ``columns`` ``(n, k)`` per request."""
    out = np.zeros((n_requests, columns.shape[1]))
    np.add.at(out, request_idx, columns)
    return out


def _auc_scorer(y: np.ndarray, p: np.ndarray, request_idx: np.ndarray) -> Scorer:
    """ROC AUC: the Mann-Whitney statistic, ties counting one half (as
    :func:`sklearn.metrics.roc_auc_score`); NaN where a resample has one class only."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    neg = neg[np.argsort(p[neg], kind="stable")]
    below = np.searchsorted(p[neg], p[pos], side="left")  # negatives scored strictly lower
    upto = np.searchsorted(p[neg], p[pos], side="right")  # ... lower or tied
    neg_req, pos_req = request_idx[neg], request_idx[pos]

    def auc(counts: np.ndarray) -> dict[str, np.ndarray]:
        cum = np.zeros((len(counts), len(neg) + 1))
        np.cumsum(counts[:, neg_req], axis=1, out=cum[:, 1:])
        w_pos = counts[:, pos_req]
        won = 0.5 * (w_pos * (cum[:, below] + cum[:, upto])).sum(axis=1)
        pairs = w_pos.sum(axis=1) * cum[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"auc": np.where(pairs > 0, won / pairs, np.nan)}

    return auc


def _median_scorer(name: str, values: np.ndarray, request_idx: np.ndarray) -> Scorer:
    """Median of the repeated rows (the mean of the two middle values for an even count, as
    :func:`numpy.median`)."""
    order = np.argsort(values, kind="stable")
    sorted_values, sorted_req = values[order], request_idx[order]

    def median(counts: np.ndarray) -> dict[str, np.ndarray]:
        cum = np.cumsum(counts[:, sorted_req], axis=1)
        total = cum[:, -1]
        lower = np.floor((total + 1) / 2)  # 1-based positions of the middle value(s)
        upper = np.floor(total / 2) + 1
        lo = np.array([np.searchsorted(c, k) for c, k in zip(cum, lower, strict=True)])
        hi = np.array([np.searchsorted(c, k) for c, k in zip(cum, upper, strict=True)])
        return {name: 0.5 * (sorted_values[lo] + sorted_values[hi])}

    return median


def quality_scorer(
    y: np.ndarray, p: np.ndarray, request_idx: np.ndarray, n_requests: int
) -> Scorer:
    """The metrics of ``quality_metrics`` (but ``rows``) of outcomes ``y`` and probabilities
    ``p``, the rows belonging to requests ``request_idx``."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    q = np.clip(p, 1e-6, 1 - 1e-6)
    means = ("brier", "log_loss", "mean_predicted", "mean_observed")
    columns = np.column_stack(
        [np.ones_like(p), (p - y) ** 2, -(y * np.log(q) + (1 - y) * np.log(1 - q)), p, y]
    )
    sums = per_request_sums(request_idx, n_requests, columns)
    bins = np.minimum((p * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    member = np.zeros((len(p), ECE_BINS))
    member[np.arange(len(p)), bins] = 1.0
    bin_gap = per_request_sums(request_idx, n_requests, member * (y - p)[:, None])
    auc = _auc_scorer(y, p, request_idx)

    def metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
        totals = counts @ sums
        rows = totals[:, 0]
        out = auc(counts)
        out.update({key: totals[:, k + 1] / rows for k, key in enumerate(means)})
        out["ece"] = np.abs(counts @ bin_gap).sum(axis=1) / rows
        return out

    return metrics


def latency_scorer(
    actual: np.ndarray,
    predicted: np.ndarray,
    p90: np.ndarray | None,
    request_idx: np.ndarray,
    n_requests: int,
) -> Scorer:
    """The metrics of ``latency_metrics`` of latencies ``predicted`` (and the 90th percentiles
    ``p90``) against ``actual``, the rows belonging to requests ``request_idx``."""
    actual, predicted = np.asarray(actual, float), np.asarray(predicted, float)
    ape = np.abs(predicted - actual) / actual
    means = ["mae_s", "mape"]
    columns = [np.ones_like(ape), np.abs(predicted - actual), ape]
    if p90 is not None:
        means.append("p90_coverage")
        columns.append((actual <= np.asarray(p90, float)).astype(float))
    sums = per_request_sums(request_idx, n_requests, np.column_stack(columns))
    median = _median_scorer("median_ape", ape, request_idx)

    def metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
        totals = counts @ sums
        out = {key: totals[:, k + 1] / totals[:, 0] for k, key in enumerate(means)}
        out.update(median(counts))
        return out

    return metrics


def latency_comparison(
    actual: np.ndarray,
    predicted: Mapping[str, np.ndarray],
    p90: Mapping[str, np.ndarray],
    group_idx: np.ndarray,
    n_groups: int,
    *,
    resamples: int,
    seed: int,
    reference: str | None,
) -> dict[str, Any]:
    """Each predictor's :func:`latency_metrics` against ``actual`` with ``_ci95`` intervals from
    one bootstrap over the groups the rows belong to (requests, dialogues), and, with a
    ``reference`` and a ``learned`` predictor, ``learned_minus_<reference>_mape`` with its paired
    interval and ``learned_over_<reference>_mape``."""
    scorers = {
        name: latency_scorer(actual, predicted[name], p90[name], group_idx, n_groups)
        for name in predicted
    }
    resampled = bootstrap(scorers, n_groups, resamples=resamples, seed=seed)
    out: dict[str, Any] = {}
    for name in predicted:
        point = latency_metrics(actual, predicted[name], p90[name])
        out[name] = point | {
            f"{key}_ci95": percentile_interval(resampled[name][key]) for key in point
        }
    if reference is not None and "learned" in predicted:
        diff = resampled["learned"]["mape"] - resampled[reference]["mape"]
        learned, base = out["learned"]["mape"], out[reference]["mape"]
        out[f"learned_minus_{reference}_mape"] = learned - base
        out[f"learned_minus_{reference}_mape_ci95"] = percentile_interval(diff)
        out[f"learned_over_{reference}_mape"] = learned / base
    return out
