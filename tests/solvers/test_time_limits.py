"""Time limits as promises (docs/scaling.md, "Time limits"): what a solve stopped by its limit
answers, never how long it took (timings are ``benchmarks/time_limits.py``'s).

A limit of 0 is spent before any solver runs (predicting takes some time), so it checks the
"no time left" path exactly; HiGHS is made to miss its deadline by a deadline already passed.
"""

import time
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import INSTANCES, SMALL
from test_exact import problem_of

from qlmio_opt import Status, assign, read_instance, solve
from qlmio_opt.faces.cli import EXIT_TIME_LIMIT, main
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.formulations.milp_arrays import build_milp
from qlmio_opt.solvers import SOLVERS, get_solver
from qlmio_opt.solvers import exact as exact_module
from qlmio_opt.solvers.exact import ExactHighs
from qlmio_opt.solvers.greedy import Greedy
from qlmio_opt.solvers.highs_direct import settle_stragglers, solve_highs

WINDOW = INSTANCES / "window_014.json"
# exact needs tens of seconds on it (instances/bks.csv), so HiGHS is surely still running at a
# deadline set when it starts
LONG = INSTANCES / "window_078.json"
RULES = [
    "all-cloud",
    "all-edge",
    "latency-greedy",
    "random",
    "round-robin",
    "quality-greedy",
    "threshold",
    "per-request",
]


@pytest.mark.parametrize("name", list(SOLVERS))
def test_a_spent_limit_answers_time_limit_without_an_assignment(name):
    solution = solve(read_instance(WINDOW), name, time_limit=0.0)
    assert solution.status is Status.TIME_LIMIT
    assert not solution.assignment and not solution.requests
    assert "no solver ran" in solution.message


def test_the_cli_exits_4_when_the_limit_leaves_no_solution(capsys):
    assert main(["solve", str(WINDOW), "--time-limit", "0", "--format", "json"]) == EXIT_TIME_LIMIT
    assert '"status": "time_limit"' in capsys.readouterr().out


def test_a_time_limit_answer_that_defers_every_request_exits_0():
    from qlmio_opt.domain.solution import Solution
    from qlmio_opt.faces.cli.solving import exit_code_for

    answered = solve(read_instance(WINDOW), "greedy").to_dict()
    ids = [d["request"] for d in answered["requests"]]
    deferring = {
        **answered,
        "status": "time_limit",
        "assignment": {},
        "deferred": ids,
        "requests": [{"request": r, "node": None, "quality": None, "latency_s": None} for r in ids],
    }
    assert exit_code_for([Solution.model_validate(deferring)]) == 0
    nothing = solve(read_instance(WINDOW), "greedy", time_limit=0.0)
    assert exit_code_for([nothing]) == EXIT_TIME_LIMIT


def test_a_fallback_answers_when_the_solver_has_nothing():
    solution = solve(read_instance(WINDOW), "exact", time_limit=0.0, fallback="greedy")
    assert solution.solver == "greedy"
    assert solution.status.has_assignment and solution.assignment
    assert not solution.violations


def test_auto_always_answers_falling_back_to_the_greedy():
    instance = read_instance(SMALL / "memory.json")
    capacities = instance.to_dict()
    requests = capacities.pop("requests")
    solution = assign(requests, capacities, time_limit=0.0)
    assert solution.solver == "greedy"
    assert solution.status.has_assignment
    assert set(solution.assignment) | set(solution.deferred) == {r["id"] for r in requests}


def test_a_fallback_does_not_hide_a_proof_of_infeasibility():
    solution = solve(read_instance(SMALL / "memory.json"), "exact", fallback="greedy")
    assert solution.solver == "exact"  # solved: the fallback is not asked


@pytest.mark.parametrize("name", RULES)
def test_a_rule_stopped_by_its_limit_returns_no_assignment(name):
    result = get_solver(name).solve(problem_of(read_instance(WINDOW)), time_limit=0.0)
    assert result.status is Status.TIME_LIMIT
    assert result.assignment is None
    assert result.message.startswith("time limit")


@pytest.mark.parametrize("name", RULES)
def test_a_rule_without_limit_still_answers(name):
    result = get_solver(name).solve(problem_of(read_instance(WINDOW)), time_limit=None)
    assert result.status is not Status.TIME_LIMIT


def _highs_past_its_deadline(monkeypatch):
    """Make exact's HiGHS run miss its deadline: the deadline is the moment it starts."""

    def late(milp, **kwargs):
        return solve_highs(milp, **{**kwargs, "deadline": time.perf_counter()})

    monkeypatch.setattr(exact_module, "solve_highs", late)


def test_exact_returns_at_its_deadline_with_the_warm_start(monkeypatch):
    _highs_past_its_deadline(monkeypatch)
    problem = problem_of(read_instance(LONG))
    result = ExactHighs().solve(problem, time_limit=60.0)
    try:
        greedy = Greedy().solve(problem)
        assert result.status is Status.TIME_LIMIT
        assert result.stats["highs_finished"] == 0.0
        assert "left at the time limit" in result.message
        assert not evaluate(problem, result.assignment).violations
        # HiGHS had no better solution yet: the warm start, with the greedy's bound
        assert result.assignment.tolist() == greedy.assignment.tolist()
        assert result.bound == pytest.approx(min(greedy.bound, result.reported_objective))
    finally:
        assert settle_stragglers(None)  # told to stop: it ends at its next check


def test_highs_left_at_its_deadline_reports_what_its_callbacks_saw():
    milp = build_milp(problem_of(read_instance(LONG)))
    outcome = solve_highs(milp, time_limit=60.0, deadline=time.perf_counter())
    try:
        assert not outcome.finished
        assert outcome.status == "time_limit"
        if outcome.values is not None:
            assert outcome.objective == pytest.approx(float(milp.col_cost @ outcome.values))
    finally:
        assert settle_stragglers(None)


def test_a_run_still_stopping_keeps_the_next_from_starting():
    milp = build_milp(problem_of(read_instance(LONG)))
    first = solve_highs(milp, time_limit=60.0, deadline=time.perf_counter())
    try:
        second = solve_highs(milp, time_limit=60.0, deadline=time.perf_counter())
        assert not first.finished and not second.finished
        assert second.run_s == 0.0 and second.values is None
    finally:
        assert settle_stragglers(None)


def test_exact_pyomo_refuses_a_build_that_cannot_fit():
    pytest.importorskip("pyomo.contrib.solver")
    result = get_solver("exact-pyomo").solve(problem_of(read_instance(WINDOW)), time_limit=0.0)
    assert result.status is Status.TIME_LIMIT
    assert result.assignment is None
    assert "Pyomo model" in result.message


def test_exact_pyomo_at_its_limit_without_a_solution_is_a_time_limit():
    pytest.importorskip("pyomo.contrib.solver")
    from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition

    from qlmio_opt.solvers.exact_pyomo import _result

    results = SimpleNamespace(
        termination_condition=TerminationCondition.maxTimeLimit,
        solution_status=SolutionStatus.noSolution,
        objective_bound=-np.inf,
        incumbent_objective=None,
    )
    problem = problem_of(read_instance(WINDOW))
    answer = _result(results, None, problem, {})
    assert answer.status is Status.TIME_LIMIT  # exit 4, where it was ERROR (exit 3)
    assert answer.assignment is None
