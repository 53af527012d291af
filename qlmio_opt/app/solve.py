"""instance -> predictions -> problem -> solver -> :class:`Solution`, timed at each step."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.solution import LinkUsage, NodeUsage, RequestDecision, Solution, Status, Times
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.formulations.problem import Problem, build_problem
from qlmio_opt.predictors import Predictor, predict, predictor_spec
from qlmio_opt.solvers import Solver, get_solver
from qlmio_opt.solvers.base import SolverResult


def solve(
    instance: Instance,
    solver: str | Solver = "exact",
    *,
    predictors: str | Predictor = "analytic",
    time_limit: float | None = None,
    seed: int = 0,
) -> Solution:
    """Solve one window and return its :class:`Solution`.

    The objective, utilisation and violations are recomputed from the problem, never taken from
    the solver.
    """
    start = time.perf_counter()
    solver = get_solver(solver)
    predictions = predict(instance, predictors)
    t_predict = time.perf_counter()
    problem = build_problem(instance, predictions)
    t_build = time.perf_counter()
    result = solver.solve(problem, time_limit=time_limit, seed=seed)
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
        solver.name,
        times,
        _predictors_label(predictors, predictions),
        predictor_report=predictions.report,
    )


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
    decisions = []
    mapping: dict[str, str] = {}
    deferred = []
    latency = ev.request_latency_s(problem, assignment)
    for r, n in enumerate(assignment):
        rid = problem.request_ids[r]
        if n < 0:
            deferred.append(rid)
            decisions.append(RequestDecision(request=rid, node=None, quality=None, latency_s=None))
            continue
        mapping[rid] = problem.node_ids[n]
        decisions.append(
            RequestDecision(
                request=rid,
                node=problem.node_ids[n],
                quality=float(problem.quality[r, n]),
                latency_s=float(latency[r]) if np.isfinite(latency[r]) else None,
            )
        )
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
