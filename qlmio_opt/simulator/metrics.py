"""Per-policy figures of a replay: latency percentiles, task completion, deadlines, utilisation,
and how well the policy's predictions held per node."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from qlmio_opt.simulator.replay import PolicyRun, ReplayResult

COLUMNS = (
    "requests",
    "mean_latency_s",
    "p50_latency_s",
    "p95_latency_s",
    "p99_latency_s",
    "tcr",
    "expected_tcr",
    "deadline_misses",
    "edge_share",
    "edge_utilisation",
    "deferred_requests",
    "max_deferrals",
    "mean_decision_ms",
    "p95_decision_ms",
    "predicted_mean_latency_s",
    "latency_prediction_error",
    "fallback_windows",
)


def summarise(result: ReplayResult) -> pd.DataFrame:
    """One row per policy.

    ``tcr`` is the share of requests truly completed; ``expected_tcr`` the mean true completion
    probability of the node each request was served on (the drawn outcomes' expectation, free of
    their coin flips; a request deferred several times counts once, at its final node);
    ``edge_utilisation`` the mean over edge
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
            "expected_tcr": float(df["completion_prob"].mean()) if len(df) else np.nan,
            "deadline_misses": int(df["deadline_missed"].sum()),
            "edge_share": float((df["tier"] == "edge").mean()) if len(df) else np.nan,
            "edge_utilisation": util,
            "deferred_requests": int((df["deferrals"] > 0).sum()),
            "max_deferrals": int(df["deferrals"].max()) if len(df) else 0,
            "mean_decision_ms": float(decision_ms.mean()) if len(decision_ms) else np.nan,
            "p95_decision_ms": _pct(decision_ms, 95),
            "predicted_mean_latency_s": predicted,
            "latency_prediction_error": (predicted - mean) / mean if mean > 0 else np.nan,
            "fallback_windows": int((run.windows["fallback"] != "").sum()),
        }
    frame = pd.DataFrame(list(rows.values()), index=pd.Index(list(rows), name="policy"))
    integers = ("requests", "deadline_misses", "deferred_requests", "max_deferrals")
    for col in (*integers, "fallback_windows"):
        frame[col] = frame[col].astype(np.int64)
    return frame[list(COLUMNS)]


def node_figures(run: PolicyRun) -> dict[str, dict[str, float]]:
    """Per node that served requests: its share of the requests (``node_share``) and its
    predicted over simulated mean latency (``node_latency_ratio``, over the requests with a
    prediction; NaN when none has one)."""
    df = run.requests[run.requests["node"].notna()]
    share: dict[str, float] = {}
    ratio: dict[str, float] = {}
    for node, rows in df.groupby("node", sort=True):
        share[str(node)] = len(rows) / len(run.requests)
        predicted = rows["predicted_latency_s"].to_numpy()
        simulated = rows["latency_s"].to_numpy()
        known = np.isfinite(predicted)
        ratio[str(node)] = (
            float(predicted[known].mean() / simulated[known].mean()) if known.any() else np.nan
        )
    return {"node_share": share, "node_latency_ratio": ratio}


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else np.nan


def reduction_table(summary: pd.DataFrame, baseline: str = "cloud-only") -> pd.DataFrame:
    """Mean-latency reduction and (expected) TCR difference of every policy against
    ``baseline``, and the share of the expected-value oracle's reduction each reaches (of the
    outcome oracle's when only that one is present)."""
    base = summary.loc[baseline]
    out = pd.DataFrame(index=summary.index)
    out["latency_reduction"] = 1.0 - summary["mean_latency_s"] / base["mean_latency_s"]
    out["tcr_minus_baseline_pts"] = 100.0 * (summary["tcr"] - base["tcr"])
    out["expected_tcr_minus_baseline_pts"] = 100.0 * (
        summary["expected_tcr"] - base["expected_tcr"]
    )
    oracle = next((o for o in ("oracle-expected", "oracle") if o in summary.index), None)
    if oracle is not None:
        best = float(out["latency_reduction"].loc[oracle])
        share = out["latency_reduction"] / best if best > 0 else np.nan
        out[f"share_of_{oracle.replace('-', '_')}_reduction"] = share
    return out
