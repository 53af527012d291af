"""Parameter sweeps: every combination of objective weights and capacity scales, on every window.

``--param NAME=V1,V2,...`` gives the values of one parameter (:data:`PARAMS`); the sweep solves
every window under every combination with every solver (one task per window and combination, in
parallel through :mod:`qlmio_opt.app.parallel`) and returns a tidy table: one row per (window,
combination, solver), the columns of :func:`qlmio_opt.app.compare.compare` (``gap`` is each solver's
gap to its own proven bound, ``gap_to_exact`` the gap to the exact solver's objective on the same
window and combination, ``gap_to_bks`` the gap to the window's best-known value where the
combination leaves the window as it is) plus the file and the parameter values.
:func:`summarise` marks each solver's quality-latency frontier and :func:`plot_frontier` draws it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qlmio_opt.app.batch import CompareTask, WindowFile, file_sizes
from qlmio_opt.app.parallel import SERIAL, ParallelConfig, TaskResult, run_tasks
from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.solution import Status

OBJECTIVE_PARAMS = {
    "latency_weight": "objective.latency_weight (weighted windows)",
    "quality_weight": "objective.quality_weight (weighted windows)",
    "latency_scale_s": "objective.latency_scale_s (weighted windows)",
    "quality_tolerance": "objective.quality_tolerance (quality_floor windows, no target)",
    "quality_target": "objective.quality_target (quality_floor windows only)",
    "deferral_penalty_s": "objective.deferral_penalty_s (turns deferral on)",
}
SCALE_PARAMS = {
    "edge_memory_scale": "multiplies every edge node's free memory (memory_gb)",
    "bandwidth_scale": "multiplies every link's bandwidth_mbps",
}
PARAMS = {**OBJECTIVE_PARAMS, **SCALE_PARAMS}
USABLE = (Status.OPTIMAL.value, Status.FEASIBLE.value, Status.TIME_LIMIT.value)


def parse_params(specs: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``["latency_weight=0.5,1,2", ...]`` as ``{"latency_weight": (0.5, 1.0, 2.0), ...}``.

    Raises
    ------
    ValueError
        Naming the bad ``--param``: unknown name (listing the valid ones), repeated name, or a
        value that is not a finite number >= 0 (> 0 for scales).
    """
    out: dict[str, tuple[float, ...]] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        if not sep or not text.strip():
            raise ValueError(f'--param "{spec}": expected NAME=V1,V2,...')
        if name not in PARAMS:
            raise ValueError(f'--param "{spec}": unknown parameter "{name}"; valid: {_valid()}')
        if name in out:
            raise ValueError(f'--param "{spec}": {name} given twice')
        values = []
        for item in text.split(","):
            try:
                value = float(item)
            except ValueError:
                raise ValueError(f'--param "{spec}": "{item.strip()}" is not a number') from None
            low_ok = value > 0 if name in SCALE_PARAMS else value >= 0
            if not math.isfinite(value) or not low_ok:
                bound = "> 0" if name in SCALE_PARAMS else ">= 0"
                raise ValueError(f'--param "{spec}": {name} must be finite and {bound}')
            values.append(value)
        out[name] = tuple(dict.fromkeys(values))
    return out


def _valid() -> str:
    return ", ".join(PARAMS)


def _shown(setting: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in setting.items())


def combinations(params: dict[str, tuple[float, ...]]) -> list[dict[str, float]]:
    """Every combination of the values, the first parameter varying slowest."""
    names = list(params)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*params.values())]


def apply_setting(instance: Instance, setting: dict[str, float]) -> Instance:
    """``instance`` with the objective fields set and the capacities scaled (validated again)."""
    data = instance.to_dict()
    objective = {k: float(v) for k, v in setting.items() if k in OBJECTIVE_PARAMS}
    if objective:
        data["objective"] = {**data.get("objective", {}), **objective}
    scale = setting.get("edge_memory_scale")
    if scale is not None:
        memory = instance.node_memory_gb
        data["nodes"] = [
            {**node, "memory_gb": float(memory[j] * scale)}
            if node["tier"] == "edge" and np.isfinite(memory[j])
            else node
            for j, node in enumerate(data["nodes"])
        ]
    scale = setting.get("bandwidth_scale")
    if scale is not None:
        network = data["network"]
        links = [
            {**k, "bandwidth_mbps": float(k["bandwidth_mbps"] * scale)} for k in network["links"]
        ]
        data["network"] = {**network, "links": links}
    return Instance.from_dict(data, catalog=instance.resolved_catalog)


@dataclass(frozen=True)
class SweepTask:
    """One window file under one combination, solved with every solver."""

    job: CompareTask
    setting: dict[str, float]


def sweep_window(task: SweepTask) -> list[dict[str, Any]]:
    """The rows of one (window, combination): one per solver (runs in a worker)."""
    from qlmio_opt.domain.errors import InputError

    job = task.job
    base = job.window.read(job.catalog)
    try:
        instance = apply_setting(base, task.setting)
    except InputError as exc:
        raise InputError(exc.issues, f"{job.window.path} with {_shown(task.setting)}") from None
    head = {"file": str(job.window.path), "mode": instance.objective.mode, **task.setting}
    rows = job.rows(instance, as_given=instance == base)
    return [{**head, **row, "error": ""} for row in rows]


def run_sweep(
    files: Sequence[Path],
    params: dict[str, tuple[float, ...]],
    solvers: Sequence[str],
    *,
    predictors: Any = "analytic",
    time_limit: float | None = None,
    seed: int = 0,
    catalog: Catalog | None = None,
    parallel: ParallelConfig = SERIAL,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, list[TaskResult]]:
    """The tidy table of every (window, combination, solver), and the per-task results.

    A task that fails (unreadable file, a combination that makes a window invalid) gives one
    row per solver with status ``error`` and the message in ``error``.
    """
    settings = combinations(params)
    jobs = [
        CompareTask(
            WindowFile.of(f, parallel), tuple(solvers), predictors, time_limit, seed, catalog
        ).with_known()
        for f in files
    ]
    tasks = [SweepTask(job, setting) for job in jobs for setting in settings]
    paths = [t.job.window.path for t in tasks]
    labels = [
        f"{p} [{_shown(t.setting)}]" if t.setting else str(p)
        for p, t in zip(paths, tasks, strict=True)
    ]
    cost = file_sizes(paths)
    results = run_tasks(
        sweep_window, tasks, labels=labels, config=parallel, progress=progress, cost=cost
    )
    rows: list[dict[str, Any]] = []
    for task, result in zip(tasks, results, strict=True):
        if result.ok:
            rows.extend(result.unwrap())
            continue
        for solver in solvers:
            rows.append(
                {"file": str(task.job.window.path), **task.setting, "solver": solver}
                | {"status": "error"}
                | {"error": result.error}
            )
    columns = ["file", "instance", "mode", *params, "solver"]
    frame = pd.DataFrame(rows)
    rest = [c for c in frame if c not in columns and c != "error"]
    return frame[[c for c in columns if c in frame] + rest + ["error"]], results


def summarise(frame: pd.DataFrame, params: Sequence[str]) -> pd.DataFrame:
    """Per (combination, solver): windows, usable answers, mean latency and quality, time, and
    whether the point is on its solver's quality-latency frontier."""
    keys = [*params, "solver"]
    usable = frame["status"].isin(USABLE)
    ok = frame[usable]
    table = (
        frame.assign(usable=usable)
        .groupby(keys, sort=False)
        .agg(windows=("file", "count"), usable=("usable", "sum"))
    )
    if len(ok):
        means = ok.groupby(keys, sort=False).agg(
            mean_latency_s=("mean_latency_s", "mean"),
            mean_quality=("mean_quality", "mean"),
            median_gap_to_exact=("gap_to_exact", "median"),
            median_gap_to_bks=("gap_to_bks", "median"),
            median_time_s=("time_s", "median"),
        )
        table = table.join(means)
    else:
        table = table.assign(mean_latency_s=np.nan, mean_quality=np.nan)
    table["frontier"] = _on_frontier(table)
    return table


def _on_frontier(table: pd.DataFrame) -> pd.Series:
    """True where no other point of the same solver has lower latency and higher quality."""
    flags = pd.Series(False, index=table.index)
    for _, group in table.groupby(level="solver", sort=False):
        pts = group[["mean_latency_s", "mean_quality"]].dropna()
        for key, (lat, qual) in pts.iterrows():
            dominated = (
                (pts["mean_latency_s"] <= lat)
                & (pts["mean_quality"] >= qual)
                & ((pts["mean_latency_s"] < lat) | (pts["mean_quality"] > qual))
            )
            flags[key] = not dominated.any()
    return flags


def plot_frontier(summary: pd.DataFrame, path: Path, title: str) -> None:
    """Mean predicted latency against mean predicted quality, one colour per solver, with each
    solver's frontier joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for solver, group in summary.groupby(level="solver", sort=False):
        pts = group.dropna(subset=["mean_latency_s", "mean_quality"])
        (dots,) = ax.plot(pts["mean_quality"], pts["mean_latency_s"], "o", alpha=0.6, label=solver)
        front = pts[pts["frontier"]].sort_values("mean_quality")
        ax.plot(front["mean_quality"], front["mean_latency_s"], "-", color=dots.get_color())
    ax.set_xlabel("mean predicted quality")
    ax.set_ylabel("mean predicted latency (s)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_sweep(frame: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``sweep.csv`` (and ``sweep.parquet`` when pyarrow is installed), ``frontier.csv`` and
    ``frontier.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "sweep.csv"]
    frame.to_csv(paths[0], index=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        paths.append(out_dir / "sweep.parquet")
        frame.to_parquet(paths[-1], index=False)
    paths.append(out_dir / "frontier.csv")
    summary.to_csv(paths[-1])
    paths.append(out_dir / "frontier.png")
    plot_frontier(
        summary, paths[-1], title=f"trade-off frontier ({frame['file'].nunique()} windows)"
    )
    return paths
