"""The greedy's large-neighbourhood search (:mod:`qlmio_opt.solvers.greedy_lns`): each sub-problem
is solved exactly with every constraint of the window, a tight window where it reaches the
optimum the other searches miss, the same answer for the same seed, and a budget that bounds it.

Its gap on the committed, generated and GAP-style windows is measured by
``benchmarks/greedy_held_out.py``, not here.
"""

import itertools
import subprocess
import sys

import numpy as np
import pytest
from enumeration import optimum_by_enumeration
from test_greedy import checked, random_window

from qlmio_opt import Instance, Status, solve
from qlmio_opt.app.check import check
from qlmio_opt.domain.scenarios.gap import gap_window
from qlmio_opt.formulations import build_problem
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.predictors import predict
from qlmio_opt.solvers.exact import ExactHighs
from qlmio_opt.solvers.greedy import Effort, Greedy
from qlmio_opt.solvers.greedy_lns import (
    Subproblems,
    neighbourhood,
    neighbourhood_search,
    solved_whole,
)
from qlmio_opt.solvers.greedy_state import State, build_window
from qlmio_opt.solvers.local_search import Budget

WITHOUT = Effort(lns_scale=0.0)  # the greedy before the large-neighbourhood search


def ten_by_three():
    """GAP family D, 10 requests on 3 nodes (seed 1140; no benchmark uses seeds above 49)."""
    instance = Instance.from_dict(gap_window(10, 3, 1140, "D"))
    return instance, build_problem(instance, predict(instance))


def test_the_greedy_reaches_the_optimum_it_missed_and_the_checker_agrees():
    instance, problem = ten_by_three()
    exact = ExactHighs(warm_start=False).solve(problem)
    assert exact.status is Status.OPTIMAL
    optimum = evaluate(problem, exact.assignment).objective
    assert optimum == pytest.approx(708.0)
    assert checked(problem, Greedy(WITHOUT).solve(problem)) == pytest.approx(733.0)
    assert checked(problem, Greedy().solve(problem)) == pytest.approx(optimum)
    solution = solve(instance, "greedy")
    report = check(instance, solution)
    assert report.feasible, report.summary()
    assert report.objective_matches, report.summary()
    assert solution.objective == pytest.approx(optimum)


def _placements(state, freed):
    """Brute force: the least value of ``state`` over every placement of the ``freed``
    requests on the columns each may use, every other request kept, among the feasible ones."""
    w = state.w
    options = [np.flatnonzero(w.finite[r]).tolist() for r in freed.tolist()]
    best = np.inf
    for columns in itertools.product(*options):
        trial = state.copy()
        for r, col in zip(freed.tolist(), columns, strict=True):
            trial.shift(r, col)
        if trial.feasible():
            best = min(best, trial.value)
    return best


@pytest.mark.parametrize(
    ("seed", "deferral", "floor"),
    [(s, d, f) for s in range(4) for d in (False, True) for f in (False, True)],
)
def test_a_sub_problem_is_solved_exactly_with_every_constraint(seed, deferral, floor):
    """Random windows with memory, bandwidth, the quality floor, deferral and congestion: the
    sub-problem's answer is the brute-force best placement of the freed requests (or none
    when the state already is it), and it keeps every capacity."""
    problem, result = _feasible_random(seed, deferral, floor)
    window = build_window(problem)
    state = State(window, np.where(result.assignment < 0, window.defer, result.assignment))
    subproblems = Subproblems(problem)
    rng = np.random.default_rng(seed)
    size = problem.num_requests
    for freed in (np.arange(size), np.sort(rng.choice(size, size=3, replace=False))):
        outcome = subproblems.solve(state, freed, Budget(1e9), seed)
        best = _placements(state, freed)
        if outcome.columns is None:
            assert best >= state.value - 1e-9
            continue
        trial = state.copy()
        for r, col in zip(freed.tolist(), outcome.columns.tolist(), strict=True):
            trial.shift(r, col)
        assert trial.feasible()
        assert trial.value == pytest.approx(best, abs=1e-7)
        assert trial.value < state.value


def _feasible_random(seed, deferral, floor):
    """The first random window of 7 requests (4 without deferral: most larger ones have no
    feasible assignment) of seeds ``seed``, ``seed + 1000``, ... that the greedy without its
    last two searches answers, and that answer."""
    for k in range(50):
        instance = random_window(seed + 1000 * k, 7 if deferral else 4, deferral, floor)
        problem = build_problem(instance, predict(instance))
        result = Greedy(Effort(perturb_scale=0.0, lns_scale=0.0)).solve(problem)
        if result.assignment is not None:
            return problem, result
    raise AssertionError("no feasible random window")


def test_on_a_tiny_window_freeing_everything_finds_the_brute_force_optimum():
    instance = random_window(11, 6, True, True)
    problem = build_problem(instance, predict(instance))
    window = build_window(problem)
    result = Greedy(Effort(perturb_scale=0.0, lns_scale=0.0)).solve(problem)
    state = State(window, np.where(result.assignment < 0, window.defer, result.assignment))
    outcome = Subproblems(problem).solve(state, np.arange(6), Budget(1e9), 0)
    if outcome.columns is not None:
        for r, col in enumerate(outcome.columns.tolist()):
            state.shift(r, col)
    assert state.value == pytest.approx(optimum_by_enumeration(problem), abs=1e-7)


def _start(problem):
    window = build_window(problem)
    result = Greedy(WITHOUT).solve(problem)
    return State(window, np.where(result.assignment < 0, window.defer, result.assignment))


def test_same_seed_same_answer():
    _, problem = ten_by_three()
    start = _start(problem)
    answers = []
    for _ in range(2):
        best = neighbourhood_search(
            start, Subproblems(problem), Budget(50_000), np.random.default_rng(7)
        )
        answers.append(best.columns.tolist())
    assert answers[0] == answers[1]
    assert start.value == pytest.approx(733.0)  # the start is left as it was
    first, second = Greedy().solve(problem), Greedy().solve(problem)
    assert first.assignment.tolist() == second.assignment.tolist()


def test_the_budget_bounds_it():
    _, problem = ten_by_three()
    start = _start(problem)
    subproblems = Subproblems(problem)
    calls = []
    solve_one = subproblems.solve

    def counted(*args):
        calls.append(args[2].left)
        return solve_one(*args)

    subproblems.solve = counted  # type: ignore[method-assign]
    none = Budget(0.0)
    assert neighbourhood_search(start, subproblems, none, np.random.default_rng(0)) is start
    assert calls == []
    one = Budget(1.0)  # any round costs more than one unit: exactly one runs
    neighbourhood_search(start, subproblems, one, np.random.default_rng(0))
    assert len(calls) == 1
    assert one.exhausted
    calls.clear()
    some = Budget(30_000)
    neighbourhood_search(start, subproblems, some, np.random.default_rng(0))
    assert 1 <= len(calls) < 30  # each round is charged at least its overhead
    assert all(left > 0 for left in calls)  # a round starts only while budget is left


def test_a_target_at_the_start_value_stops_it_at_once():
    _, problem = ten_by_three()
    start = _start(problem)
    budget = Budget(50_000)
    rng = np.random.default_rng(0)
    assert neighbourhood_search(start, Subproblems(problem), budget, rng, 733.0) is start
    assert budget.left == 50_000


def test_a_neighbourhood_frees_requests_of_the_window_sorted_and_capped():
    _, problem = ten_by_three()
    state = _start(problem)
    rng = np.random.default_rng(3)
    for _ in range(20):
        freed = neighbourhood(state, rng)
        assert 1 <= len(freed) <= 14
        assert (np.diff(freed) > 0).all()
        assert freed.min() >= 0 and freed.max() < problem.num_requests


def test_importing_the_greedy_loads_neither_highspy_nor_scipy():
    """The search is imported on first use: most windows never get that far."""
    code = (
        "import sys, qlmio_opt.solvers.greedy\n"
        "print(sorted(m for m in ('highspy', 'scipy.sparse') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_small_window_solved_whole_is_proven_optimal_and_stops_the_searches():
    _, problem = ten_by_three()
    start = _start(problem)
    best, proven = solved_whole(start, Subproblems(problem), Budget(50_000), seed=0)
    assert proven
    exact = ExactHighs(warm_start=False).solve(problem)
    assert best.value == pytest.approx(evaluate(problem, exact.assignment).objective)
    assert best.value < start.value  # the start (the greedy without the search) missed it
    # the greedy tries it before its iterated local search, and keeps it
    assert checked(problem, Greedy().solve(problem)) == pytest.approx(best.value)
