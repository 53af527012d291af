"""The direct build's arrays: every row recomputed from the problem's own arrays."""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import INSTANCES

from qlmio_opt import read_instance
from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.scenarios import sized_window
from qlmio_opt.formulations import build_problem
from qlmio_opt.formulations.milp_arrays import build_milp, columns_from_assignment
from qlmio_opt.predictors import predict
from qlmio_opt.solvers.highs_direct import new_highs, pass_model, solve_highs

CASES = [f"small/{name}" for name in ("memory", "bandwidth", "floor", "deferral")] + ["window_042"]


def _problem(source: str):
    if source == "sized-60x8":
        instance = Instance.from_dict(sized_window(60, 8))
    else:
        instance = read_instance(INSTANCES / f"{source}.json")
    return build_problem(instance, predict(instance))


def _matrix(milp):
    """The constraint matrix of the row-wise arrays, as scipy reads them."""
    return sp.csr_matrix(
        (milp.value, milp.col_index, milp.row_start), shape=(milp.num_rows, milp.num_cols)
    )


def _random_assignment(problem, rng):
    options = [np.flatnonzero(row) for row in problem.allowed]
    return np.array(
        [rng.choice(o) if o.size and rng.random() > 0.1 else -1 for o in options], dtype=np.int64
    )


@pytest.mark.parametrize("source", [*CASES, "sized-60x8"])
def test_every_row_is_what_the_problem_says(source):
    problem = _problem(source)
    milp = build_milp(problem)
    assert milp.row_start[0] == 0 and milp.row_start[-1] == milp.num_nonzeros
    assert np.all(np.diff(milp.row_start) >= 0)
    for i in range(milp.num_rows):
        cols = milp.col_index[milp.row_start[i] : milp.row_start[i + 1]]
        assert len(set(cols.tolist())) == cols.size, f"row {i} names a column twice"
    rng = np.random.default_rng(1)
    for _ in range(5):
        assignment = _random_assignment(problem, rng)
        if not problem.deferral_allowed:
            assignment = np.where(assignment < 0, problem.allowed.argmax(axis=1), assignment)
        activity = _matrix(milp) @ columns_from_assignment(milp, problem, assignment)
        placed = np.flatnonzero(assignment >= 0)
        nodes = assignment[placed]
        counts = np.bincount(nodes, minlength=problem.num_nodes)
        for row, (kind, index) in enumerate(zip(milp.row_kind, milp.row_index, strict=True)):
            if kind == "assign":
                expected = 1.0
            elif kind == "memory":
                on = placed[nodes == index]
                expected = problem.memory_gb[on, index].sum()
            elif kind == "link":
                crossing = [
                    r for r in placed if index in problem.path_links(r, assignment[r]).tolist()
                ]
                expected = problem.upload_megabits[crossing].sum()
            elif kind == "quality":
                expected = (problem.quality[placed, nodes] - problem.quality_target).sum()
            elif kind == "count":
                expected = 0.0  # m_n - sum_r x[r, n]
            else:
                assert kind == "congestion"
                continue
            assert activity[row] == pytest.approx(expected, abs=1e-9), (kind, index)
        # the count columns carry the node counts, so the congestion pieces bound theta
        for n in np.flatnonzero(milp.count_cols >= 0):
            assert counts[n] <= milp.col_upper[milp.count_cols[n]]


@pytest.mark.parametrize("source", CASES)
def test_binding_rows_only(source):
    """Memory and link rows appear exactly where the eligible demand exceeds the capacity."""
    problem = _problem(source)
    milp = build_milp(problem)
    kinds = np.array(milp.row_kind)
    for n in range(problem.num_nodes):
        demand = problem.memory_gb[problem.allowed[:, n], n].sum()
        binds = np.isfinite(problem.node_memory_gb[n]) and demand > problem.node_memory_gb[n]
        assert binds == bool(np.any((kinds == "memory") & (milp.row_index == n)))
    for k in range(len(problem.link_ids)):
        may = [
            r
            for r in range(problem.num_requests)
            if any(
                k in problem.path_links(r, n).tolist() for n in np.flatnonzero(problem.allowed[r])
            )
        ]
        binds = problem.upload_megabits[may].sum() > problem.link_capacity_megabits[k]
        assert binds == bool(np.any((kinds == "link") & (milp.row_index == k)))


def test_hand_over_keeps_the_model():
    """What HiGHS holds after pass_model is the arrays: same sizes, costs and relaxation bound."""
    problem = _problem("window_042")
    milp = build_milp(problem)
    h = new_highs(time_limit=None, mip_rel_gap=1e-4, threads=0, seed=0)
    pass_model(h, milp)
    lp = h.getLp()
    assert (lp.num_col_, lp.num_row_) == (milp.num_cols, milp.num_rows)
    assert np.allclose(lp.col_cost_, milp.col_cost)
    assert sum(int(t) for t in lp.integrality_) == int(milp.integrality.sum())
    relaxed = solve_highs(milp, relax=True)
    exact = solve_highs(milp)
    assert relaxed.status == exact.status == "optimal"
    assert relaxed.objective <= exact.objective + 1e-9
