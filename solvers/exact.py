"""The exact solver: the MILP of docs/formulation.md built as arrays and solved by HiGHS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from qlmio_opt.formulations.highs_direct import solve_highs
from qlmio_opt.formulations.milp_arrays import (
    assignment_from_columns,
    build_milp,
    columns_from_assignment,
)
from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solution import Status
from qlmio_opt.solvers.base import Solver, SolverResult
from qlmio_opt.solvers.diagnose import infeasibility_reason

DEFAULT_TIME_LIMIT_S = 60.0
LP_BOUND_S = 30.0

# HiGHS threads of exact solvers built without an explicit ``threads`` (0 = HiGHS's default).
_DEFAULT_THREADS: ContextVar[int] = ContextVar("qlmio_highs_threads", default=0)


@contextmanager
def highs_threads(threads: int) -> Iterator[None]:
    """Within the block, exact solvers built without ``threads`` use this many HiGHS threads.

    Parallel workers (:mod:`qlmio_opt.parallel`) run their tasks inside ``highs_threads(1)`` so
    that N worker processes use N cores, not N times HiGHS's own thread pool.
    """
    token = _DEFAULT_THREADS.set(int(threads))
    try:
        yield
    finally:
        _DEFAULT_THREADS.reset(token)


class ExactHighs(Solver):
    """Direct highspy build, HiGHS branch-and-cut, warm-started from the fast path.

    Parameters
    ----------
    mip_rel_gap
        Stop when the relative gap between incumbent and bound is at most this.
    threads
        HiGHS threads (0 = HiGHS's default). ``None``: 0, or what an enclosing
        :func:`highs_threads` says (1 inside parallel workers).
    warm_start
        Start from the greedy solver's answer when no ``initial`` is given, so a time limit
        always returns at least that.
    """

    name = "exact"
    description = "MILP solved by HiGHS (direct matrix build), warm-started from greedy"

    def __init__(
        self, mip_rel_gap: float = 1e-4, threads: int | None = None, warm_start: bool = True
    ):
        self.mip_rel_gap = mip_rel_gap
        self.threads = _DEFAULT_THREADS.get() if threads is None else threads
        self.warm_start = warm_start

    def solve(
        self,
        problem: Problem,
        *,
        time_limit: float | None = None,
        seed: int = 0,
        initial: np.ndarray | None = None,
    ) -> SolverResult:
        reason = infeasibility_reason(problem)
        if reason is not None:
            return SolverResult(Status.INFEASIBLE, None, message=reason)
        start = time.perf_counter()
        milp = build_milp(problem)
        built = time.perf_counter()
        warm_s = 0.0
        if initial is None and self.warm_start:
            initial, warm_s = self._fast_path(problem, seed)
        init_cols = None if initial is None else columns_from_assignment(milp, problem, initial)
        outcome = solve_highs(
            milp,
            time_limit=DEFAULT_TIME_LIMIT_S if time_limit is None else time_limit,
            mip_rel_gap=self.mip_rel_gap,
            threads=self.threads,
            seed=seed,
            initial=init_cols,
        )
        stats = {
            "build_s": built - start,
            "highs_pass_s": outcome.pass_s,
            "highs_run_s": outcome.run_s,
            "warm_start_s": warm_s,
            "columns": float(milp.num_cols),
            "rows": float(milp.num_rows),
            "nonzeros": float(milp.matrix.nnz),
        }
        if outcome.values is None:
            if outcome.status == "infeasible":
                return SolverResult(
                    Status.INFEASIBLE,
                    None,
                    message="HiGHS proved that no assignment satisfies memory, bandwidth and the "
                    "quality target together (no single request or resource explains it alone)",
                    stats=stats,
                )
            if outcome.status == "time_limit":
                return SolverResult(
                    Status.TIME_LIMIT,
                    None,
                    bound=outcome.bound,
                    message="no incumbent",
                    stats=stats,
                )
            return SolverResult(Status.ERROR, None, message=f"HiGHS: {outcome.status}", stats=stats)
        bound = outcome.bound
        if bound is None:
            # stopped before the root relaxation: the LP bound still proves a gap
            relaxed = solve_highs(milp, relax=True, threads=self.threads, time_limit=LP_BOUND_S)
            bound = relaxed.objective if relaxed.status == "optimal" else None
            stats["lp_bound_s"] = relaxed.run_s
        assignment = assignment_from_columns(milp, outcome.values, problem.num_requests)
        status = {"optimal": Status.OPTIMAL, "time_limit": Status.TIME_LIMIT}.get(
            outcome.status, Status.FEASIBLE
        )
        return SolverResult(
            status,
            assignment,
            bound=bound,
            reported_objective=outcome.objective,
            message=None if status is Status.OPTIMAL else f"HiGHS stopped: {outcome.status}",
            stats=stats,
        )

    @staticmethod
    def _fast_path(problem: Problem, seed: int) -> tuple[np.ndarray | None, float]:
        from qlmio_opt.evaluation import evaluate
        from qlmio_opt.solvers.greedy import Greedy

        start = time.perf_counter()
        result = Greedy().solve(problem, seed=seed)
        spent = time.perf_counter() - start
        if result.assignment is None or evaluate(problem, result.assignment).violations:
            return None, spent
        return result.assignment, spent
