"""Degenerate but allowed windows: no requests, both objective weights 0, values at the bounds.

Each is solved (or refused with an :class:`InputError`, never a crash) by every registered
solver, and the independent checker agrees with what the solver reports.
"""

import json

import numpy as np
import pytest
from conftest import SMALL

from qlmio_opt import InputError
from qlmio_opt.app.check import check
from qlmio_opt.app.solve import solve
from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.solution import Status
from qlmio_opt.formulations.problem import MAX_MAGNITUDE, build_problem
from qlmio_opt.predictors import predict
from qlmio_opt.solvers import SOLVERS

ALL_SOLVERS = sorted(SOLVERS)


def _data(name: str) -> dict:
    return json.loads((SMALL / name).read_text())


def _empty(data: dict) -> dict:
    data["requests"] = []
    if "overrides" in data:
        data["overrides"] = {name: [] for name in data["overrides"]}
    return data


@pytest.mark.parametrize("solver", ALL_SOLVERS)
@pytest.mark.parametrize("base", ["analytic.json", "floor.json", "deferral.json"])
def test_an_empty_window_is_solved_optimally_by_every_solver(solver, base):
    instance = Instance.from_dict(_empty(_data(base)))
    solution = solve(instance, solver)
    assert solution.status is Status.OPTIMAL, solution.message
    assert solution.assignment == {}
    assert solution.deferred == ()
    assert solution.objective == 0.0
    report = check(instance, solution)
    assert report.feasible, report.violations
    assert report.objective_matches
    assert report.objective == 0.0


def _weights_zero(base: str, **objective) -> Instance:
    data = _data(base)
    data["objective"].update(latency_weight=0.0, quality_weight=0.0, **objective)
    return Instance.from_dict(data)


@pytest.mark.parametrize("solver", ALL_SOLVERS)
def test_both_weights_zero_cost_nothing_and_the_checker_agrees(solver):
    # memory.json binds edge memory, so a solver still has to respect it with every cost 0
    instance = _weights_zero("memory.json")
    solution = solve(instance, solver)
    assert solution.status is not Status.ERROR, solution.message
    report = check(instance, solution)
    assert solution.objective == 0.0
    assert report.objective == 0.0
    assert report.objective_matches
    assert report.feasible == (solution.status in (Status.OPTIMAL, Status.FEASIBLE))


@pytest.mark.parametrize("solver", ["exact", "exact-pyomo"])
def test_exact_proves_the_zero_cost_window_optimal(solver):
    solution = solve(_weights_zero("analytic.json"), solver)
    assert solution.status is Status.OPTIMAL
    assert solution.objective == 0.0


def test_both_weights_zero_with_deferral_cost_nothing_either():
    instance = _weights_zero("deferral.json")
    solution = solve(instance, "exact")
    assert solution.status is Status.OPTIMAL
    assert solution.objective == 0.0
    assert check(instance, solution).feasible


def test_a_zero_latency_weight_keeps_unreachable_pairs_infinite_not_nan():
    data = _data("analytic.json")
    data["objective"]["latency_weight"] = 0.0
    data["nodes"].append(
        {"id": "edge-x", "tier": "edge", "model": "toy-vlm", "device": "toy-gpu", "memory_gb": 1.0}
    )
    data["network"]["sites"].append("cell-x")
    data["network"]["links"].append(
        {"id": "x", "from": "cell-x", "to": "edge-x", "bandwidth_mbps": 10.0, "rtt_ms": 1.0}
    )
    data["requests"].append(dict(data["requests"][0], id="rx", site="cell-x"))
    instance = Instance.from_dict(data)
    problem = build_problem(instance, predict(instance, "analytic"))
    cost = problem.pair_cost(masked=False)
    reachable = np.array([[True, True, False], [True, True, False], [False, False, True]])
    assert not np.isnan(cost).any()
    assert np.isinf(cost[~reachable]).all()
    assert np.array_equal(cost[reachable], -10.0 * problem.quality[reachable])


@pytest.mark.parametrize("solver", ["exact", "greedy", "per-request", "latency-greedy"])
def test_the_smallest_latency_scale_solves_and_checks(solver):
    data = _data("analytic.json")
    data["objective"]["latency_scale_s"] = 1e-6  # the bound: 1e6 objective units per second
    instance = Instance.from_dict(data)
    solution = solve(instance, solver)
    report = check(instance, solution)
    assert solution.status in (Status.OPTIMAL, Status.FEASIBLE)
    assert report.feasible, report.violations
    assert report.objective_matches
    # latency dominates: each request goes to its lowest-latency node
    problem = build_problem(instance, predict(instance, "analytic"))
    fastest = np.argmin(np.where(problem.allowed, problem.latency_s, np.inf), axis=1)
    assert solution.assignment == {
        rid: problem.node_ids[n] for rid, n in zip(problem.request_ids, fastest, strict=True)
    }


@pytest.mark.parametrize("solver", ["exact", "exact-pyomo", "greedy", "per-request"])
def test_the_slowest_links_defer_what_cannot_be_sent(solver):
    data = _data("analytic.json")
    for link in data["network"]["links"]:
        link["bandwidth_mbps"] = 1e-3  # the bound: 2 kb in the 2 s window
    data["objective"]["deferral_penalty_s"] = 7.0
    instance = Instance.from_dict(data)
    solution = solve(instance, solver)
    report = check(instance, solution)
    capacity_mb = 1e-3 * instance.window_s
    too_big = {r.id for r in instance.requests if r.upload_bytes * 8 / 1e6 > capacity_mb}
    assert too_big  # the request with an image
    assert too_big <= set(solution.deferred)
    assert solution.status in (Status.OPTIMAL, Status.FEASIBLE)
    assert report.feasible, report.violations
    assert report.objective_matches


def test_a_cost_beyond_what_the_solvers_resolve_is_refused_naming_the_pair():
    data = _data("analytic.json")
    data["objective"].update(latency_scale_s=1e-6, latency_weight=1e6)
    for link in data["network"]["links"]:
        link["bandwidth_mbps"] = 1e-3  # a 250 kB image takes ~2,000 s: 2e15 objective units
    instance = Instance.from_dict(data)
    with pytest.raises(InputError) as err:
        build_problem(instance, predict(instance, "analytic"))
    text = err.value.render()
    assert 'instance "small_analytic": requests[' in text
    assert "on node" in text
    assert f"is beyond {MAX_MAGNITUDE:g}" in text
    assert "objective.latency_weight" in text
