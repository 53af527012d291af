"""instance -> predictions -> problem -> solver -> :class:`Solution`, timed at each step."""

from __future__ import annotations

import gc
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.solution import LinkUsage, NodeUsage, RequestDecision, Solution, Status, Times
from qlmio_opt.formulations.evaluation import Evaluation, evaluate
from qlmio_opt.formulations.problem import Problem, build_problem
from qlmio_opt.predictors import Predictor, predict, predictor_spec
from qlmio_opt.solvers import Solver, get_solver
from qlmio_opt.solvers.base import SolverResult

# Seconds per request kept from the solver's share of a time limit for turning its answer into
# a Solution (to_solution: evaluation and one decision per request), since the decisions are
# built without re-validating the instance's ids: 0.03-0.04 s on a 10,000 x 12 window at load
# average 1.9 on the shared 2-core development machine, up to 0.12 s at 2-2.5
# (benchmarks/time_limits.py prints it as wrap_s; it was 0.06-0.15 s with validation, and this
# reserve 1.5e-5).
SOLUTION_S_PER_REQUEST = 5e-6


def solve(
    instance: Instance,
    solver: str | Solver = "exact",
    *,
    predictors: str | Predictor = "analytic",
    time_limit: float | None = None,
    seed: int = 0,
    fallback: str | Solver | None = None,
) -> Solution:
    """Solve one window and return its :class:`Solution`.

    The objective, utilisation and violations are recomputed from the problem, never taken from
    the solver. ``time_limit`` covers the whole call: the solver gets what predicting and
    building the problem left of it, less a reserve for building the Solution; when nothing is
    left, no solver runs and the solution has status ``time_limit`` without an assignment
    (docs/scaling.md, "Time limits"). ``fallback`` (e.g. ``"greedy"``) answers on the same
    problem when ``solver`` returns no assignment without proving the window infeasible (a time
    limit, an error), within what is left of the limit, and at least with its first
    construction.

    Python's cyclic garbage collector is paused during the call (it resumes afterwards): reading
    10,000 requests into arrays allocates enough to start a full collection, which walks every
    object of the process (a loaded window holds hundreds of thousands): in a development probe
    it made reading a 10,000-request window's requests 0.12-0.14 s instead of 0.012 s
    (:mod:`qlmio_opt.solvers.runtime`).
    """
    # paused before anything is allocated: a collection the last call's garbage is due starts at
    # the first allocation with the collector on, which would be inside this call's limit
    # (0.1 s on a 1,000 x 12 window after a 10,000 x 12 one, benchmarks/time_limits.py's wrap_s)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _solve(instance, solver, predictors, time_limit, seed, fallback)
    finally:
        if was_enabled:
            gc.enable()


def _solve(
    instance: Instance,
    solver: str | Solver,
    predictors: str | Predictor,
    time_limit: float | None,
    seed: int,
    fallback: str | Solver | None,
) -> Solution:
    """:func:`solve`'s steps."""
    start = time.perf_counter()
    solver = get_solver(solver)
    predictions = predict(instance, predictors)
    t_predict = time.perf_counter()
    problem = build_problem(instance, predictions)
    t_build = time.perf_counter()
    budget = solver_budget(time_limit, t_build - start, problem.num_requests)
    if budget is not None and budget <= 0.0:
        result = SolverResult(
            Status.TIME_LIMIT,
            None,
            message=f"time limit: predicting and building the problem took {t_build - start:.3f} "
            f"s of the {time_limit:g} s; no solver ran",
        )
    else:
        result = solver.solve(problem, time_limit=budget, seed=seed)
    name = solver.name
    if (
        fallback is not None
        and result.assignment is None
        and result.status is not Status.INFEASIBLE
    ):
        spare = solver_budget(time_limit, time.perf_counter() - start, problem.num_requests)
        result, name = _with_fallback(problem, result, name, get_solver(fallback), spare, seed)
    t_solve = time.perf_counter()
    times = Times(
        predict_s=t_predict - start,
        build_s=t_build - t_predict,
        solve_s=t_solve - t_build,
        total_s=t_solve - start,
    )
    return to_solution(
        instance,
        problem,
        result,
        name,
        times,
        _predictors_label(predictors, predictions),
        predictor_report=predictions.report,
    )


def _with_fallback(
    problem: Problem,
    result: SolverResult,
    name: str,
    backup: Solver,
    spare: float | None,
    seed: int,
) -> tuple[SolverResult, str]:
    """``backup``'s answer within ``spare`` seconds (at least its first construction) if it has
    an assignment, else ``result``; with the name of the solver that answered."""
    limit = None if spare is None else max(spare, 0.0)
    answer = backup.solve(problem, time_limit=limit, seed=seed)
    return (answer, backup.name) if answer.assignment is not None else (result, name)


def solver_budget(time_limit: float | None, spent_s: float, num_requests: int) -> float | None:
    """The solver's share of ``time_limit`` once ``spent_s`` seconds are gone: the rest, less
    :data:`SOLUTION_S_PER_REQUEST` per request (None: no limit, the solver's default)."""
    if time_limit is None or not np.isfinite(time_limit):
        return time_limit
    return time_limit - spent_s - SOLUTION_S_PER_REQUEST * num_requests


def _predictors_label(predictors: str | Predictor, predictions) -> str:
    """The predictor spec, with ``+overrides`` when the instance overrides some matrices
    (``overrides`` alone when it gives them all and no predictor ran)."""
    if predictions.source == "overrides":
        return "overrides"
    spec = predictor_spec(predictors)
    return f"{spec}+overrides" if predictions.source.endswith("+overrides") else spec


def to_solution(
    instance: Instance,
    problem: Problem,
    result: SolverResult,
    solver_name: str,
    times: Times,
    predictors: str,
    predictor_report: Mapping[str, float] | None = None,
) -> Solution:
    """Wrap a solver's raw result into the solution object, with recomputed figures; the
    predictor's report (:attr:`Predictions.report`) joins the stats as ``predictor.<name>``."""
    stats = {k: float(v) for k, v in result.stats.items()}
    stats |= {f"predictor.{k}": float(v) for k, v in (predictor_report or {}).items()}
    common: dict[str, Any] = {
        "instance": instance.name,
        "solver": solver_name,
        "predictors": predictors,
        "times": times,
        # a figure such as an infinite time limit has no JSON number: it is left out
        "solver_stats": {k: v for k, v in stats.items() if np.isfinite(v)},
    }
    if result.assignment is None:
        return Solution(status=result.status, message=result.message, bound=result.bound, **common)
    assignment = np.asarray(result.assignment, dtype=np.int64)
    ev = evaluate(problem, assignment)
    status = result.status
    message = result.message
    if ev.violations:
        status = Status.INFEASIBLE
        message = f"the {solver_name} rule breaks {len(ev.violations)} constraint(s)"
    gap = None
    if result.bound is not None and np.isfinite(ev.objective) and ev.objective != 0:
        gap = abs(ev.objective - result.bound) / abs(ev.objective)
    decisions, mapping, deferred = _decisions(problem, assignment, ev)
    nodes = [
        NodeUsage(
            node=node.id,
            tier=node.tier,
            requests=int(ev.node_requests[j]),
            memory_gb=float(ev.node_memory_gb[j]),
            congestion_s=float(ev.node_congestion_s[j]),
            memory_capacity_gb=(
                float(problem.node_memory_gb[j]) if np.isfinite(problem.node_memory_gb[j]) else None
            ),
            max_concurrency=int(problem.node_concurrency[j]),
        )
        for j, node in enumerate(instance.nodes)
    ]
    links = [
        LinkUsage(
            link=link_id,
            requests=int(ev.link_requests[k]),
            megabits=float(ev.link_megabits[k]),
            capacity_megabits=float(problem.link_capacity_megabits[k]),
        )
        for k, link_id in enumerate(problem.link_ids)
    ]

    def finite(value: float | None) -> float | None:
        return value if value is not None and np.isfinite(value) else None

    return Solution(
        status=status,
        message=message,
        objective=finite(ev.objective),
        bound=result.bound,
        bound_source=result.bound_source if result.bound is not None else None,
        gap=gap,
        mean_latency_s=finite(ev.mean_latency_s),
        mean_quality=ev.mean_quality,
        assignment=mapping,
        deferred=tuple(deferred),
        requests=tuple(decisions),
        nodes=tuple(nodes),
        links=tuple(links),
        binding=ev.binding,
        violations=ev.violations,
        **common,
    )


def _decisions(
    problem: Problem, assignment: np.ndarray, ev: Evaluation
) -> tuple[list[RequestDecision], dict[str, str], list[str]]:
    """One decision per request, the placed requests' nodes and the deferred requests' ids.

    The decisions are built without validation (:func:`_decision`): their ids are the validated
    instance's, their figures Python floats or None. Validating 10,000 of them took 0.06-0.15 s
    of a 10,000 x 12 window's time limit.
    """
    latency = ev.request_latency_s(problem, assignment)
    placed = assignment >= 0
    rows = np.flatnonzero(placed)
    quality = np.full(assignment.size, np.nan)
    quality[rows] = problem.quality[rows, assignment[rows]]
    finite_latency = placed & np.isfinite(latency)
    decisions: list[RequestDecision] = []
    mapping: dict[str, str] = {}
    deferred: list[str] = []
    node_ids = problem.node_ids
    for rid, n, q, lat, has_lat in zip(
        problem.request_ids,
        assignment.tolist(),
        quality.tolist(),
        latency.tolist(),
        finite_latency.tolist(),
        strict=True,
    ):
        if n < 0:
            deferred.append(rid)
            node, q, lat = None, None, None
        else:
            node = mapping[rid] = node_ids[n]
            lat = lat if has_lat else None
        decisions.append(_decision(rid, node, q, lat))
    return decisions, mapping, deferred


_DECISION_FIELDS = frozenset(RequestDecision.model_fields)
_new_decision = RequestDecision.__new__
_set = object.__setattr__


def _decision(
    request: str, node: str | None, quality: float | None, latency_s: float | None
) -> RequestDecision:
    """``RequestDecision.model_construct(request=..., node=..., quality=..., latency_s=...)``,
    attribute for attribute as pydantic's does it, in a third of its time (its loop over the
    fields took 0.04 s for 10,000 decisions; tests/app/test_solve_decisions.py checks the two
    agree)."""
    decision = _new_decision(RequestDecision)
    _set(
        decision,
        "__dict__",
        {"request": request, "node": node, "quality": quality, "latency_s": latency_s},
    )
    _set(decision, "__pydantic_fields_set__", set(_DECISION_FIELDS))
    _set(decision, "__pydantic_extra__", None)
    _set(decision, "__pydantic_private__", None)
    return decision
