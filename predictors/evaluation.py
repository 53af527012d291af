"""Learned against analytic predictors on held-out data: the figures of
``qlmio-opt evaluate-predictors``.

Quality: the learned quality model is trained on the ``train`` split of a bench table
(calibrated on ``validation``) and scored with the analytic predictor on the ``test`` split, one
row per request and model (nodes with the same model share one outcome), overall and per model.
Latency: the learned latency model against the analytic stand-alone physics on the same test
rows. M4A1: the real-log models of :mod:`qlmio_opt.predictors.m4a1`, K-fold by dialogue.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from qlmio_opt.predictors.learned_latency import (
    LearnedLatencyModel,
    analytic_parts,
    latency_metrics,
)
from qlmio_opt.predictors.learned_quality import LearnedQualityModel, quality_metrics

__all__ = ["evaluate_predictors"]


def _quality(table: pd.DataFrame, random_state: int) -> tuple[dict[str, Any], pd.DataFrame]:
    model = LearnedQualityModel(random_state=random_state).fit(table)
    test = table[table["split"] == "test"].drop_duplicates(["request", "model"])
    if len(test) == 0 or test["completed"].nunique() < 2:
        raise ValueError("the test split needs both outcomes to score quality")
    y = test["completed"].to_numpy()
    names = model.feature_spec_.names()
    analytic = model.features_table(test)[:, names.index("analytic_quality")]
    learned = model.predict_proba_table(test)
    overall = {"analytic": quality_metrics(y, analytic), "learned": quality_metrics(y, learned)}
    rows = []
    for key, rows_mask in test.groupby("model").indices.items():
        a = quality_metrics(y[rows_mask], analytic[rows_mask])
        b = quality_metrics(y[rows_mask], learned[rows_mask])
        rows.append(
            {
                "model": key,
                "rows": len(rows_mask),
                "auc_analytic": a["auc"],
                "auc_learned": b["auc"],
                "brier_analytic": a["brier"],
                "brier_learned": b["brier"],
            }
        )
    return overall, pd.DataFrame(rows)


def _latency(table: pd.DataFrame, random_state: int) -> dict[str, Any]:
    train = table[table["split"] == "train"]
    test = table[table["split"] == "test"]
    model = LearnedLatencyModel(random_state=random_state).fit(train)
    learned = model.predict_table(test)
    actual = test["latency_s"].to_numpy()
    return {
        "analytic": latency_metrics(actual, analytic_parts(test)["latency_s"]),
        "learned": latency_metrics(actual, learned["latency_s"], learned["latency_p90_s"]),
    }


def evaluate_predictors(
    table: pd.DataFrame, *, random_state: int = 0, m4a1: bool = True
) -> dict[str, Any]:
    """``{"quality": {"analytic": ..., "learned": ...}, "quality_per_model": [...],
    "latency": {"analytic": ..., "learned": ...}, "m4a1": {...}}`` on ``table``'s test split."""
    quality, per_model = _quality(table, random_state)
    out: dict[str, Any] = {
        "rows": {
            split: int((table["split"] == split).sum()) for split in ("train", "validation", "test")
        },
        "quality": quality,
        "quality_per_model": per_model.to_dict(orient="records"),
        "latency": _latency(table, random_state),
    }
    if m4a1:
        from qlmio_opt.predictors.m4a1 import evaluate_m4a1

        out["m4a1"] = _plain(evaluate_m4a1(random_state=random_state))
    return _plain(out)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value
