"""Solve windows with several solvers and tabulate them against the exact optimum."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from qlmio_opt.instance import Instance
from qlmio_opt.solution import Status
from qlmio_opt.solve import solve

REFERENCE = "exact"


def compare(
    instances: Sequence[Instance],
    solvers: Sequence[str],
    *,
    time_limit: float | None = None,
    seed: int = 0,
    predictors: str = "analytic",
    progress=None,
) -> pd.DataFrame:
    """One row per (window, solver): status, objective, gap to exact, means, deferrals, time.

    The gap is ``(objective - best) / |best|`` where ``best`` is the exact solver's objective on
    that window (run when ``"exact"`` is among ``solvers``); it is empty otherwise.
    """
    rows = []
    for instance in instances:
        block = []
        for name in solvers:
            sol = solve(instance, name, predictors=predictors, time_limit=time_limit, seed=seed)
            block.append(
                {
                    "instance": instance.name,
                    "requests": len(instance.requests),
                    "solver": name,
                    "status": sol.status.value,
                    "objective": sol.objective,
                    "mean_latency_s": sol.mean_latency_s,
                    "mean_quality": sol.mean_quality,
                    "deferred": len(sol.deferred),
                    "time_s": sol.times.solve_s,
                }
            )
            if progress is not None:
                progress()
        ref = next(
            (
                b["objective"]
                for b in block
                if b["solver"] == REFERENCE
                and b["status"] in (Status.OPTIMAL.value, Status.TIME_LIMIT.value)
            ),
            None,
        )
        for b in block:
            usable = b["objective"] is not None and b["status"] in (
                Status.OPTIMAL.value,
                Status.FEASIBLE.value,
                Status.TIME_LIMIT.value,
            )
            b["gap"] = (
                (b["objective"] - ref) / abs(ref) if ref not in (None, 0) and usable else np.nan
            )
        rows.extend(block)
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Per solver: windows solved feasibly, median / p95 gap, median time, speed-up vs exact."""
    feasible = frame["status"].isin(
        [s.value for s in (Status.OPTIMAL, Status.FEASIBLE, Status.TIME_LIMIT)]
    )
    out = (
        frame.assign(feasible=feasible)
        .groupby("solver", sort=False)
        .agg(
            windows=("instance", "count"),
            feasible=("feasible", "sum"),
            median_gap=("gap", "median"),
            p95_gap=("gap", lambda g: g.quantile(0.95) if g.notna().any() else np.nan),
            mean_latency_s=("mean_latency_s", "mean"),
            mean_quality=("mean_quality", "mean"),
            median_time_s=("time_s", "median"),
        )
    )
    if REFERENCE in out.index:
        ratio = frame.pivot_table(index="instance", columns="solver", values="time_s")
        speed = ratio[REFERENCE].to_numpy()[:, None] / ratio.to_numpy()
        out["median_speedup_vs_exact"] = pd.Series(np.median(speed, axis=0), index=ratio.columns)
    return out
