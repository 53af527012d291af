"""Learned against analytic predictors on held-out data: the figures of
``qlmio-opt evaluate-predictors``.

**Which models.** By default the shipped learned models (``predictors/trained/default*.json``),
or any quality model with its latency model beside it (``qlmio-opt train``), are scored as they
are; :func:`train_models` trains a new pair on a table's ``train`` split instead (calibrated and
p90-widened on ``validation``, as ``qlmio-opt train`` does).

**Which rows.** Only rows the models never saw: a quality model records the request-id prefixes
(``mb<seed>``) of its training requests, and a request's split is a pure function of its id, so
a row is held out if its request's prefix is not among them, or if it is in the ``test`` split
(never used in training or calibration). A fresh ``bench_data`` table of another seed is held
out whole; the training table, only its test split. A model that does not record its prefixes
is scored on the test split. The latency model is taken to come from the same table as the
quality model beside it (both ``qlmio-opt train`` and ``scripts/train_default_predictors.py``
train the pair on one table).

**What is scored.** Quality: one row per request and model (nodes with the same model share one
outcome), overall and per model; the analytic quality is the quality model's own
``analytic_quality`` feature. Latency: every request-node row, the learned model against the
analytic stand-alone physics. Each metric comes with its 95% interval and the learned - analytic
difference with its paired interval, from a bootstrap over requests
(:mod:`qlmio_opt.app.bootstrap`). M4A1: the real-log models of
:mod:`qlmio_opt.app.m4a1`, K-fold by dialogue (their own protocol); their latency also with the
measures of the state table's evaluation (MAPE and a conformal p90's coverage, intervals from a
bootstrap over dialogues), not by load level: M4A1 has no load field.

The selection calibration of the shipped models acts on a window's quality differences to its
reference node, not on these per-row probabilities; the replays of ``docs/results.md`` judge it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from qlmio_opt.app.bootstrap import (
    RESAMPLES,
    Scorer,
    bootstrap,
    latency_scorer,
    percentile_interval,
    quality_scorer,
)
from qlmio_opt.predictors.learned_latency import (
    LearnedLatencyModel,
    analytic_parts,
    latency_metrics,
)
from qlmio_opt.predictors.learned_quality import LearnedQualityModel, quality_metrics

__all__ = [
    "FRESH_REQUESTS",
    "FRESH_SEED",
    "evaluate_predictors",
    "held_out_rows",
    "train_models",
    "training_prefixes",
]

FRESH_SEED = 20
"""Default ``bench_data`` seed of the fresh table. The shipped models were trained on seed 0
(``MODEL_CARD.md``: train and validation splits; the test split gave its metrics), their
selection calibration fitted on seed 3, and the benchmarks' fresh tables that development looked
at are seed 1 (``benchmarks/learned_*.py``); no script in the repository generates seed 20.
:func:`held_out_rows` checks it against the model file at run time."""

FRESH_REQUESTS = 2000
"""Default size of the fresh table: 18,000 quality and 28,000 latency rows, a 95% interval on the
learned - analytic AUC of about +-0.012; the whole command, M4A1 included, takes 17 s of CPU
(17.5 s wall alone, 34 s under other jobs on the shared 2-core machine; ``/usr/bin/time -v
qlmio-opt evaluate-predictors``, 243 MB peak)."""

PREDICTORS = ("analytic", "learned")
DIFFERENCE = "learned_minus_analytic"
QUALITY_DIFFERENCES = ("auc", "brier", "log_loss", "ece", "mean_predicted")
LATENCY_DIFFERENCES = ("mae_s", "mape", "median_ape")
PER_MODEL_METRICS = ("auc", "brier")

Progress = Callable[[str, int, int], None]
"""``progress(step, done, total)``: steps ``training``, ``predictions``, ``bootstrap``, ``M4A1``."""


# --------------------------------------------------------------------------------------------
# models and rows
# --------------------------------------------------------------------------------------------
def train_models(table: pd.DataFrame, random_state: int = 0) -> tuple[Any, LearnedLatencyModel]:
    """A new quality and latency model trained on ``table``'s ``train`` split (quality
    calibrated, latency p90 widened on its ``validation`` split)."""
    quality = LearnedQualityModel(random_state=random_state).fit(table)
    latency = LearnedLatencyModel(random_state=random_state).fit(table)
    return quality, latency


def training_prefixes(quality_model: Any) -> tuple[str, ...] | None:
    """Request-id prefixes (``mb<seed>``) the model was trained on, or None if unrecorded."""
    prefixes = getattr(quality_model, "training_data_", {}).get("request_id_prefixes")
    return None if prefixes is None else tuple(str(p) for p in prefixes)


def request_prefix(requests: pd.Series) -> pd.Series:
    """The ``mb<seed>`` part of bench request ids ``mb<seed>-<index>``."""
    return requests.astype(str).str.split("-", n=1).str[0]


def held_out_rows(table: pd.DataFrame, seen_prefixes: tuple[str, ...] | None) -> np.ndarray:
    """Rows whose request the models never saw: a prefix outside ``seen_prefixes``, or the
    ``test`` split (``seen_prefixes`` None: the test split only)."""
    test = (table["split"] == "test").to_numpy()
    if seen_prefixes is None:
        return test
    return test | ~request_prefix(table["request"]).isin(seen_prefixes).to_numpy()


# --------------------------------------------------------------------------------------------
# predictions on the scored rows
# --------------------------------------------------------------------------------------------
def _quality_rows(table: pd.DataFrame, quality_model: Any) -> pd.DataFrame:
    """One row per request and model: outcome and both predictors' probabilities."""
    rows = table.drop_duplicates(["request", "model"])
    if rows["completed"].nunique() < 2:
        raise ValueError("the scored rows need both outcomes (completed 0 and 1) to score quality")
    names = quality_model.feature_spec_.names()
    analytic = quality_model.features_table(rows)[:, names.index("analytic_quality")]
    return pd.DataFrame(
        {
            "request": rows["request"].to_numpy(),
            "model": rows["model"].to_numpy(),
            "y": rows["completed"].to_numpy(float),
            "analytic": analytic,
            "learned": quality_model.predict_proba_table(rows),
        }
    )


def _latency_rows(table: pd.DataFrame, latency_model: LearnedLatencyModel | None) -> pd.DataFrame:
    """Every request-node row: the actual latency and each predictor's (learned if a model)."""
    out = pd.DataFrame(
        {
            "request": table["request"].to_numpy(),
            "actual": table["latency_s"].to_numpy(float),
            "analytic": analytic_parts(table)["latency_s"],
        }
    )
    if latency_model is not None:
        learned = latency_model.predict_table(table)
        out["learned"] = learned["latency_s"]
        out["learned_p90"] = learned["latency_p90_s"]
    return out


# --------------------------------------------------------------------------------------------
# the bootstrap scorers
# --------------------------------------------------------------------------------------------
def _quality_scorers(
    rows: pd.DataFrame, requests: pd.Index, tag: str
) -> dict[tuple[str, str], Scorer]:
    """``{(tag, predictor): scorer}`` of the quality rows."""
    idx = requests.get_indexer(rows["request"])
    y = rows["y"].to_numpy()
    return {
        (tag, name): quality_scorer(y, rows[name].to_numpy(float), idx, len(requests))
        for name in PREDICTORS
    }


def _latency_scorers(rows: pd.DataFrame, requests: pd.Index) -> dict[tuple[str, str], Scorer]:
    """``{("latency", predictor): scorer}`` of the latency rows."""
    idx = requests.get_indexer(rows["request"])
    actual = rows["actual"].to_numpy()
    return {
        ("latency", name): latency_scorer(
            actual,
            rows[name].to_numpy(),
            rows["learned_p90"].to_numpy() if name == "learned" else None,
            idx,
            len(requests),
        )
        for name in PREDICTORS
        if name in rows
    }


def _resample(
    quality: pd.DataFrame,
    models: dict[str, pd.DataFrame],
    latency: pd.DataFrame,
    requests: pd.Index,
    resamples: int,
    seed: int,
    report: Progress,
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Every metric of every group (``quality``, ``latency``, ``model:<key>``) and predictor on
    the same resamples of ``requests``."""
    scorers = {
        **_quality_scorers(quality, requests, "quality"),
        **_latency_scorers(latency, requests),
    }
    for model, rows in models.items():
        scorers.update(_quality_scorers(rows, requests, f"model:{model}"))
    return bootstrap(
        scorers,
        len(requests),
        resamples=resamples,
        seed=seed,
        progress=lambda done, total: report("bootstrap", done, total),
    )


# --------------------------------------------------------------------------------------------
# point estimates with intervals
# --------------------------------------------------------------------------------------------
Resampled = dict[str, dict[str, np.ndarray]]
"""``{predictor: {metric: values per resample}}`` of one group of rows."""


def _with_intervals(point: dict[str, float], resampled: dict[str, np.ndarray]) -> dict[str, Any]:
    """``point`` with a ``<metric>_ci95`` beside every metric that was resampled."""
    out: dict[str, Any] = dict(point)
    for key in point:
        if key in resampled:
            out[f"{key}_ci95"] = percentile_interval(resampled[key])
    return out


def _difference(
    points: dict[str, dict[str, float]], resampled: Resampled, keys: tuple[str, ...]
) -> dict[str, Any]:
    """learned - analytic of each metric, with its paired interval."""
    out: dict[str, Any] = {}
    for key in keys:
        out[key] = points["learned"][key] - points["analytic"][key]
        out[f"{key}_ci95"] = percentile_interval(
            resampled["learned"][key] - resampled["analytic"][key]
        )
    return out


def _quality_summary(rows: pd.DataFrame, resampled: Resampled) -> dict[str, Any]:
    points = {name: quality_metrics(rows["y"], rows[name]) for name in PREDICTORS}
    requests = int(rows["request"].nunique())
    out: dict[str, Any] = {
        name: {**_with_intervals(points[name], resampled[name]), "requests": requests}
        for name in PREDICTORS
    }
    out[DIFFERENCE] = _difference(points, resampled, QUALITY_DIFFERENCES)
    return out


def _per_model_record(model: str, rows: pd.DataFrame, resampled: Resampled) -> dict[str, Any]:
    points = {name: quality_metrics(rows["y"], rows[name]) for name in PREDICTORS}
    diff = _difference(points, resampled, PER_MODEL_METRICS)
    record: dict[str, Any] = {
        "model": model,
        "rows": len(rows),
        "requests": int(rows["request"].nunique()),
    }
    for key in PER_MODEL_METRICS:
        for name in PREDICTORS:
            record[f"{key}_{name}"] = points[name][key]
            record[f"{key}_{name}_ci95"] = percentile_interval(resampled[name][key])
        record[f"{key}_{DIFFERENCE}"] = diff[key]
        record[f"{key}_{DIFFERENCE}_ci95"] = diff[f"{key}_ci95"]
    return record


def _latency_summary(rows: pd.DataFrame, resampled: Resampled) -> dict[str, Any]:
    names = [name for name in PREDICTORS if name in rows]
    points = {
        name: latency_metrics(
            rows["actual"], rows[name], rows["learned_p90"] if name == "learned" else None
        )
        for name in names
    }
    size = {"rows": len(rows), "requests": int(rows["request"].nunique())}
    out: dict[str, Any] = {
        name: {**_with_intervals(points[name], resampled[name]), **size} for name in names
    }
    if "learned" in points:
        out[DIFFERENCE] = _difference(points, resampled, LATENCY_DIFFERENCES)
    return out


def _group(resampled: dict[tuple[str, str], dict[str, np.ndarray]], tag: str) -> Resampled:
    """The resampled metrics of the scorers keyed ``(tag, predictor)``."""
    return {name: values for (group, name), values in resampled.items() if group == tag}


# --------------------------------------------------------------------------------------------
# the evaluation
# --------------------------------------------------------------------------------------------
def evaluate_predictors(
    table: pd.DataFrame,
    quality_model: Any = None,
    latency_model: LearnedLatencyModel | None = None,
    *,
    random_state: int = 0,
    resamples: int = RESAMPLES,
    m4a1: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Analytic and learned predictors on ``table``'s held-out rows, with 95% intervals.

    Parameters
    ----------
    table
        A bench table (:func:`qlmio_opt.simulator.dataset.bench_data`).
    quality_model, latency_model
        Fitted models to score (``latency_model`` None: latency of analytic only); without a
        quality model, both are trained on ``table`` (:func:`train_models`).
    random_state
        Seed of that training, of the bootstrap and of the M4A1 folds.
    resamples
        Bootstrap resamples of the requests.
    m4a1
        Whether to add the M4A1 real-log results.
    progress
        Called as ``progress(step, done, total)``.

    Returns
    -------
    dict
        ``rows`` (rows per split of ``table``), ``scored`` (requests and rows scored, rows left
        out), ``bootstrap``, ``quality`` / ``latency`` (``analytic``, ``learned``: metrics,
        ``<metric>_ci95``, ``rows``, ``requests``; ``learned_minus_analytic``: differences and
        their intervals), ``quality_per_model`` (one record per model) and ``m4a1``.

    Raises
    ------
    ValueError
        If no row is held out, or the held-out rows have a single outcome.
    """
    report = progress or (lambda step, done, total: None)
    trained_here = quality_model is None
    if trained_here:
        report("training", 0, 1)
        quality_model, latency_model = train_models(table, random_state)
        report("training", 1, 1)
    seen = training_prefixes(quality_model)
    scored = table[held_out_rows(table, seen)]
    if scored.empty:
        raise ValueError("no held-out rows: every request of the table was used in training")
    report("predictions", 0, 2)
    quality = _quality_rows(scored, quality_model)
    report("predictions", 1, 2)
    latency = _latency_rows(scored, latency_model)
    report("predictions", 2, 2)

    requests = pd.Index(pd.unique(scored["request"]))
    models = dict(list(quality.groupby("model", sort=True)))
    resampled = _resample(quality, models, latency, requests, resamples, random_state, report)
    out: dict[str, Any] = {
        "rows": {
            split: int((table["split"] == split).sum()) for split in ("train", "validation", "test")
        },
        "scored": {
            "requests": len(requests),
            "quality_rows": len(quality),
            "latency_rows": len(latency),
            "rows_left_out": len(table) - len(scored),
            "trained_here": trained_here,
            "training_prefixes": None if seen is None else list(seen),
        },
        "bootstrap": {
            "unit": "request",
            "resamples": resamples,
            "seed": random_state,
            "interval": "percentile, 95%",
        },
        "quality": _quality_summary(quality, _group(resampled, "quality")),
        "quality_per_model": [
            _per_model_record(str(model), rows, _group(resampled, f"model:{model}"))
            for model, rows in models.items()
        ],
        "latency": _latency_summary(latency, _group(resampled, "latency")),
    }
    if m4a1:
        from qlmio_opt.app.m4a1 import evaluate_m4a1

        report("M4A1", 0, 1)
        out["m4a1"] = evaluate_m4a1(random_state=random_state, resamples=resamples)
        report("M4A1", 1, 1)
    return _plain(out)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value


# --------------------------------------------------------------------------------------------
# tables for people
# --------------------------------------------------------------------------------------------
QUALITY_COLUMNS = ("auc", "brier", "log_loss", "ece", "mean_predicted", "mean_observed")
LATENCY_COLUMNS = ("mae_s", "mape", "median_ape", "p90_coverage")


def with_interval(value: float | None, interval: list[float] | None, sign: bool = False) -> str:
    """``0.7098 [0.6956, 0.7243]`` (``sign``: ``+0.0282 [+0.0163, +0.0402]``); blank if None."""
    if value is None:
        return ""
    spec = "+.4f" if sign else ".4f"
    if interval is None:
        return format(value, spec)
    lo, hi = interval
    return f"{value:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def _section_frame(section: dict[str, Any], columns: tuple[str, ...]) -> pd.DataFrame:
    """One row per predictor and one for the difference: sizes, then metric [95% interval]."""
    rows = {}
    for name in (*PREDICTORS, DIFFERENCE):
        if name not in section:
            continue
        part = section[name]
        diff = name == DIFFERENCE
        row: dict[str, Any] = {
            "requests": "" if diff else f"{part['requests']:,}",
            "rows": "" if diff else f"{part['rows']:,}",
        }
        for key in columns:
            row[key] = with_interval(part.get(key), part.get(f"{key}_ci95"), sign=diff)
        rows["learned - analytic" if diff else name] = row
    return pd.DataFrame(rows).T.rename_axis("predictor")


def _per_model_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = {}
    for record in records:
        row: dict[str, Any] = {"rows": f"{record['rows']:,}"}
        for key in PER_MODEL_METRICS:
            for name in (*PREDICTORS, DIFFERENCE):
                label = f"{key} {'learned - analytic' if name == DIFFERENCE else name}"
                row[label] = with_interval(
                    record[f"{key}_{name}"], record[f"{key}_{name}_ci95"], sign=name == DIFFERENCE
                )
        rows[record["model"]] = row
    return pd.DataFrame(rows).T.rename_axis("model")


def report_frames(result: dict[str, Any]) -> list[tuple[str, pd.DataFrame]]:
    """The tables of an :func:`evaluate_predictors` result, each with its title."""
    quality, latency = result["quality"], result["latency"]
    frames = [
        (
            f"quality: {quality['analytic']['rows']:,} request-model rows of "
            f"{quality['analytic']['requests']:,} requests (metric [95% interval])",
            _section_frame(quality, QUALITY_COLUMNS),
        ),
        (
            "quality per model (each model's rows: one per request)",
            _per_model_frame(result["quality_per_model"]),
        ),
        (
            f"latency: {latency['analytic']['rows']:,} request-node rows of "
            f"{latency['analytic']['requests']:,} requests (metric [95% interval])",
            _section_frame(latency, LATENCY_COLUMNS),
        ),
    ]
    m4a1 = result.get("m4a1")
    if m4a1:
        frame = pd.DataFrame({k: m4a1[k] for k in ("baseline", "learned") if k in m4a1}).T
        frames.append(
            (
                f"M4A1 real log ({m4a1['n_rows']} calls, {m4a1['n_episodes']} dialogues), "
                f"{m4a1['folds']}-fold by dialogue",
                frame.rename_axis("model"),
            )
        )
        if "latency" in m4a1:
            frames.append(m4a1_latency_frame(m4a1["latency"], m4a1["folds"]))
    return frames


def m4a1_latency_frame(latency: dict[str, Any], folds: int) -> tuple[str, pd.DataFrame]:
    """The M4A1 latency measures (those of the state table's evaluation), with its title."""
    rows = {}
    for name in ("baseline", "learned"):
        part = latency[name]
        rows[name] = {
            key: with_interval(part[key], part.get(f"{key}_ci95")) for key in LATENCY_COLUMNS
        }
    rows["learned - baseline"] = {
        "mape": with_interval(
            latency["learned_minus_baseline_mape"],
            latency["learned_minus_baseline_mape_ci95"],
            sign=True,
        )
    }
    title = (
        f"M4A1 latency ({latency['rows']} calls, {latency['episodes']} dialogues, {folds}-fold "
        f"by dialogue; [95% interval], bootstrap over dialogues; p90: conformal). "
        f"{latency['note']}."
    )
    return title, pd.DataFrame(rows).T.fillna("").rename_axis("model")
