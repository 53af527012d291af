"""Solve windows with several solvers and tabulate them against the exact optimum."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from qlmio_opt.app.solve import solve
from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.solution import Status

REFERENCE = "exact"


def compare(
    instances: Sequence[Instance],
    solvers: Sequence[str],
    *,
    time_limit: float | None = None,
    seed: int = 0,
    predictors: str = "analytic",
    progress=None,
    best_known: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """One row per (window, solver): status, objective, the three gaps, means, deferrals, time.

    * ``gap``: the solver's own proven gap, ``|objective - bound| / |objective|`` with the best
      bound it proved (HiGHS's, or the greedy's Lagrangian dual; ``bound_source`` says which);
    * ``gap_to_exact``: ``(objective - best) / |best|`` with ``best`` the exact solver's objective
      on that window in this run (when ``"exact"`` is among ``solvers``);
    * ``gap_to_bks``: the same against the window's best-known value, where ``best_known`` (by
      instance name) has one.
    """
    rows = []
    known = best_known or {}
    for instance in instances:
        block: list[dict[str, Any]] = []
        for name in solvers:
            sol = solve(instance, name, predictors=predictors, time_limit=time_limit, seed=seed)
            block.append(
                {
                    "instance": instance.name,
                    "requests": len(instance.requests),
                    "solver": name,
                    "status": sol.status.value,
                    "objective": sol.objective,
                    "gap": sol.gap,
                    "bound_source": sol.bound_source,
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
        bks = known.get(instance.name)
        for b in block:
            usable = b["objective"] is not None and b["status"] in (
                Status.OPTIMAL.value,
                Status.FEASIBLE.value,
                Status.TIME_LIMIT.value,
            )
            b["gap_to_exact"] = _relative(b["objective"], ref) if usable else np.nan
            b["gap_to_bks"] = _relative(b["objective"], bks) if usable else np.nan
        rows.extend(block)
    return pd.DataFrame(rows)


def _relative(objective: float, best: float | None) -> float:
    """``(objective - best) / |best|``; NaN without a (nonzero) best."""
    if best is None or best == 0:
        return np.nan
    return (objective - best) / abs(best)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Per solver: windows solved feasibly, median / p95 gap to exact and to the best-known
    values (where the windows have them), median time, speed-up vs exact."""
    feasible = frame["status"].isin(
        [s.value for s in (Status.OPTIMAL, Status.FEASIBLE, Status.TIME_LIMIT)]
    )
    out = (
        frame.assign(feasible=feasible)
        .groupby("solver", sort=False)
        .agg(
            windows=("instance", "count"),
            feasible=("feasible", "sum"),
            median_gap_to_exact=("gap_to_exact", "median"),
            p95_gap_to_exact=("gap_to_exact", _p95),
            median_gap_to_bks=("gap_to_bks", "median"),
            p95_gap_to_bks=("gap_to_bks", _p95),
            mean_latency_s=("mean_latency_s", "mean"),
            mean_quality=("mean_quality", "mean"),
            median_time_s=("time_s", "median"),
        )
    )
    out = out.dropna(axis=1, how="all")  # no best-known values: no bks columns
    if REFERENCE in out.index:
        ratio = frame.pivot_table(index="instance", columns="solver", values="time_s")
        speed = ratio[REFERENCE].to_numpy()[:, None] / ratio.to_numpy()
        out["median_speedup_vs_exact"] = pd.Series(np.median(speed, axis=0), index=ratio.columns)
    return out


def _p95(gaps: pd.Series) -> float:
    return gaps.quantile(0.95) if gaps.notna().any() else np.nan
