"""The greedy's ejection chains (:func:`~qlmio_opt.solvers.local_search.eject_pass`): one request
ejected so that two deferred ones fit, on a window small enough to check by hand."""

import numpy as np
import pytest
from conftest import INSTANCES
from enumeration import optimum_by_enumeration
from test_greedy import problem_of, random_window

from qlmio_opt import read_instance
from qlmio_opt.formulations import build_problem
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.predictors import predict
from qlmio_opt.solvers.greedy import Effort, Greedy
from qlmio_opt.solvers.greedy_state import State, build_window
from qlmio_opt.solvers.local_search import Budget, eject_pass, pair_pass, shift_pass


def three_requests():
    """The window of hypothesis seed 32122 (3 requests, deferral at 2.0, a quality floor).

    Node 0 holds 1.15 GB: r0 (0.55 GB, cost 0.81) and r1 (0.59 GB, 1.25) fit together, r2
    (0.71 GB, 0.26) with neither; node 1's link is too narrow for any of them. With r2 alone
    on node 0 and the others deferred (2.0 each) the cost is 4.26; ejecting r2 (+1.74) makes
    room for r0 (-1.19) and r1 (-0.75): 4.06, the optimum.
    """
    problem = problem_of(random_window(32122, 3, True, True))
    window = build_window(problem)
    return problem, window


def test_one_ejection_makes_room_for_two_deferred_requests():
    problem, window = three_requests()
    defer = window.defer
    state = State(window, np.array([defer, defer, 0]))
    assert state.feasible()
    assert state.value == pytest.approx(4.26)
    # neither a shift nor a pair of moves (the ejection alone loses 0.55) gains here
    assert shift_pass(state, Budget(1e6)) == 0
    assert pair_pass(state, Budget(1e6)) == 0
    assert eject_pass(state, Budget(1e6)) == 1
    assert state.columns.tolist() == [0, 0, defer]
    assert state.feasible()
    assert state.value == pytest.approx(4.06)
    assert state.value == pytest.approx(optimum_by_enumeration(problem))
    assert state.value == pytest.approx(state.objective())


def test_no_chain_is_kept_when_none_gains():
    _, window = three_requests()
    state = State(window, np.array([0, 0, window.defer]))  # the optimum
    assert eject_pass(state, Budget(1e6)) == 0
    assert state.columns.tolist() == [0, 0, window.defer]


def test_an_infeasible_state_is_left_alone():
    _, window = three_requests()
    state = State(window, np.array([0, 0, 0]))  # 1.85 GB on node 0
    assert not state.feasible()
    assert eject_pass(state, Budget(1e6)) == 0
    assert state.columns.tolist() == [0, 0, 0]


@pytest.mark.parametrize("name", ["window_042", "window_099"])
def test_a_chain_only_improves_a_searched_window_and_keeps_it_feasible(name):
    instance = read_instance(INSTANCES / f"{name}.json")
    problem = build_problem(instance, predict(instance))
    unpolished = Greedy(Effort(polish_scale=0.0)).solve(problem).assignment
    window = build_window(problem)
    state = State(window, np.where(unpolished < 0, window.defer, unpolished))
    before = state.value
    eject_pass(state, Budget(1e6))
    assert state.feasible()
    assert state.value <= before + 1e-9
    assert state.value == pytest.approx(state.objective(), rel=1e-12, abs=1e-9)
    ev = evaluate(problem, np.where(state.columns == window.defer, -1, state.columns))
    assert ev.violations == ()
