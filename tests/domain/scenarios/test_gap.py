"""GAP-style windows (qlmio_opt.domain.scenarios.gap): valid instances that are exactly a
generalized assignment problem of the stated family and tightness."""

from __future__ import annotations

import numpy as np
import pytest

from qlmio_opt import Instance
from qlmio_opt.domain.scenarios.gap import gap_window
from qlmio_opt.formulations import build_problem
from qlmio_opt.predictors import predict


def problem_of(data):
    instance = Instance.from_dict(data)
    return build_problem(instance, predict(instance))


@pytest.mark.parametrize("family", ["C", "D"])
def test_a_window_is_the_gap_instance_it_describes(family):
    data = gap_window(12, 3, seed=5, family=family, tightness=0.8)
    assert data == gap_window(12, 3, seed=5, family=family, tightness=0.8)
    assert data != gap_window(12, 3, seed=6, family=family, tightness=0.8)
    problem = problem_of(data)
    weights = np.array(data["overrides"]["memory_gb"])
    costs = np.array(data["overrides"]["latency_s"])
    assert problem.allowed.all()
    assert not problem.deferral_allowed
    np.testing.assert_array_equal(problem.memory_gb, weights)
    # the objective is the latency alone: cost = latency, no congestion on top
    np.testing.assert_array_equal(problem.pair_cost(), costs)
    assert all(curve.values[-1] == 0 for curve in problem.congestion_curves)
    # capacity: 0.8 of the even spread's demand, rounded down
    np.testing.assert_array_equal(problem.node_memory_gb, np.floor(0.8 * weights.sum(axis=0) / 3))
    # no link can bind: every request could cross every link at once
    assert problem.upload_megabits.sum() < problem.link_capacity_megabits.min()
    if family == "C":
        assert weights.min() >= 5 and weights.max() <= 25
        assert costs.min() >= 10 and costs.max() <= 50
    else:  # costs fall as weights grow
        assert weights.min() >= 1 and weights.max() <= 100
        assert np.abs(costs - (111 - weights)).max() <= 10


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown GAP family"):
        gap_window(5, 2, seed=0, family="E")
    with pytest.raises(ValueError, match="at least one request"):
        gap_window(0, 2, seed=0)
