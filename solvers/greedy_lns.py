"""Large-neighbourhood search for the greedy: free a few requests, re-solve them exactly.

The kicks of :mod:`qlmio_opt.solvers.greedy_perturb` move a handful of requests at random; on
tight windows (every node nearly full) the optimum is often reached only by reshuffling many
requests across packed capacities at once. :func:`neighbourhood_search` does that reshuffle
exactly: each round frees the requests of a *neighbourhood* (those on a few random columns, or
random ones), keeps every other request where it is, and solves the window's MILP over the
freed requests alone with HiGHS (:class:`Subproblems`); the answer replaces the state when it
is better.

The sub-problem is the formulation's own MILP (:func:`~qlmio_opt.formulations.milp_arrays.
build_milp`) with the columns of the kept requests fixed at their values: their share of every
row (memory, links, the quality floor, the node counts that carry congestion) moves into the
row's bounds, so the sub-problem has every constraint of the window, none re-derived here. The
freed requests may take any column they are allowed (any node, or deferral).

HiGHS runs on one thread, with a node limit, and with no clock unless the solve has a time
limit, warm-started from the state's own values (so a round never makes the state worse): the
same state and seed give the same answer. Each run is charged to the work budget by its size
and by the simplex iterations it made (:data:`~qlmio_opt.solvers.tuning.LNS_WORK`); a round
starts only while budget is left, so the last one may overrun it by its own work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp

from qlmio_opt.formulations.milp_arrays import MilpArrays, build_milp, columns_from_assignment
from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solvers.greedy_state import FloatArray, IntArray, State
from qlmio_opt.solvers.highs_direct import HighsWatch, new_highs, pass_model, run_until
from qlmio_opt.solvers.local_search import Budget
from qlmio_opt.solvers.tuning import (
    IMPROVES,
    LNS_COLUMN_SHARE,
    LNS_COLUMNS_FREED,
    LNS_FREE_REQUESTS,
    LNS_MAX_ITERATIONS,
    LNS_MAX_NODES,
    LNS_WORK,
)

# The sub-problem is solved to optimality within its node limit: a relative gap of 1e-6 leaves
# nothing a greedy move could still gain (not tuning).
_SUB_GAP = 1e-6
_INTEGRAL = 0.5  # a binary column above this is taken as 1
# HiGHS's primal heuristics look for solutions the warm start and the node limit leave little
# room for, at a cost out of proportion to a sub-problem: the feasibility jump took 4-8 ms of a
# 6-10 ms run on a 10-request sub-problem of a 50 x 5 GAP window (37 binaries, 15 rows), and on
# a 20-request one of a 20 x 4 window the sub-MIPs (RINS, RENS) took 0.37 of 0.6 s, six levels
# deep (one-off probes, branch of issue 20).
_OPTIONS: dict[str, bool | int | float | str] = {
    "mip_heuristic_run_feasibility_jump": False,
    "mip_heuristic_run_rins": False,
    "mip_heuristic_run_rens": False,
    "mip_heuristic_run_root_reduced_cost": False,
    "mip_max_nodes": LNS_MAX_NODES,
}


@dataclass(frozen=True)
class Outcome:
    """One sub-problem's run: the freed requests' new columns (None: no better answer found),
    the simplex iterations HiGHS made, and whether HiGHS proved its answer (or the start, when
    no better one) optimal for the sub-problem."""

    columns: IntArray | None
    iterations: int
    proven: bool = False


class Subproblems:
    """The window's MILP, ready to be restricted to any set of freed requests.

    Parameters
    ----------
    problem
        The window (its MILP is built once, here).
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.milp = milp = build_milp(problem)
        shape = (milp.num_rows, milp.num_cols)
        self.matrix = sp.csr_matrix((milp.value, milp.col_index, milp.row_start), shape=shape)
        self.by_column = self.matrix.tocsc()
        self._pair_order = np.argsort(milp.pair_request, kind="stable")
        self._pair_starts = np.searchsorted(
            milp.pair_request[self._pair_order], np.arange(problem.num_requests + 1)
        )
        nodes = np.concatenate([milp.count_cols, milp.theta_cols])
        self.node_cols = nodes[nodes >= 0]

    def request_cols(self, r: int) -> IntArray:
        """Request ``r``'s ``x`` columns and its ``d`` column (if deferral is on): found when
        asked, as a round frees a few requests (a list of them all took 0.07 s at 120,000
        pairs, more than a tight time limit leaves)."""
        pairs = self._pair_order[self._pair_starts[r] : self._pair_starts[r + 1]]
        defer_offset = self.milp.defer_offset
        return pairs if defer_offset is None else np.append(pairs, defer_offset + r)

    def solve(self, state: State, freed: IntArray, budget: Budget, seed: int) -> Outcome:
        """The best columns of the ``freed`` requests with every other request kept where it
        is in ``state`` (HiGHS within :data:`~qlmio_opt.solvers.tuning.LNS_MAX_NODES` nodes,
        charged to ``budget``); ``columns`` None unless strictly better than ``state``
        (which must be feasible)."""
        milp, defer = self.milp, state.w.defer
        assignment = np.where(state.columns == defer, -1, state.columns)
        values = columns_from_assignment(milp, self.problem, assignment)
        free = np.concatenate([*(self.request_cols(r) for r in freed.tolist()), self.node_cols])
        sub, start = self._restricted(values, free)
        overhead, per_nonzero, per_iteration = LNS_WORK
        budget.spend(overhead + per_nonzero * sub.num_nonzeros)
        cap = int(min(LNS_MAX_ITERATIONS, max(budget.left, 0.0) / per_iteration))
        found, iterations, proven = _run_highs(sub, start, seed, cap, budget.deadline)
        budget.spend(per_iteration * iterations)
        if found is None or not sub.col_cost @ found < sub.col_cost @ start - IMPROVES:
            return Outcome(None, iterations, proven and found is not None)
        values[free] = found
        return Outcome(self._columns(values, freed, defer), iterations, proven)

    def _restricted(self, values: FloatArray, free: IntArray) -> tuple[MilpArrays, FloatArray]:
        """The MILP over the ``free`` columns, the others fixed at ``values``: the rows that
        touch a free column, their bounds less the fixed columns' share; and the free columns'
        present values (a feasible start)."""
        milp = self.milp
        fixed = values.copy()
        fixed[free] = 0.0
        share = self.matrix @ fixed
        block = self.by_column[:, free].tocsr()
        rows = np.flatnonzero(np.diff(block.indptr))
        block = block[rows]
        sub = MilpArrays(
            pair_request=np.zeros(0, dtype=np.int64),
            pair_node=np.zeros(0, dtype=np.int64),
            defer_offset=None,
            count_cols=np.zeros(0, dtype=np.int64),
            theta_cols=np.zeros(0, dtype=np.int64),
            col_cost=milp.col_cost[free],
            col_lower=milp.col_lower[free],
            col_upper=milp.col_upper[free],
            integrality=milp.integrality[free],
            row_start=block.indptr.astype(np.int32),
            col_index=block.indices.astype(np.int32),
            value=block.data.astype(float),
            row_lower=milp.row_lower[rows] - share[rows],
            row_upper=milp.row_upper[rows] - share[rows],
            row_kind=tuple(milp.row_kind[i] for i in rows.tolist()),
            row_index=milp.row_index[rows],
        )
        return sub, values[free]

    def _columns(self, values: FloatArray, freed: IntArray, defer: int) -> IntArray:
        """The window column (node, or ``defer``) each freed request takes in ``values``."""
        milp = self.milp
        columns = np.full(len(freed), defer, dtype=np.int64)
        for i, r in enumerate(freed.tolist()):
            pairs = self._pair_order[self._pair_starts[r] : self._pair_starts[r + 1]]
            on = pairs[values[pairs] > _INTEGRAL]
            if len(on):
                columns[i] = milp.pair_node[on[0]]
        return columns


def _run_highs(
    sub: MilpArrays, start: FloatArray, seed: int, iterations: int, deadline: float | None
) -> tuple[FloatArray | None, int, bool]:
    """HiGHS on ``sub`` from the feasible ``start``: its best columns (None if it has none),
    the simplex iterations it made and whether it proved them optimal.

    One thread, and a stop after ``iterations`` simplex iterations (checked by HiGHS's MIP
    interrupt callback, at the same points of the same run every time), so the answer depends
    only on the sub-problem and ``seed``; a clock only when ``deadline`` is set (the answer may
    then depend on the machine).
    """
    if deadline is not None and not np.isfinite(deadline):
        deadline = None  # an infinite limit (``--time-limit inf``): no clock at all
    left = None if deadline is None else deadline - time.perf_counter()
    if left is not None and left <= 0:
        return None, 0, False
    h = new_highs(time_limit=left, mip_rel_gap=_SUB_GAP, threads=1, seed=seed, options=_OPTIONS)
    pass_model(h, sub)
    _set_start(h, start)
    watch = HighsWatch(h)

    def cap(event: Any) -> None:
        if event.data_out.simplex_iteration_count > iterations:
            event.interrupt()

    h.cbMipInterrupt.subscribe(cap)
    finished, _ = run_until(h.run, watch, deadline)
    if not finished:
        return None, 0, False
    info = h.getInfo()
    made = int(info.simplex_iteration_count)
    if info.primal_solution_status != 2:  # kSolutionStatusFeasible
        return None, made, False
    proven = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    return np.array(h.getSolution().col_value), made, proven


def _set_start(h: Any, start: FloatArray) -> None:
    """Hand HiGHS ``h`` the feasible column values ``start`` as its MIP start."""
    solution = highspy.HighsSolution()
    solution.col_value = np.asarray(start, dtype=float)
    solution.value_valid = True
    h.setSolution(solution)


def neighbourhood_search(
    state: State,
    subproblems: Subproblems,
    budget: Budget,
    rng: np.random.Generator,
    target: float = -np.inf,
) -> State:
    """Rounds of free, re-solve and keep-if-better until ``budget`` ends or the state is at or
    below ``target``.

    Parameters
    ----------
    state
        A feasible state (left as it is).
    subproblems
        The window's MILP (:class:`Subproblems`).
    budget
        Work for all rounds.
    rng
        Draws the neighbourhoods (and seeds HiGHS).
    target
        A value below which no round need look further (the lower bound plus a stopping gap).

    Returns
    -------
    State
        The best state found (``state`` itself if no round improved on it).
    """
    best = state
    while not budget.exhausted and best.value > target:
        freed = neighbourhood(best, rng)
        outcome = subproblems.solve(best, freed, budget, int(rng.integers(2**31 - 1)))
        best = _kept_if_better(best, freed, outcome.columns)
        if outcome.proven and len(freed) == len(best.columns):
            break  # the whole window, solved to optimality: no round can find better
    return best


def solved_whole(
    state: State, subproblems: Subproblems, budget: Budget, seed: int
) -> tuple[State, bool]:
    """The window's MILP over every request at once, from ``state`` (a window of at most
    :data:`~qlmio_opt.solvers.tuning.LNS_FREE_REQUESTS` requests, where one round of
    :func:`neighbourhood_search` frees them all): the better of ``state`` and HiGHS's answer,
    and whether HiGHS proved it optimal (then no search can improve on it)."""
    freed = np.arange(len(state.columns))
    outcome = subproblems.solve(state, freed, budget, seed)
    return _kept_if_better(state, freed, outcome.columns), outcome.proven


def _kept_if_better(state: State, freed: IntArray, columns: IntArray | None) -> State:
    """``state`` with the ``freed`` requests moved to ``columns`` if that is feasible and
    better; else ``state`` itself."""
    if columns is None:
        return state
    trial = state.copy()
    for r, col in zip(freed.tolist(), columns.tolist(), strict=True):
        trial.shift(r, col)
    if trial.feasible() and trial.value < state.value - IMPROVES:
        return trial
    return state


def neighbourhood(state: State, rng: np.random.Generator) -> IntArray:
    """The requests a round frees, sorted: with probability
    :data:`~qlmio_opt.solvers.tuning.LNS_COLUMN_SHARE`, those on
    :data:`~qlmio_opt.solvers.tuning.LNS_COLUMNS_FREED` random columns that hold any (deferral
    counts as one), else random ones; at most
    :data:`~qlmio_opt.solvers.tuning.LNS_FREE_REQUESTS` either way (a random share of them).
    A window of at most that many requests is freed whole."""
    columns = state.columns
    num = len(columns)
    if num <= LNS_FREE_REQUESTS:
        return np.arange(num)  # the whole window fits in one sub-problem
    if rng.random() < LNS_COLUMN_SHARE:
        used = np.unique(columns)
        chosen = rng.choice(used, size=min(LNS_COLUMNS_FREED, len(used)), replace=False)
        pool = np.flatnonzero(np.isin(columns, chosen))
    else:
        pool = np.arange(num)
    if len(pool) > LNS_FREE_REQUESTS:
        pool = rng.choice(pool, size=LNS_FREE_REQUESTS, replace=False)
    return np.sort(pool)
