"""Per-policy figures of a replay: latency percentiles, task completion, deadlines, utilisation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from qlmio_opt.simulator.replay import ReplayResult

COLUMNS = (
    "requests",
    "mean_latency_s",
    "p50_latency_s",
    "p95_latency_s",
    "p99_latency_s",
    "tcr",
    "deadline_misses",
    "edge_share",
    "edge_utilisation",
    "deferred_requests",
    "mean_decision_ms",
    "p95_decision_ms",
    "predicted_mean_latency_s",
    "latency_prediction_error",
    "fallback_windows",
)


def summarise(result: ReplayResult) -> pd.DataFrame:
    """One row per policy.

    ``tcr`` is the share of requests truly completed; ``edge_utilisation`` the mean over edge
    nodes of the share of the replay (first arrival to last finish) during which the node was
    serving; ``latency_prediction_error`` is ``(predicted - simulated) / simulated`` mean latency,
    the predicted latency being the formulation's (with its congestion model) plus the time a
    deferred request had already waited.
    """
    rows = {}
    for name, run in result.runs.items():
        df = run.requests
        lat = df["latency_s"].to_numpy()
        makespan = float(np.nanmax(df["finish_s"])) if len(df) else 0.0
        edge = [n for n, tier in result.node_tiers.items() if tier == "edge"]
        util = (
            float(np.mean([run.edge_busy_s.get(n, 0.0) / makespan for n in edge]))
            if edge and makespan > 0
            else 0.0
        )
        decision_ms = 1000.0 * run.windows["decision_s"].to_numpy()
        predicted = float(np.nanmean(df["predicted_latency_s"])) if len(df) else np.nan
        mean = float(np.mean(lat)) if len(lat) else np.nan
        rows[name] = {
            "requests": len(df),
            "mean_latency_s": mean,
            "p50_latency_s": _pct(lat, 50),
            "p95_latency_s": _pct(lat, 95),
            "p99_latency_s": _pct(lat, 99),
            "tcr": float(df["completed"].mean()) if len(df) else np.nan,
            "deadline_misses": int(df["deadline_missed"].sum()),
            "edge_share": float((df["tier"] == "edge").mean()) if len(df) else np.nan,
            "edge_utilisation": util,
            "deferred_requests": int((df["deferrals"] > 0).sum()),
            "mean_decision_ms": float(decision_ms.mean()) if len(decision_ms) else np.nan,
            "p95_decision_ms": _pct(decision_ms, 95),
            "predicted_mean_latency_s": predicted,
            "latency_prediction_error": (predicted - mean) / mean if mean > 0 else np.nan,
            "fallback_windows": int((run.windows["fallback"] != "").sum()),
        }
    frame = pd.DataFrame(list(rows.values()), index=pd.Index(list(rows), name="policy"))
    for col in ("requests", "deadline_misses", "deferred_requests", "fallback_windows"):
        frame[col] = frame[col].astype(np.int64)
    return frame[list(COLUMNS)]


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else np.nan


def reduction_table(summary: pd.DataFrame, baseline: str = "all-cloud") -> pd.DataFrame:
    """Mean-latency reduction and TCR difference of every policy against ``baseline``, and the
    share of the oracle's reduction each reaches (when an oracle row is present)."""
    base = summary.loc[baseline]
    out = pd.DataFrame(index=summary.index)
    out["latency_reduction"] = 1.0 - summary["mean_latency_s"] / base["mean_latency_s"]
    out["tcr_minus_baseline_pts"] = 100.0 * (summary["tcr"] - base["tcr"])
    if "oracle" in summary.index:
        best = float(out["latency_reduction"].loc["oracle"])
        out["share_of_oracle_reduction"] = out["latency_reduction"] / best if best > 0 else np.nan
    return out
