"""Sufficient conditions for an infeasible window (solvers/diagnose.py) that name the constraint."""

from qlmio_opt import Instance
from qlmio_opt.domain.scenarios.gap import gap_window
from qlmio_opt.formulations import build_problem
from qlmio_opt.predictors import predict
from qlmio_opt.solvers.diagnose import infeasibility_reason


def problem_of(data):
    instance = Instance.from_dict(data)
    return build_problem(instance, predict(instance))


def test_requests_that_need_more_than_their_bounded_nodes_hold_together():
    """Each request fits on some node alone, but even each on the node where it needs least,
    the six need more than the two nodes hold together."""
    data = gap_window(6, 2, seed=0, family="C", tightness=0.6)
    problem = problem_of(data)
    least = problem.memory_gb.min(axis=1).sum()
    assert (problem.memory_gb.min(axis=1) <= problem.node_memory_gb.max()).all()
    assert least > problem.node_memory_gb.sum()
    reason = infeasibility_reason(problem)
    assert reason == (
        'memory on nodes "n0", "n1": requests "r0", "r1", "r2", "r3", "r4", "r5" may run only '
        f"there and, each on the node where it needs least, need {least:.2f} GB of KV cache "
        f"against {problem.node_memory_gb.sum():.2f} GB free on those nodes together"
    )


def test_a_node_without_a_memory_bound_leaves_no_pooled_reason():
    data = gap_window(6, 2, seed=0, family="C", tightness=0.6)
    data["nodes"][1]["memory_gb"] = None  # every request may go there: nothing is pooled
    assert infeasibility_reason(problem_of(data)) is None
    data["objective"]["deferral_penalty_s"] = 5.0  # with deferral nothing is infeasible
    data["nodes"][1]["memory_gb"] = 1.0
    assert infeasibility_reason(problem_of(data)) is None


def test_a_window_that_fits_has_no_reason():
    assert infeasibility_reason(problem_of(gap_window(6, 2, seed=7, family="C"))) is None
