"""The exact solver: the MILP of docs/formulation.md built as arrays and solved by HiGHS.

One time budget covers the whole solve: the greedy warm start, the matrix build, HiGHS and any
bound computed after it, and the solve returns by its deadline whatever HiGHS is doing
(:func:`qlmio_opt.solvers.highs_direct.solve_highs`'s ``deadline``; docs/scaling.md, "Time
limits"). HiGHS is asked to stop a little before it, and the lower bound reported is the best
valid one available (docs/scaling.md, "Very large windows"):

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
from qlmio_opt.solvers.highs_direct import HIGHS_THREADS, HighsOutcome, solve_highs

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

# Above this many allowed request-node pairs, exact answers with its warm start (the greedy's
# answer and Lagrangian bound) without building the MILP. From benchmarks/exact_memory.py
# (docs/scaling.md, "Exact's size limit"): 119,427 pairs (10,000 x 12) were proven optimal in
# 129 s at a 0.64 GB peak; 477,670 (20,000 x 24) peaked at 0.94 GB, HiGHS without a bound of its
# own after 187 s; 1,194,175 (50,000 x 24) reached 2.9 GB after 795 s of HiGHS, still with no
# bound of its own: beyond the 2 GB and of no use within any online limit.
MAX_PAIRS = 500_000
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

# HiGHS's own clock gets this share of the time left (at least HIGHS_STOP_MIN_S less), so that
# HiGHS usually stops on its own, with its final incumbent and bound, before the solve's hard
# deadline. HiGHS's clean stops came within 0.1-0.3 s of its limit on 5,000-10,000 x 12 windows
# with 60 s (docs/scaling.md, "Very large windows"): 5% of a 60 s limit is 3 s.
HIGHS_CLOCK_SHARE = 0.95
HIGHS_STOP_MIN_S = 0.02
# Seconds kept after HiGHS for reading its answer back (assignment_from_columns and the
# result: under 5 ms at 10,000 x 12).
RESULT_RESERVE_S = 0.005

# HiGHS threads of exact solvers built without an explicit ``threads``: one
# (:data:`~qlmio_opt.solvers.highs_direct.HIGHS_THREADS`), in a serial run as in a worker.
_DEFAULT_THREADS: ContextVar[int] = ContextVar("qlmio_highs_threads", default=HIGHS_THREADS)


@contextmanager
def highs_threads(threads: int) -> Iterator[None]:
    """Within the block, exact solvers built without ``threads`` use this many HiGHS threads.

    Parallel workers (:mod:`qlmio_opt.app.parallel`) run their tasks inside ``highs_threads(1)`` so
    that N worker processes use N cores, not N times HiGHS's own thread pool (1 is also the
    default, so that a serial run gives the same answers).
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
        HiGHS threads (0 = HiGHS's default). ``None``: 1, or what an enclosing
        :func:`highs_threads` says.
    warm_start
        Start from the greedy solver's answer when no ``initial`` is given, so a time limit
        always returns at least that, and its Lagrangian bound is one of the bounds reported.
    max_pairs
        Windows with more allowed request-node pairs are answered by the warm start alone, with a
        message saying so (:data:`MAX_PAIRS`); None: no limit.
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
        max_pairs: int | None = MAX_PAIRS,
    ):
        self.mip_rel_gap = mip_rel_gap
        self.max_pairs = max_pairs
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
        deadline = start + limit if np.isfinite(limit) else None

        def left() -> float:
            return limit - (time.perf_counter() - start)

        warm = _WarmStart(initial, None, 0.0)
        if initial is None and self.warm_start:
            warm = self._fast_path(problem, seed, max(left(), 0.0))
        bounds: dict[str, float] = {}
        if warm.bound is not None and np.isfinite(warm.bound):
            bounds["greedy"] = float(warm.bound)
        stats = {"warm_start_s": warm.seconds, "time_limit_s": limit}
        too_large = self._too_large(problem)
        if too_large is not None:
            stats["total_s"] = time.perf_counter() - start
            if warm.assignment is None:
                return SolverResult(Status.ERROR, None, message=too_large, stats=stats)
            return self._result(problem, "not_run", warm.assignment, None, bounds, stats, too_large)
        if left() <= RESULT_RESERVE_S:
            # the warm start used the whole limit: keep it, without building the model
            stats["total_s"] = time.perf_counter() - start
            if warm.assignment is None:
                return _without_incumbent("time_limit", bounds, stats)
            note = "HiGHS not started: the warm start used the time limit"
            return self._result(problem, "time_limit", warm.assignment, None, bounds, stats, note)
        built_at = time.perf_counter()
        milp = build_milp(problem)
        stats |= {
            "build_s": time.perf_counter() - built_at,
            "columns": float(milp.num_cols),
            "rows": float(milp.num_rows),
            "nonzeros": float(milp.num_nonzeros),
        }
        init_cols = (
            None
            if warm.assignment is None
            else columns_from_assignment(milp, problem, warm.assignment)
        )
        highs_limit = _highs_clock(left())
        options = self._options_in_stats(milp, highs_limit, stats)
        stop_by = None if deadline is None else deadline - RESULT_RESERVE_S
        outcome = solve_highs(
            milp,
            time_limit=highs_limit,
            mip_rel_gap=self.mip_rel_gap,
            threads=self.threads,
            seed=seed,
            initial=init_cols,
            options=options or None,
            deadline=stop_by,
        )
        stats["highs_pass_s"] = outcome.pass_s
        stats["highs_run_s"] = outcome.run_s
        stats["highs_finished"] = float(outcome.finished)
        if outcome.bound is not None:
            bounds["highs"] = outcome.bound
        assignment, objective = _incumbent(milp, problem, outcome, warm.assignment)
        if assignment is None:
            stats["total_s"] = time.perf_counter() - start
            return _without_incumbent(outcome.status, bounds, stats)
        if "highs" not in bounds and outcome.status != "optimal" and left() > RESULT_RESERVE_S:
            self._add_lp_bound(milp, bounds, stats, left(), stop_by)
        left_note = None if outcome.finished else _abandoned_note(outcome)
        stats["total_s"] = time.perf_counter() - start
        return self._result(
            problem, outcome.status, assignment, objective, bounds, stats, left_note
        )

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
        self,
        milp: MilpArrays,
        bounds: dict[str, float],
        stats: dict[str, float],
        left: float,
        deadline: float | None,
    ) -> None:
        """HiGHS stopped before its root relaxation: the LP bound, within ``left`` seconds
        (at most :data:`LP_BOUND_S`) and by ``deadline``, added to ``bounds``."""
        relaxed = solve_highs(
            milp,
            relax=True,
            threads=self.threads,
            time_limit=min(LP_BOUND_S, _highs_clock(left)),
            deadline=deadline,
        )
        stats["lp_bound_s"] = relaxed.run_s
        if relaxed.bound is not None:
            bounds["lp"] = relaxed.bound

    def _too_large(self, problem: Problem) -> str | None:
        """Why HiGHS is not started on ``problem`` (None: it is): more allowed pairs than
        :attr:`max_pairs`."""
        pairs = int(problem.allowed.sum())
        if self.max_pairs is None or pairs <= self.max_pairs:
            return None
        return (
            f"HiGHS not started: the window has {pairs:,} allowed request-node pairs, above "
            f"exact's limit of {self.max_pairs:,} (at 1.2 million pairs HiGHS needed 2.9 GB and "
            "had no bound after 13 min; docs/scaling.md); the greedy's answer "
            "(ExactHighs(max_pairs=None) lifts the limit)"
        )

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
        problem: Problem,
        highs_status: str,
        assignment: NDArray[np.int64],
        objective: float | None,
        bounds: dict[str, float],
        stats: dict[str, float],
        highs_note: str | None = None,
    ) -> SolverResult:
        """The incumbent ``assignment`` with the best of ``bounds``, and the status they prove.

        Every bound is a valid lower bound of the same objective (``c'x`` of the MILP, which
        :func:`qlmio_opt.formulations.evaluation.evaluate` recomputes; ``objective`` None: that
        recomputation); the best one is the largest, capped at the incumbent's objective (a
        bound above it can only be rounding).
        """
        if objective is None:
            from qlmio_opt.formulations.evaluation import evaluate

            objective = float(evaluate(problem, assignment).objective)
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


def _highs_clock(left: float) -> float:
    """HiGHS's own ``time_limit`` when ``left`` seconds are left: a little less, so that it
    stops by itself before the hard deadline (:data:`HIGHS_CLOCK_SHARE`)."""
    return max(min(HIGHS_CLOCK_SHARE * left, left - HIGHS_STOP_MIN_S), 0.0)


def _incumbent(
    milp: MilpArrays,
    problem: Problem,
    outcome: HighsOutcome,
    warm: NDArray[np.int64] | None,
) -> tuple[NDArray[np.int64] | None, float | None]:
    """The assignment to return and its ``c'x`` (None: to recompute): HiGHS's columns when it
    has some, else the warm start. A solution that HiGHS's callback reported before the solve
    left it at its deadline is used only when it meets every constraint and beats the warm
    start."""
    if outcome.values is None:
        return warm, None
    assignment = assignment_from_columns(milp, outcome.values, problem.num_requests)
    if outcome.finished:
        return assignment, float(milp.col_cost @ outcome.values)
    from qlmio_opt.formulations.evaluation import evaluate

    found = evaluate(problem, assignment)
    if found.violations:
        return warm, None
    if warm is not None and evaluate(problem, warm).objective <= found.objective:
        return warm, None
    return assignment, float(found.objective)


def _abandoned_note(outcome: HighsOutcome) -> str:
    """Why HiGHS's own final answer is missing."""
    if outcome.run_s == 0.0:
        return "HiGHS not started: the previous run was still stopping at the time limit"
    return (
        f"HiGHS left at the time limit after {outcome.run_s:.2f} s (it checks its clock only "
        "between steps; it stops in the background)"
    )


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
