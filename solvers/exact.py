"""The exact solver: the MILP of docs/formulation.md built as arrays and solved by HiGHS.

One time budget covers the whole solve: the matrix build, the greedy warm start, HiGHS and any
bound computed after it. HiGHS gets what is left of the limit when it starts, and the lower
bound reported is the best valid one available (docs/scaling.md, "Very large windows"):

* the greedy warm start's Lagrangian dual value (:mod:`qlmio_opt.solvers.greedy_prices`; it
  costs nothing more, as the warm start computes it anyway),
* HiGHS's MIP dual bound,
* the LP relaxation, solved only when HiGHS gave no bound and time is left, within what is left.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qlmio_opt.domain.solution import Status
from qlmio_opt.formulations.milp_arrays import (
    MilpArrays,
    assignment_from_columns,
    build_milp,
    columns_from_assignment,
)
from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solvers.base import Solver, SolverResult, empty_window_result
from qlmio_opt.solvers.diagnose import infeasibility_reason
from qlmio_opt.solvers.highs_direct import solve_highs

DEFAULT_TIME_LIMIT_S = 60.0
# The LP-relaxation bound (run only when HiGHS returned none) gets at most this long, and never
# more than what is left of the time limit.
LP_BOUND_S = 30.0
# From this many MILP columns on, HiGHS runs without presolve (LARGE_MODEL_OPTIONS). On a
# 10,000 x 12 window of ``benchmarks/windows.py`` (129,451 columns), HiGHS's MIP presolve and
# the set-up after it took 14-78 s on the shared 2-core machine, checking neither the clock nor
# any callback, so HiGHS could not stop within a 60 s limit; without presolve it reaches its
# first check in under a second, and the proven gaps were as small (5,000 x 12) or smaller
# (2,000 and 10,000 x 12) (docs/scaling.md, "Very large windows"). The 100 committed windows (at
# most ~7,100 pairs) keep HiGHS's defaults.
LARGE_MODEL_COLUMNS = 20_000
LARGE_MODEL_OPTIONS: dict[str, bool | int | float | str] = {"presolve": "off"}
# HiGHS's sub-MIP heuristics (RINS, RENS, root reduced cost) each solve a smaller MIP, with
# presolve, whose steps do not check the clock either: on the 10,000 x 12 window (129,451
# columns) one ran 30-35 s and ended HiGHS 2-8 s past its limit; on 5,000 x 12 (64,759 columns)
# one stopped within 0.5 s of it, and on 2,000 x 12 they found every improvement on the warm
# start. So a large model turns them off when it has at least this many columns per second of
# HiGHS's time limit (90,000 columns for 60 s).
NO_SUBMIP_COLUMNS_PER_S = 1_500
NO_SUBMIP_OPTIONS: dict[str, bool | int | float | str] = {
    "mip_heuristic_run_rins": False,
    "mip_heuristic_run_rens": False,
    "mip_heuristic_run_root_reduced_cost": False,
}

# HiGHS threads of exact solvers built without an explicit ``threads`` (0 = HiGHS's default).
_DEFAULT_THREADS: ContextVar[int] = ContextVar("qlmio_highs_threads", default=0)


@contextmanager
def highs_threads(threads: int) -> Iterator[None]:
    """Within the block, exact solvers built without ``threads`` use this many HiGHS threads.

    Parallel workers (:mod:`qlmio_opt.app.parallel`) run their tasks inside ``highs_threads(1)`` so
    that N worker processes use N cores, not N times HiGHS's own thread pool.
    """
    token = _DEFAULT_THREADS.set(int(threads))
    try:
        yield
    finally:
        _DEFAULT_THREADS.reset(token)


@dataclass(frozen=True)
class _WarmStart:
    """The greedy's answer as a warm start: its assignment (None if unusable), its Lagrangian
    lower bound (None if it has none) and the seconds it took."""

    assignment: NDArray[np.int64] | None
    bound: float | None
    seconds: float


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
        always returns at least that, and its Lagrangian bound is one of the bounds reported.
    large_model_columns
        MILPs with at least this many columns are solved without HiGHS's presolve
        (:data:`LARGE_MODEL_OPTIONS`), and, when they have :data:`NO_SUBMIP_COLUMNS_PER_S`
        columns per second of time limit, without its sub-MIP heuristics; 0: every model.
    """

    name = "exact"
    description = "MILP solved by HiGHS (direct matrix build), warm-started from greedy"

    def __init__(
        self,
        mip_rel_gap: float = 1e-4,
        threads: int | None = None,
        warm_start: bool = True,
        large_model_columns: int = LARGE_MODEL_COLUMNS,
    ):
        self.mip_rel_gap = mip_rel_gap
        self.threads = _DEFAULT_THREADS.get() if threads is None else threads
        self.warm_start = warm_start
        self.large_model_columns = large_model_columns

    def solve(
        self,
        problem: Problem,
        *,
        time_limit: float | None = None,
        seed: int = 0,
        initial: NDArray[np.int64] | None = None,
    ) -> SolverResult:
        """Solve ``problem`` within ``time_limit`` seconds of wall time, all steps included.

        Parameters
        ----------
        problem
            The window.
        time_limit
            Seconds for the whole solve (build, warm start, HiGHS, bound); None:
            :data:`DEFAULT_TIME_LIMIT_S`. HiGHS gets what is left when it starts; it can still
            end a little after it (it checks its clock between steps).
        seed
            HiGHS's and the greedy's random seed.
        initial
            An assignment (node per request, -1 deferred) to start from instead of the greedy's.

        Returns
        -------
        SolverResult
            ``OPTIMAL`` when the incumbent is proven within ``mip_rel_gap`` of the best bound,
            ``TIME_LIMIT`` with the incumbent and the best valid bound otherwise (``stats``
            holds each bound found: ``bound_greedy``, ``bound_highs``, ``bound_lp``), or
            ``INFEASIBLE`` / ``ERROR`` with a message.
        """
        if problem.num_requests == 0:  # HiGHS ends an empty model with an error status
            return empty_window_result()
        start = time.perf_counter()
        reason = infeasibility_reason(problem)
        if reason is not None:
            return SolverResult(Status.INFEASIBLE, None, message=reason)
        limit = DEFAULT_TIME_LIMIT_S if time_limit is None else float(time_limit)

        def left() -> float:
            return limit - (time.perf_counter() - start)

        milp = build_milp(problem)
        built = time.perf_counter()
        warm = _WarmStart(initial, None, 0.0)
        if initial is None and self.warm_start:
            warm = self._fast_path(problem, seed, max(left(), 0.0))
        bounds: dict[str, float] = {}
        if warm.bound is not None and np.isfinite(warm.bound):
            bounds["greedy"] = float(warm.bound)
        init_cols = (
            None
            if warm.assignment is None
            else columns_from_assignment(milp, problem, warm.assignment)
        )
        stats = {
            "build_s": built - start,
            "warm_start_s": warm.seconds,
            "columns": float(milp.num_cols),
            "rows": float(milp.num_rows),
            "nonzeros": float(milp.num_nonzeros),
            "time_limit_s": limit,
        }
        highs_limit = left()
        options = self._options_in_stats(milp, highs_limit, stats)
        if highs_limit <= 0.0 and init_cols is not None:
            # the build and the warm start used the whole limit: keep the warm start
            note = "HiGHS not started: the build and the warm start used the time limit"
            return self._result(milp, problem, "time_limit", init_cols, bounds, stats, start, note)
        outcome = solve_highs(
            milp,
            time_limit=max(highs_limit, 0.0),
            mip_rel_gap=self.mip_rel_gap,
            threads=self.threads,
            seed=seed,
            initial=init_cols,
            options=options or None,
        )
        stats["highs_pass_s"] = outcome.pass_s
        stats["highs_run_s"] = outcome.run_s
        if outcome.bound is not None:
            bounds["highs"] = outcome.bound
        if outcome.values is None:
            stats["total_s"] = time.perf_counter() - start
            return _without_incumbent(outcome.status, bounds, stats)
        if "highs" not in bounds and outcome.status != "optimal" and left() > 0.0:
            self._add_lp_bound(milp, bounds, stats, left())
        return self._result(milp, problem, outcome.status, outcome.values, bounds, stats, start)

    def _options_in_stats(
        self, milp: MilpArrays, highs_limit: float, stats: dict[str, float]
    ) -> dict[str, bool | int | float | str]:
        """HiGHS's options for ``milp`` (:meth:`highs_options`), noted in ``stats`` with the
        time HiGHS gets."""
        stats["highs_time_limit_s"] = max(highs_limit, 0.0)
        options = self.highs_options(milp.num_cols, highs_limit)
        stats["highs_large_model"] = float(milp.num_cols >= self.large_model_columns)
        stats["highs_submip"] = float("mip_heuristic_run_rins" not in options)
        return options

    def _add_lp_bound(
        self, milp: MilpArrays, bounds: dict[str, float], stats: dict[str, float], left: float
    ) -> None:
        """HiGHS stopped before its root relaxation: the LP bound, within ``left`` seconds
        (at most :data:`LP_BOUND_S`), added to ``bounds``."""
        relaxed = solve_highs(
            milp, relax=True, threads=self.threads, time_limit=min(LP_BOUND_S, left)
        )
        stats["lp_bound_s"] = relaxed.run_s
        if relaxed.bound is not None:
            bounds["lp"] = relaxed.bound

    def highs_options(self, columns: int, time_limit: float) -> dict[str, bool | int | float | str]:
        """HiGHS options for a MILP of ``columns`` columns and ``time_limit`` seconds (none on
        models below :attr:`large_model_columns`: HiGHS's defaults)."""
        if columns < self.large_model_columns:
            return {}
        options = dict(LARGE_MODEL_OPTIONS)
        if columns >= NO_SUBMIP_COLUMNS_PER_S * time_limit:
            options.update(NO_SUBMIP_OPTIONS)
        return options

    def _result(
        self,
        milp: MilpArrays,
        problem: Problem,
        highs_status: str,
        values: NDArray[np.float64],
        bounds: dict[str, float],
        stats: dict[str, float],
        start: float,
        highs_note: str | None = None,
    ) -> SolverResult:
        """The incumbent ``values`` with the best of ``bounds``, and the status they prove.

        Every bound is a valid lower bound of the same objective (``c'x`` of the MILP, which
        :func:`qlmio_opt.formulations.evaluation.evaluate` recomputes); the best one is the largest,
        capped at the incumbent's objective (a bound above it can only be rounding).
        """
        objective = float(milp.col_cost @ values)
        assignment = assignment_from_columns(milp, values, problem.num_requests)
        bound, source = None, None
        if bounds:
            source = max(bounds, key=bounds.__getitem__)
            bound = min(bounds[source], objective)
        proven = bound is not None and objective - bound <= self.mip_rel_gap * max(
            abs(objective), 1e-9
        )
        if highs_status == "optimal" or proven:
            status = Status.OPTIMAL
        elif highs_status == "time_limit":
            status = Status.TIME_LIMIT
        else:
            status = Status.FEASIBLE
        stats["total_s"] = time.perf_counter() - start
        message = None
        if highs_status != "optimal":
            message = highs_note or f"HiGHS stopped: {highs_status}"
            if source is not None:
                message += f"; bound from {_SOURCES[source]}"
        return SolverResult(
            status,
            assignment,
            bound=bound,
            bound_source=source,
            reported_objective=objective,
            message=message,
            stats=_with_bounds(stats, bounds),
        )

    @staticmethod
    def _fast_path(problem: Problem, seed: int, time_limit: float) -> _WarmStart:
        """The greedy's assignment (if feasible) and Lagrangian bound, within ``time_limit``."""
        from qlmio_opt.formulations.evaluation import evaluate
        from qlmio_opt.solvers.greedy import Greedy

        start = time.perf_counter()
        result = Greedy().solve(problem, seed=seed, time_limit=time_limit)
        spent = time.perf_counter() - start
        bound = result.bound if result.status.has_assignment else None
        assignment = result.assignment
        if assignment is None or evaluate(problem, assignment).violations:
            assignment = None
        return _WarmStart(assignment, bound, spent)


def _without_incumbent(
    highs_status: str, bounds: dict[str, float], stats: dict[str, float]
) -> SolverResult:
    """The answer when HiGHS returned no columns: infeasible, a time limit without an
    incumbent (with the best bound found), or an error naming HiGHS's status."""
    if highs_status == "infeasible":
        return SolverResult(
            Status.INFEASIBLE,
            None,
            message="HiGHS proved that no assignment satisfies memory, bandwidth and the "
            "quality target together (no single request or resource explains it alone)",
            stats=stats,
        )
    if highs_status == "time_limit":
        return SolverResult(
            Status.TIME_LIMIT,
            None,
            bound=max(bounds.values()) if bounds else None,
            message="no incumbent",
            stats=_with_bounds(stats, bounds),
        )
    return SolverResult(Status.ERROR, None, message=f"HiGHS: {highs_status}", stats=stats)


_SOURCES = {
    "greedy": "the greedy's Lagrangian dual",
    "highs": "HiGHS's MIP dual bound",
    "lp": "the LP relaxation",
}


def _with_bounds(stats: dict[str, float], bounds: dict[str, float]) -> dict[str, float]:
    """``stats`` with every bound found, as ``bound_<source>``."""
    return {**stats, **{f"bound_{name}": value for name, value in bounds.items()}}
