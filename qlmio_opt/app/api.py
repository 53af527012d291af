"""``assign(requests, capacities)``: the call a serving gateway's scheduler makes per window."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from pydantic import BaseModel

from qlmio_opt.app.solve import solve
from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.instance import Instance, Objective, Request
from qlmio_opt.domain.solution import Solution
from qlmio_opt.predictors import Predictor

AUTO_TIME_LIMIT_S = 1.0


def assign(
    requests: Iterable[Request | Mapping[str, Any]] | pd.DataFrame,
    capacities: Instance | Mapping[str, Any],
    *,
    objective: Objective | Mapping[str, Any] | None = None,
    solver: str = "auto",
    time_limit: float | None = None,
    predictors: str | Predictor | None = None,
    window_s: float | None = None,
    catalog: Catalog | None = None,
    seed: int = 0,
) -> Solution:
    """Assign one window of requests to nodes.

    Parameters
    ----------
    requests
        :class:`Request` objects, dicts with the instance format's request fields, or a
        DataFrame with one row per request (an ``images`` column of lists of
        ``{"width", "height", "bytes"}``, or ``image_width``/``image_height``/``image_bytes`` for
        single-image requests).
    capacities
        The servers and network: an :class:`Instance` (its requests are ignored) or a mapping
        with ``nodes``, ``network`` and optionally ``window_s``, ``objective`` and ``catalog``.
    objective
        Overrides the objective of ``capacities``.
    solver
        A registered solver name, or ``"auto"``: exact within ``time_limit`` (default 1 s),
        warm-started from greedy, so a feasible decision comes back whenever greedy finds one;
        when exact has no assignment (the limit ran out first), the greedy answers on the same
        problem (docs/scaling.md, "Time limits").
    time_limit
        Seconds for the whole call after the request table is read: predictions, problem,
        solver and solution (:func:`qlmio_opt.app.solve.solve`).
    window_s
        Window length; default: that of ``capacities``, else the latest arrival (at least 1 s).

    Returns
    -------
    Solution
        Per-request node, predicted quality and latency, node and link use, binding constraints;
        ``solution.frame()`` shows it as a table.

    Raises
    ------
    InputError
        When the requests or capacities are invalid (the message names the field and request).
    """
    start = time.perf_counter()
    base = _capacities_dict(capacities)
    reqs = _request_dicts(requests)
    data = dict(base)
    data["requests"] = reqs
    data.setdefault("name", "window")
    if objective is not None:
        data["objective"] = _plain(objective)
    latest = max((float(r.get("arrival_s", 0.0)) for r in reqs), default=0.0)
    data["window_s"] = window_s or base.get("window_s") or max(1.0, latest)
    cat = catalog or (capacities.resolved_catalog if isinstance(capacities, Instance) else None)
    instance = Instance.from_dict(data, catalog=cat, source="assign()")
    name = "exact" if solver == "auto" else solver
    limit = (
        time_limit if time_limit is not None else (AUTO_TIME_LIMIT_S if solver == "auto" else None)
    )
    solution = solve(
        instance,
        name,
        predictors=predictors or "analytic",
        time_limit=limit,
        seed=seed,
        fallback="greedy" if solver == "auto" else None,
    )
    elapsed = time.perf_counter() - start
    return solution.model_copy(
        update={"times": solution.times.model_copy(update={"total_s": elapsed})}
    )


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return dict(value)


def _capacities_dict(capacities: Instance | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(capacities, Instance):
        data = capacities.to_dict()
        data.pop("requests", None)
        data.pop("overrides", None)
        return data
    data = {k: (_plain(v) if isinstance(v, BaseModel) else v) for k, v in capacities.items()}
    data.setdefault("format", "qlmio-opt/instance")
    data.setdefault("version", 1)
    if "nodes" in data:
        data["nodes"] = [_plain(n) if isinstance(n, BaseModel) else n for n in data["nodes"]]
    return data


def _request_dicts(requests: Iterable[Request | Mapping[str, Any]] | pd.DataFrame) -> list[dict]:
    if isinstance(requests, pd.DataFrame):
        return [_row_to_request(row) for row in requests.to_dict(orient="records")]
    return [_plain(r) for r in requests]


def _row_to_request(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if not (isinstance(v, float) and pd.isna(v))}
    single = ("image_width", "image_height", "image_bytes")
    if all(k in out for k in single):
        out["images"] = [
            {
                "width": int(out.pop(single[0])),
                "height": int(out.pop(single[1])),
                "bytes": int(out.pop(single[2])),
            }
        ]
    for key in ("prompt_tokens", "max_output_tokens"):
        if key in out and isinstance(out[key], float) and out[key].is_integer():
            out[key] = int(out[key])
    if "images" in out and out["images"] is not None:
        out["images"] = [dict(im) for im in out["images"]]
    return out
