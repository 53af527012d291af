"""Latency under load, learned against engine-aware analytic: the ``by_load`` and
``held_out_devices`` figures of ``qlmio-opt evaluate-predictors --under-load``.

**Rows.** A state table (:mod:`qlmio_opt.simulator.state_dataset`): every request on every node
in a sampled live state under both engines. A latency model under load
(:class:`~qlmio_opt.predictors.learned_load_latency.LoadLatencyModel`) is trained on its
``train`` split (p90 widened on ``validation``) unless one is given; the ``test`` split's
requests were never seen and are scored.

**By load level** (``idle``, ``busy``, ``saturated``, the table's observable ``load_level``, and
``under_load`` = busy and saturated together): MAPE, MAE, median APE and p90 coverage of the
engine-aware analytic latency (its p90: the analytic latency widened by its own conformal offset
on the validation rows) and of the learned one (guarded: rows outside the support keep the
analytic value), each with a 95% interval from a bootstrap over requests
(:mod:`qlmio_opt.app.bootstrap`), and the learned - analytic MAPE with its paired interval.

**Held-out devices** (and models): for each device, a model trained on the ``train`` rows of
every other device scores the ``test`` rows of that device; pooled over devices. The guard
keeps those pairs analytic (``learned``); ``learned_unguarded`` is what the residual would have
done there without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from qlmio_opt.app.bootstrap import RESAMPLES, latency_comparison
from qlmio_opt.predictors.learned_load_latency import LoadLatencyModel, table_rows

__all__ = ["LEVELS", "evaluate_under_load", "under_load_frames"]

LEVELS = ("idle", "busy", "saturated", "under_load")
"""The load levels scored: the table's three and busy with saturated together."""

Progress = Callable[[str, int, int], None]


def _level_rows(table: pd.DataFrame, level: str) -> np.ndarray:
    levels = table["load_level"].to_numpy(dtype=object)
    if level == "under_load":
        return levels != "idle"
    return levels == level


def _predictions(model: LoadLatencyModel, table: pd.DataFrame) -> pd.DataFrame:
    """Actual, analytic (and its p90), learned (and its p90, and unguarded) per row."""
    rows = table_rows(table, model.catalog)
    guarded = model.predict_rows(rows)
    free = model.predict_rows(rows, guard=False)
    analytic = guarded["analytic_s"]
    return pd.DataFrame(
        {
            "request": table["request"].to_numpy(),
            "actual": table["latency_s"].to_numpy(float),
            "analytic": analytic,
            "analytic_p90": analytic * np.exp(model.analytic_p90_offset_),
            "learned": guarded["latency_s"],
            "learned_p90": guarded["latency_p90_s"],
            "learned_unguarded": free["latency_s"],
            "learned_unguarded_p90": free["latency_p90_s"],
            "guarded": guarded["guard"] != "",
        }
    )


def _scored(rows: pd.DataFrame, names: tuple[str, ...], resamples: int, seed: int) -> dict:
    """Each predictor's metrics with intervals, and learned - analytic MAPE, on ``rows``."""
    requests = pd.Index(pd.unique(rows["request"]))
    idx = requests.get_indexer(rows["request"])
    actual = rows["actual"].to_numpy()
    return {"rows": len(rows), "requests": len(requests)} | latency_comparison(
        actual,
        {name: rows[name].to_numpy() for name in names},
        {name: rows[f"{name}_p90"].to_numpy() for name in names},
        idx,
        len(requests),
        resamples=resamples,
        seed=seed,
        reference="analytic",
    )


def _held_out(
    table: pd.DataFrame, column: str, fit: Callable[[pd.DataFrame], LoadLatencyModel], report
) -> pd.DataFrame:
    """Test rows of each value of ``column`` predicted by a model trained without it."""
    parts = []
    values = sorted(table[column].unique())
    for k, value in enumerate(values):
        report(f"held-out {column}s", k, len(values))
        rest = table[(table[column] != value)]
        model = fit(rest)
        test = table[(table[column] == value) & (table["split"] == "test")]
        if len(test):
            parts.append(_predictions(model, test).assign(held_out=value))
    report(f"held-out {column}s", len(values), len(values))
    return pd.concat(parts, ignore_index=True)


def evaluate_under_load(
    table: pd.DataFrame,
    model: LoadLatencyModel | None = None,
    *,
    random_state: int = 0,
    resamples: int = RESAMPLES,
    held_out: tuple[str, ...] = ("device", "model"),
    model_params: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Latency under load on ``table``'s ``test`` split (module docstring).

    Parameters
    ----------
    table
        A state table (``bench-data --state``).
    model
        A fitted latency model under load; None: trained on the table's ``train`` split.
    random_state
        Seed of the training and of the bootstrap.
    resamples
        Bootstrap resamples of the requests.
    held_out
        Table columns whose values are held out in turn (``device``, ``model``); each trains
        one model per value.
    model_params
        Settings of the models trained here.
    progress
        ``progress(step, done, total)``.

    Returns
    -------
    dict
        ``by_load.<level>`` and ``held_out_<column>s`` (``rows``, ``requests``, per predictor
        ``mape``, ``mae_s``, ``median_ape``, ``p90_coverage`` and their ``_ci95``,
        ``learned_minus_analytic_mape`` with its interval, ``learned_over_analytic_mape``), and
        ``model`` (how the scored model was made, its guard's counts on the test rows).

    Raises
    ------
    ValueError
        If the table has no test rows.
    """
    report = progress or (lambda step, done, total: None)
    params = {"random_state": random_state, **(model_params or {})}

    def fit(rows: pd.DataFrame) -> LoadLatencyModel:
        return LoadLatencyModel(**params).fit(rows)

    test = table[table["split"] == "test"]
    if test.empty:
        raise ValueError("the state table has no test rows to score")
    trained_here = model is None
    if model is None:
        report("training", 0, 1)
        model = fit(table)
        report("training", 1, 1)
    scored = _predictions(model, test)
    names = ("analytic", "learned")
    out: dict[str, Any] = {
        "model": {
            "trained_here": trained_here,
            "max_log_ratio": float(model.max_log_ratio),
            "test_rows_guarded": int(scored["guarded"].sum()),
        },
        "bootstrap": {"unit": "request", "resamples": resamples, "seed": random_state},
        "by_load": {},
    }
    for k, level in enumerate(LEVELS):
        report("by load", k, len(LEVELS))
        pick = _level_rows(test, level)
        if pick.any():
            out["by_load"][level] = _scored(scored[pick], names, resamples, random_state)
    for column in held_out:
        rows = _held_out(table, column, fit, report)
        key = f"held_out_{column}s"
        out[key] = _scored(rows, (*names, "learned_unguarded"), resamples, random_state)
        out[key]["values"] = sorted(rows["held_out"].unique())
    return out


def _cell(record: dict[str, Any], key: str) -> str:
    value, interval = record[key], record.get(f"{key}_ci95")
    if interval is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def under_load_frames(result: dict[str, Any]) -> list[tuple[str, pd.DataFrame]]:
    """The tables of ``evaluate-predictors --under-load``, each with its title."""
    latency = result["latency"]
    rows = []
    groups = [(f"load: {k}", v) for k, v in latency["by_load"].items()]
    groups += [(k.replace("_", " "), latency[k]) for k in ("held_out_devices", "held_out_models")]
    for label, group in groups:
        for name in ("analytic", "learned", "learned_unguarded"):
            if name in group:
                record = group[name]
                rows.append(
                    {
                        "rows": label,
                        "predictor": name,
                        "n": group["rows"],
                        "MAPE": _cell(record, "mape"),
                        "MAE (s)": _cell(record, "mae_s"),
                        "p90 coverage": _cell(record, "p90_coverage"),
                    }
                )
    frame = pd.DataFrame(rows).set_index(["rows", "predictor"])
    title = (
        "latency under load: engine-aware analytic and learned (held-out test requests; "
        "held-out devices / models: trained without them; metric [95% interval])"
    )
    return [(title, frame)]
