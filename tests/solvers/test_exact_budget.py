"""The exact solver's time budget and bounds: one limit for build, warm start, HiGHS and bound.

No test here measures time (the machine is shared and noisy): limits are 0 or HiGHS is made to
stop at once, and what is checked is what comes back. Timings are in
``benchmarks/scaling_parallel.py --part b``.
"""

import csv

import numpy as np
import pytest
from conftest import INSTANCES, SMALL
from hypothesis import given, settings
from hypothesis import strategies as st
from test_exact import brute_force, problem_of, random_instance

from qlmio_opt import Status, read_instance
from qlmio_opt.app.solve import to_solution
from qlmio_opt.domain.solution import Times
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.formulations.milp_arrays import build_milp, columns_from_assignment
from qlmio_opt.solvers import exact as exact_module
from qlmio_opt.solvers.exact import ExactHighs
from qlmio_opt.solvers.greedy import Greedy
from qlmio_opt.solvers.highs_direct import solve_highs

TOL = 1e-7


def _stopping_highs(monkeypatch):
    """Make the MIP solve of ``exact`` stop at once (time limit 0), as on a window too large
    for its limit; the LP-relaxation solve is left alone. Returns the list of calls made."""
    calls = []

    def stopped(milp, **kwargs):
        calls.append("lp" if kwargs.get("relax") else "mip")
        if not kwargs.get("relax"):
            kwargs["time_limit"] = 0.0
        return solve_highs(milp, **kwargs)

    monkeypatch.setattr(exact_module, "solve_highs", stopped)
    return calls


def _best_known_objective(name):
    """The best known objective of committed window ``name`` (``instances/bks.csv``)."""
    with open(INSTANCES / "bks.csv", newline="") as rows:
        return next(
            float(row["objective"]) for row in csv.DictReader(rows) if row["instance"] == name
        )


def _solution_of(instance, result):
    """``result`` of exact as the Solution ``solve()`` makes of it (recomputed figures)."""
    times = Times(predict_s=0.0, build_s=0.0, solve_s=0.0, total_s=0.0)
    return to_solution(instance, problem_of(instance), result, "exact", times, "analytic")


def _gap(objective, bound):
    return abs(objective - bound) / abs(objective)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    num_requests=st.integers(1, 6),
    deferral=st.booleans(),
    floor=st.booleans(),
)
def test_greedy_bound_never_exceeds_the_optimum(seed, num_requests, deferral, floor):
    """The greedy's Lagrangian bound, which exact reports when HiGHS has none, is a lower bound
    of the objective exact minimises (same scale and sign): never above the brute-force optimum,
    nor above exact's proven optimum."""
    problem = problem_of(random_instance(seed, num_requests, deferral, floor))
    best = brute_force(problem)
    greedy = Greedy().solve(problem, seed=seed)
    if best is None or greedy.bound is None:
        return
    assert greedy.bound <= best + TOL * max(1.0, abs(best))
    exact = ExactHighs(mip_rel_gap=1e-9).solve(problem)
    optimum = evaluate(problem, exact.assignment).objective
    assert optimum == pytest.approx(best, abs=1e-7)
    assert greedy.bound <= optimum + TOL * max(1.0, abs(optimum))
    assert exact.bound <= optimum + TOL * max(1.0, abs(optimum))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    num_requests=st.integers(1, 6),
    deferral=st.booleans(),
    floor=st.booleans(),
)
def test_a_zero_limit_returns_the_warm_start_with_a_valid_bound(
    seed, num_requests, deferral, floor
):
    """With no time at all, HiGHS never starts: the incumbent is the greedy's warm start, the
    bound is the greedy's, the gap is finite, and the bound is below the true optimum."""
    problem = problem_of(random_instance(seed, num_requests, deferral, floor))
    best = brute_force(problem)
    greedy = Greedy().solve(problem, seed=seed, time_limit=0.0)
    if best is None or greedy.assignment is None or evaluate(problem, greedy.assignment).violations:
        return
    result = ExactHighs().solve(problem, time_limit=0.0, seed=seed)
    assert result.status in (Status.TIME_LIMIT, Status.OPTIMAL)
    assert result.assignment.tolist() == greedy.assignment.tolist()
    objective = evaluate(problem, result.assignment).objective
    assert result.reported_objective == pytest.approx(objective)
    assert result.bound == pytest.approx(min(greedy.bound, objective))
    assert result.bound <= best + TOL * max(1.0, abs(best))
    assert result.stats["bound_greedy"] == greedy.bound
    assert "highs_run_s" not in result.stats  # HiGHS was not started
    if result.status is Status.OPTIMAL:  # the greedy's bound proves its answer
        assert objective - result.bound <= 1e-4 * abs(objective)


@pytest.mark.parametrize("name", ["window_014", "window_042"])
def test_highs_stopped_at_once_keeps_the_incumbent_and_the_best_bound(monkeypatch, name):
    """HiGHS stops before its root relaxation (no bound of its own): the warm start is the
    incumbent, the LP relaxation runs in the time left, and the bound reported is the larger of
    the LP's and the greedy's, below the optimum, with the gap computed from it."""
    calls = _stopping_highs(monkeypatch)
    instance = read_instance(INSTANCES / f"{name}.json")
    problem = problem_of(instance)
    result = ExactHighs().solve(problem, time_limit=60.0)
    assert calls == ["mip", "lp"]
    greedy = Greedy().solve(problem)
    assert result.status is Status.TIME_LIMIT
    assert result.assignment.tolist() == greedy.assignment.tolist()
    stats = result.stats
    assert "bound_highs" not in stats
    assert stats["bound_greedy"] == greedy.bound
    assert result.bound == max(stats["bound_greedy"], stats["bound_lp"])
    assert "bound from" in result.message
    monkeypatch.undo()
    # the best known objective is at least the optimum, so at least every valid bound
    best_known = _best_known_objective(name)
    assert result.bound <= best_known + TOL * max(1.0, abs(best_known))
    # the solver with no time (solve()'s own limit of 0 would be spent before it runs)
    solution = _solution_of(instance, ExactHighs().solve(problem, time_limit=0.0))
    assert solution.status.has_assignment and solution.gap is not None
    assert np.isfinite(solution.gap)
    assert solution.gap == pytest.approx(_gap(solution.objective, solution.bound))


def test_closed_window_reports_the_larger_bound():
    """When HiGHS closes the window, both bounds are kept in the stats, the larger (capped at
    the incumbent) is reported, and no LP is solved."""
    problem = problem_of(read_instance(INSTANCES / "window_042.json"))
    result = ExactHighs().solve(problem)
    assert result.status is Status.OPTIMAL and result.message is None
    stats = result.stats
    objective = evaluate(problem, result.assignment).objective
    best = max(stats["bound_highs"], stats["bound_greedy"])
    assert result.bound == pytest.approx(min(best, objective))
    assert objective - result.bound <= 1e-4 * abs(objective) + 1e-9
    assert "lp_bound_s" not in stats


@pytest.mark.parametrize(
    ("name", "objective"),
    [("memory", -22.3), ("bandwidth", -22.5), ("floor", 3.6), ("deferral", -9.5)],
)
def test_zero_limit_on_hand_checked_windows(name, objective):
    """Negative and positive objectives alike: with no time, the reported bound is at most the
    hand-checked optimum, at most the incumbent, and the gap is the one the bound gives."""
    instance = read_instance(SMALL / f"{name}.json")
    s = _solution_of(instance, ExactHighs().solve(problem_of(instance), time_limit=0.0))
    assert s.status in (Status.TIME_LIMIT, Status.OPTIMAL)
    assert s.bound is not None and s.bound <= objective + 1e-9
    assert s.bound <= s.objective + 1e-9
    assert s.gap == pytest.approx(_gap(s.objective, s.bound))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    num_requests=st.integers(1, 6),
    deferral=st.booleans(),
    floor=st.booleans(),
)
def test_large_model_options_still_equal_brute_force(seed, num_requests, deferral, floor):
    """The large-model HiGHS options (no presolve, no sub-MIP heuristics) forced onto tiny
    windows: the same optima."""
    problem = problem_of(random_instance(seed, num_requests, deferral, floor))
    result = ExactHighs(mip_rel_gap=1e-9, large_model_columns=0).solve(problem)
    best = brute_force(problem)
    if best is None:
        assert result.status is Status.INFEASIBLE
        return
    assert result.status is Status.OPTIMAL
    assert result.stats["highs_large_model"] == 1.0
    assert evaluate(problem, result.assignment).objective == pytest.approx(best, abs=1e-7)
    assert result.bound <= best + TOL * max(1.0, abs(best))


def test_highs_time_limit_zero_hands_back_the_start():
    """``solve_highs`` with no time returns the MIP start as its incumbent and no bound (the
    case exact then bounds with the greedy's dual or the LP)."""
    problem = problem_of(read_instance(INSTANCES / "window_073.json"))
    milp = build_milp(problem)
    start = Greedy().solve(problem)
    cols = columns_from_assignment(milp, problem, start.assignment)
    large = {**exact_module.LARGE_MODEL_OPTIONS, **exact_module.NO_SUBMIP_OPTIONS}
    for options in (None, large):
        outcome = solve_highs(milp, time_limit=0.0, initial=cols, options=options)
        assert outcome.status == "time_limit"
        assert outcome.bound is None
        assert outcome.objective == pytest.approx(float(milp.col_cost @ cols))


def test_highs_options_by_model_size_and_limit():
    """HiGHS's defaults below the large-model size; above it no presolve, and no sub-MIP
    heuristics once the model has NO_SUBMIP_COLUMNS_PER_S columns per second of limit."""
    solver = ExactHighs()
    small = exact_module.LARGE_MODEL_COLUMNS - 1
    assert solver.highs_options(small, 0.001) == {}
    large = exact_module.LARGE_MODEL_COLUMNS
    per_s = exact_module.NO_SUBMIP_COLUMNS_PER_S
    assert solver.highs_options(large, 10 * large / per_s) == exact_module.LARGE_MODEL_OPTIONS
    assert solver.highs_options(large, 0.5 * large / per_s) == {
        **exact_module.LARGE_MODEL_OPTIONS,
        **exact_module.NO_SUBMIP_OPTIONS,
    }


def test_unknown_highs_option_is_an_error():
    milp = build_milp(problem_of(read_instance(SMALL / "memory.json")))
    with pytest.raises(ValueError, match="no_such_option"):
        solve_highs(milp, options={"no_such_option": 1})
