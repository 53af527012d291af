"""Write a replay's results: per-request and per-window CSVs, the summary, and two plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qlmio_opt.predictors import predictor_spec
from qlmio_opt.simulator.metrics import node_figures
from qlmio_opt.simulator.replay import ReplayResult


def summary_json(result: ReplayResult) -> dict[str, Any]:
    """``{"policies": {name: {"mean_latency_s": ..., "tcr": ..., ..., "node_share": {node: ...},
    "node_latency_ratio": {node: ...}}}, "config": {...}}`` (see
    :func:`~qlmio_opt.simulator.metrics.summarise` and
    :func:`~qlmio_opt.simulator.metrics.node_figures`)."""
    summary = result.summary()
    columns = summary.to_dict(orient="dict")  # per column, so integer columns stay integers
    policies = {
        name: {col: _plain(columns[col][name]) for col in summary.columns} for name in summary.index
    }
    for name, run in result.runs.items():
        for key, per_node in node_figures(run).items():
            policies[name][key] = {node: _plain(v) for node, v in per_node.items()}
    cfg = result.config
    return {
        "policies": policies,
        "config": {
            "trace": result.workload.trace,
            "start_s": result.workload.start_s,
            "requests": len(result.workload.requests),
            "duration_s": result.workload.duration_s,
            "engine": result.workload.engine,
            "node_engines": {
                node: {"scheduler": e.scheduler, "max_batched_tokens": e.max_batched_tokens}
                for node, e in result.node_engines.items()
            },
            "window_s": cfg.window_s,
            "predictors": (predictor_spec(cfg.predictors)),
            "time_limit": cfg.time_limit,
            "seed": cfg.seed,
        },
    }


def _plain(value: Any) -> Any:
    """A numpy scalar as a plain Python value; NaN and infinities as None (JSON has neither)."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else float(value)
    return value


def write_results(result: ReplayResult, out_dir: Path) -> list[Path]:
    """Write ``summary.csv``, ``summary.json``, ``requests.csv.gz``, ``windows.csv``,
    ``latency_cdf.png`` and ``tcr_vs_latency.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    summary = result.summary()
    paths.append(out_dir / "summary.csv")
    summary.to_csv(paths[-1])
    paths.append(out_dir / "summary.json")
    paths[-1].write_text(json.dumps(summary_json(result), indent=2) + "\n")
    requests = pd.concat(
        [run.requests.assign(policy=name) for name, run in result.runs.items()], ignore_index=True
    )
    paths.append(out_dir / "requests.csv.gz")
    requests.to_csv(paths[-1], index=False)
    windows = pd.concat(
        [run.windows.assign(policy=name) for name, run in result.runs.items()], ignore_index=True
    )
    paths.append(out_dir / "windows.csv")
    windows.to_csv(paths[-1], index=False)
    paths.extend(plot_results(result, out_dir))
    return paths


def plot_results(result: ReplayResult, out_dir: Path) -> list[Path]:
    """The latency CDF per policy and TCR against mean latency per policy, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, run in result.runs.items():
        lat = np.sort(run.requests["latency_s"].to_numpy())
        ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=name)
    ax.set_xscale("log")
    ax.set_xlabel("latency (s, arrival to last token)")
    ax.set_ylabel("share of requests")
    ax.set_title(f"Latency CDF, {result.workload.trace}, {len(result.workload.requests)} requests")
    ax.grid(True, alpha=0.3)
    ax.legend()
    cdf = out_dir / "latency_cdf.png"
    fig.tight_layout()
    fig.savefig(cdf, dpi=120)
    plt.close(fig)

    summary = result.summary()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter(summary["mean_latency_s"], 100 * summary["tcr"])
    for policy, row in summary.iterrows():
        ax.annotate(
            str(policy),
            (row["mean_latency_s"], 100 * row["tcr"]),
            textcoords="offset points",
            xytext=(4, 4),
        )
    ax.set_xlabel("mean latency (s)")
    ax.set_ylabel("task completion rate (%)")
    ax.set_title("TCR against mean latency per policy")
    ax.grid(True, alpha=0.3)
    scatter = out_dir / "tcr_vs_latency.png"
    fig.tight_layout()
    fig.savefig(scatter, dpi=120)
    plt.close(fig)
    return [cdf, scatter]
