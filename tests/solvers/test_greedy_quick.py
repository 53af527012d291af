"""The greedy's quick construction, used when a time limit cannot hold its priced start.

Every answer is judged by the independent checker (``qlmio_opt.app.check``), which shares no
code with the formulation or the solvers; no test times anything.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from qlmio_opt import Instance, Status
from qlmio_opt.app.check import check
from qlmio_opt.app.solve import to_solution
from qlmio_opt.domain.scenarios import sized_window
from qlmio_opt.domain.scenarios.gap import gap_window
from qlmio_opt.domain.solution import Times
from qlmio_opt.formulations import build_problem
from qlmio_opt.predictors import predict
from qlmio_opt.solvers.base import SolverResult
from qlmio_opt.solvers.greedy import Greedy
from qlmio_opt.solvers.greedy_quick import fits_priced_start, quick_assignment
from qlmio_opt.solvers.tuning import PRICED_START_ALWAYS_PAIRS


def instance_of(data: dict) -> Instance:
    return Instance.from_dict(data)


def problem_of(instance: Instance):
    return build_problem(instance, predict(instance))


def checked_feasible(instance: Instance, problem, assignment: np.ndarray) -> float:
    """The independent checker's objective for ``assignment``, after it accepts it."""
    result = SolverResult(Status.FEASIBLE, assignment)
    solution = to_solution(instance, problem, result, "greedy", Times(), "analytic")
    report = check(instance, solution)
    assert report.feasible, report.violations
    assert report.objective_matches
    return report.objective


def with_objective(data: dict, **objective) -> dict:
    data = copy.deepcopy(data)
    data["objective"] = {**data["objective"], **objective}
    return data


@pytest.mark.parametrize("seed", [0, 1])
def test_a_generated_window_gets_a_checked_assignment(seed: int) -> None:
    """Tight edge memory (a few GB against hundreds of requests), congested clouds."""
    instance = instance_of(sized_window(800, 12, seed))
    problem = problem_of(instance)
    assignment = quick_assignment(problem)
    assert assignment is not None
    checked_feasible(instance, problem, assignment)
    placed = assignment[assignment >= 0]
    assert placed.size > 0 and np.unique(placed).size > 1  # spread, not one node


def test_without_deferral_every_request_is_placed_within_the_capacities() -> None:
    data = with_objective(sized_window(600, 8, 2), deferral_penalty_s=None)
    for request in data["requests"]:  # no request without a node (the window stays feasible)
        request.pop("deadline_s", None)
        request.pop("min_quality", None)
    instance = instance_of(data)
    problem = problem_of(instance)
    assignment = quick_assignment(problem)
    assert assignment is not None
    assert (assignment >= 0).all()
    checked_feasible(instance, problem, assignment)


def test_the_quality_floor_is_met_by_deferring_what_pulls_it_down() -> None:
    data = with_objective(sized_window(600, 8, 3), mode="quality_floor", quality_tolerance=0.0)
    instance = instance_of(data)
    problem = problem_of(instance)
    assignment = quick_assignment(problem)
    assert assignment is not None
    checked_feasible(instance, problem, assignment)


def test_a_tight_gap_window_gets_a_checked_answer_or_none_and_a_loose_one_an_answer() -> None:
    """Generalized-assignment style (deferral off, every node may take every request)."""
    for tightness, must_answer in ((0.8, False), (2.0, True)):
        instance = instance_of(gap_window(200, 6, 4, tightness=tightness))
        problem = problem_of(instance)
        assignment = quick_assignment(problem)
        if must_answer:
            assert assignment is not None
        if assignment is not None:
            checked_feasible(instance, problem, assignment)


def test_the_greedy_takes_the_quick_way_only_when_its_priced_start_does_not_fit() -> None:
    instance = instance_of(sized_window(1000, 12, 5))  # 12,000 pairs
    problem = problem_of(instance)
    pairs = problem.num_requests * problem.num_nodes
    assert pairs > PRICED_START_ALWAYS_PAIRS
    assert not fits_priced_start(problem, 1e-3)
    assert fits_priced_start(problem, None) and fits_priced_start(problem, 60.0)

    quick = Greedy().solve(problem, time_limit=1e-3, seed=1)
    again = Greedy().solve(problem, time_limit=1e-3, seed=1)
    assert quick.status is Status.FEASIBLE and quick.stats["quick_start"] == 1.0
    assert quick.bound is None and "quick construction" in (quick.message or "")
    np.testing.assert_array_equal(quick.assignment, again.assignment)  # deterministic
    checked_feasible(instance, problem, quick.assignment)

    priced = Greedy().solve(problem, seed=1)
    assert "quick_start" not in priced.stats and priced.bound is not None


def test_a_small_window_keeps_the_priced_start_at_any_limit() -> None:
    problem = problem_of(instance_of(sized_window(100, 6, 0)))
    assert fits_priced_start(problem, 0.0)
    result = Greedy().solve(problem, time_limit=0.0)
    assert "quick_start" not in result.stats and result.bound is not None
