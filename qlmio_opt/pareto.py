"""The quality-latency trade-off curve of one window (epsilon-constraint on mean quality)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from qlmio_opt.instance import Instance
from qlmio_opt.predictors import predict
from qlmio_opt.solve import solve


def quality_range(instance: Instance) -> tuple[float, float]:
    """From the fastest decision's mean quality up to every request on its best allowed node."""
    fastest = solve(
        instance.replace(objective={"mode": "quality_floor", "quality_target": 0.0}),
        "exact",
        time_limit=30,
    )
    low = fastest.mean_quality if fastest.mean_quality is not None else 0.0
    pred = predict(instance)
    high = float(np.where(pred.eligible, pred.quality, -np.inf).max(axis=1).mean())
    return float(low), max(float(low), high)


def pareto_curve(
    instance: Instance, points: int = 10, *, solver: str = "exact", time_limit: float | None = 10.0
) -> pd.DataFrame:
    """Minimise latency for ``points`` evenly spaced quality targets; one row per target."""
    low, high = quality_range(instance)
    rows = []
    keep = instance.objective.model_dump(exclude={"mode", "quality_target"}, exclude_unset=True)
    for target in np.linspace(low, high, max(points, 2)):
        objective = {**keep, "mode": "quality_floor", "quality_target": float(target)}
        sol = solve(instance.replace(objective=objective), solver, time_limit=time_limit)
        rows.append(
            {
                "quality_target": float(target),
                "status": sol.status.value,
                "mean_quality": sol.mean_quality,
                "mean_latency_s": sol.mean_latency_s,
                "deferred": len(sol.deferred),
                "gap": sol.gap,
                "edge_share": _edge_share(instance, sol.assignment),
            }
        )
    return pd.DataFrame(rows)


def _edge_share(instance: Instance, assignment: dict[str, str]) -> float | None:
    if not assignment:
        return None
    edge = {n.id for n in instance.nodes if n.tier == "edge"}
    return sum(node in edge for node in assignment.values()) / len(assignment)


def plot_pareto(frame: pd.DataFrame, path: Path, title: str) -> None:
    """Mean latency against mean quality, feasible points joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = frame.dropna(subset=["mean_quality", "mean_latency_s"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ok["mean_quality"], ok["mean_latency_s"], "o-", color="tab:blue")
    ax.set_xlabel("mean predicted quality")
    ax.set_ylabel("mean predicted latency (s)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
