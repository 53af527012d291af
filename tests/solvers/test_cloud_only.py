"""``cloud-only``: the exact optimiser over the cloud nodes, the load-balanced reference."""

import json

import numpy as np
import pytest
from conftest import INSTANCES, SMALL
from enumeration import optimum_by_enumeration

from qlmio_opt import Instance, Status, read_instance, solve
from qlmio_opt.app.check import check
from qlmio_opt.formulations import build_problem
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.predictors import predict
from qlmio_opt.solvers.cloud_only import CloudOnly, cloud_problem


def cloud_optimum_by_enumeration(problem):
    """Least objective over assignments to cloud nodes (or deferral) without violations."""
    return optimum_by_enumeration(problem, np.flatnonzero(~problem.is_edge))


def two_clouds(num_requests):
    """instances/small/analytic.json with a second, slower cloud node and ``num_requests``
    copies of its requests."""
    data = json.loads((SMALL / "analytic.json").read_text())
    data["nodes"].append(dict(data["nodes"][1], id="cloud-b", device="toy-gpu"))
    data["network"]["links"].append(
        {"id": "wan-b", "from": "core", "to": "cloud-b", "bandwidth_mbps": 1000.0, "rtt_ms": 30.0}
    )
    template = data["requests"]
    data["requests"] = [
        dict(template[i % len(template)], id=f"q{i}", arrival_s=0.1 * i)
        for i in range(num_requests)
    ]
    return Instance.from_dict(data)


@pytest.mark.parametrize("num_requests", [1, 3, 5])
def test_cloud_only_is_the_best_cloud_assignment(num_requests):
    instance = two_clouds(num_requests)
    problem = build_problem(instance, predict(instance))
    result = CloudOnly().solve(problem)
    assert result.status is Status.FEASIBLE and result.bound is None
    assert not problem.is_edge[result.assignment[result.assignment >= 0]].any()
    ev = evaluate(problem, result.assignment)
    assert ev.violations == ()
    assert ev.objective == pytest.approx(cloud_optimum_by_enumeration(problem), rel=1e-6, abs=1e-9)


def test_it_spreads_load_where_all_cloud_piles_it_on_one_node():
    instance = two_clouds(5)
    spread = solve(instance, "cloud-only")
    piled = solve(instance, "all-cloud")
    assert set(spread.assignment.values()) <= {"cloud", "cloud-b"}
    assert spread.objective <= piled.objective + 1e-9
    assert check(instance, spread).accepted


def test_on_a_committed_window_it_uses_only_cloud_nodes_and_passes_the_checker():
    instance = read_instance(INSTANCES / "window_010.json")
    solution = solve(instance, "cloud-only", time_limit=10)
    tiers = {n.id: n.tier for n in instance.nodes}
    assert solution.status.has_assignment
    assert {tiers[node] for node in solution.assignment.values()} == {"cloud"}
    assert check(instance, solution).accepted
    assert solution.objective >= solve(instance, "exact", time_limit=10).objective - 1e-6


def test_the_restricted_problem_only_drops_edge_pairs():
    instance = two_clouds(3)
    problem = build_problem(instance, predict(instance))
    restricted = cloud_problem(problem)
    assert not restricted.allowed[:, problem.is_edge].any()
    np.testing.assert_array_equal(
        restricted.allowed[:, ~problem.is_edge], problem.allowed[:, ~problem.is_edge]
    )
