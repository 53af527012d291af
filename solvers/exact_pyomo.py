"""``exact-pyomo``: the MILP of ``docs/formulation.md`` built in Pyomo and solved by HiGHS.

The model comes from :func:`qlmio_opt.formulations.pyomo_model.build_pyomo_model`; HiGHS is
reached through Pyomo's redesigned solver interface (``pyomo.contrib.solver``, registered as
``"highs"``; needs Pyomo >= 6.9.3, developed on 6.10.1). It is the readable reference for the
direct highspy build (``exact``): same columns and rows, slower to assemble (about 1.2 s of Pyomo
build and translation on a 1,000-request window, against 0.1 s). Pyomo is imported on first use
(``import pyomo.environ`` takes about 1 s).

Windows that :func:`qlmio_opt.solvers.diagnose.infeasibility_reason` can already blame (a request
with no allowed node, ...) are answered INFEASIBLE before any model is built. ``stats`` holds
``build_s`` (Pyomo model), ``highs_pass_s`` (``set_instance``: Pyomo to HiGHS, plus the MIP start)
and ``highs_run_s`` (the ``solve`` call), and the model's ``columns`` and ``rows``.

The time limit covers the whole solve: Pyomo's import on first use, the build, the hand-over
and HiGHS. A build that would not fit in what is left (:data:`PYOMO_S_PER_PAIR`) is not
started; then, as when HiGHS stops on its clock without an incumbent, the answer is TIME_LIMIT
without an assignment (the CLI's exit 4). HiGHS itself is bounded only by its own clock here
(Pyomo's ``solve`` call owns it), which it checks only between steps (docs/scaling.md, "Time
limits"): prefer ``exact`` when the limit must hold.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qlmio_opt.domain.solution import Status
from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solvers.base import Solver, SolverResult
from qlmio_opt.solvers.diagnose import infeasibility_reason

DEFAULT_TIME_LIMIT_S = 60.0
# Seconds per allowed pair of building the Pyomo model and handing it to HiGHS: 78 us at
# 1,000 x 12 (11,970 pairs) and 87 us at 2,000 x 12 on the development machine (0.19 + 0.74 s
# and 0.39 + 1.68 s), doubled for a busy machine.
PYOMO_S_PER_PAIR = 1.7e-4
# ``import pyomo.environ`` on first use: 0.5-1 s on the development machine.
PYOMO_IMPORT_S = 1.0
_PYOMO_HIGHS_LOGGER = "pyomo.contrib.solver.solvers.highs"

# Every automatic re-scan of the model off: the model is handed to HiGHS once, by set_instance.
_NO_AUTO_UPDATES = {
    "check_for_new_or_removed_constraints": False,
    "check_for_new_or_removed_vars": False,
    "check_for_new_or_removed_params": False,
    "check_for_new_objective": False,
    "update_constraints": False,
    "update_vars": False,
    "update_parameters": False,
    "update_named_expressions": False,
    "update_objective": False,
}


class ExactPyomo(Solver):
    """Optimal assignment by MILP: Pyomo model, HiGHS branch and bound."""

    name = "exact-pyomo"
    description = "MILP of docs/formulation.md as a Pyomo model, solved by HiGHS"

    def solve(
        self,
        problem: Problem,
        *,
        time_limit: float | None = None,
        seed: int = 0,
        initial: NDArray[np.int64] | None = None,
        mip_rel_gap: float = 1e-4,
    ) -> SolverResult:
        """Solve ``problem``; ``initial`` (node per request, -1 = deferred) is a MIP start.

        ``time_limit`` is in seconds (None = 60). Returns OPTIMAL (within ``mip_rel_gap``),
        TIME_LIMIT with the best assignment found, INFEASIBLE with the constraint to blame, or
        ERROR naming the solver's termination condition.
        """
        if problem.num_requests == 0:
            return SolverResult(Status.OPTIMAL, np.zeros(0, dtype=np.int64), 0.0, 0.0)
        # A request with no allowed node (or another single culprit) is named before building.
        reason = infeasibility_reason(problem)
        if reason is not None:
            return SolverResult(Status.INFEASIBLE, None, message=reason)
        if initial is not None:
            initial = _checked_initial(initial, problem.num_requests)
        start = time.perf_counter()
        limit = DEFAULT_TIME_LIMIT_S if time_limit is None else float(time_limit)
        refusal = _build_refusal(problem, limit)
        if refusal is not None:
            return _out_of_time(problem, initial, refusal)

        # Imported here: Pyomo is slow to import and only this solver needs it. pyomo.environ
        # first: it registers "highs" in pyomo.contrib.solver's factory.
        import pyomo.environ  # noqa: F401
        from pyomo.common.gc_manager import PauseGC
        from pyomo.contrib.solver.common.factory import SolverFactory

        from qlmio_opt.formulations.pyomo_model import build_pyomo_model
        from qlmio_opt.solvers.highs_direct import HIGHS_THREADS, use_scheduler_threads

        model = build_pyomo_model(problem)
        built = time.perf_counter()
        opt = SolverFactory("highs")
        try:
            with PauseGC():
                opt.set_instance(model)  # Pyomo -> HiGHS translation
            if initial is not None:
                _set_start(opt, model, problem, initial)
            passed = time.perf_counter()
            left = limit - (passed - start)
            if left <= 0.0:
                return _out_of_time(
                    problem,
                    initial,
                    f"time limit: building the Pyomo model took {passed - start:.2f} s of the "
                    f"{limit:g} s; HiGHS not started",
                )
            use_scheduler_threads(HIGHS_THREADS)
            with _stop_on_sigint(opt):
                results = opt.solve(
                    model,
                    threads=HIGHS_THREADS,
                    time_limit=left,
                    rel_gap=mip_rel_gap,
                    load_solutions=False,
                    raise_exception_on_nonoptimal_result=False,
                    solver_options={"random_seed": int(seed) % 2**31},
                    auto_updates=_NO_AUTO_UPDATES,
                )
        except Exception as exc:  # a failing solver call is a result, not a crash
            return SolverResult(
                Status.ERROR, None, message=f"HiGHS (Pyomo) failed: {type(exc).__name__}: {exc}"
            )
        stats = {
            "build_s": built - start,
            "highs_pass_s": passed - built,
            "highs_run_s": time.perf_counter() - passed,
            "columns": float(model.nvariables()),
            "rows": float(model.nconstraints()),
        }
        return _result(results, model, problem, stats)


def _result(results: Any, model: Any, problem: Problem, stats: dict[str, float]) -> SolverResult:
    """Pyomo's ``results`` of solving ``model`` as a :class:`SolverResult`: the termination
    condition mapped to a status, the assignment loaded when there is one."""
    from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition

    condition = results.termination_condition
    has_solution = results.solution_status in (SolutionStatus.optimal, SolutionStatus.feasible)
    bound = results.objective_bound
    bound = float(bound) if bound is not None and np.isfinite(bound) else None
    objective = results.incumbent_objective
    if condition in (
        TerminationCondition.provenInfeasible,
        TerminationCondition.infeasibleOrUnbounded,
    ):
        # the model is bounded (binaries, theta >= 0 at a non-negative cost): infeasible
        return SolverResult(
            Status.INFEASIBLE,
            None,
            message="HiGHS proved that no assignment satisfies memory, bandwidth and the "
            "quality target together (no single request or resource explains it alone)",
            stats=stats,
        )
    if has_solution and condition in (
        TerminationCondition.convergenceCriteriaSatisfied,
        TerminationCondition.maxTimeLimit,
    ):
        from qlmio_opt.formulations.pyomo_model import assignment_from_model

        results.solution_loader.load_vars()
        status = (
            Status.OPTIMAL
            if condition is TerminationCondition.convergenceCriteriaSatisfied
            else Status.TIME_LIMIT
        )
        return SolverResult(
            status,
            assignment_from_model(model, problem.num_requests),
            bound=bound,
            bound_source=None if bound is None else "highs",
            reported_objective=None if objective is None else float(objective),
            stats=stats,
        )
    if condition is TerminationCondition.maxTimeLimit:
        return SolverResult(
            Status.TIME_LIMIT,
            None,
            bound=bound,
            message="HiGHS (Pyomo) reached the time limit with no feasible solution",
            stats=stats,
        )
    found = "a feasible solution" if has_solution else "no feasible solution"
    return SolverResult(
        Status.ERROR,
        None,
        bound=bound,
        message=f"HiGHS (Pyomo) stopped with termination condition {condition.name} and {found}",
        stats=stats,
    )


def _out_of_time(problem: Problem, initial: NDArray[np.int64] | None, message: str) -> SolverResult:
    """TIME_LIMIT before HiGHS ran: with ``initial`` as the incumbent when it meets every
    constraint (HiGHS would have kept it), else without an assignment."""
    from qlmio_opt.formulations.evaluation import evaluate

    if initial is not None:
        given = evaluate(problem, initial)
        if not given.violations:
            objective = float(given.objective)
            return SolverResult(
                Status.TIME_LIMIT, initial, reported_objective=objective, message=message
            )
    return SolverResult(Status.TIME_LIMIT, None, message=message)


def _build_refusal(problem: Problem, limit: float) -> str | None:
    """Why the model is not built within ``limit`` seconds (its estimated build, and Pyomo's
    import if it is not loaded yet, take longer), or None."""
    import sys

    pairs = int(problem.allowed.sum())
    needed = PYOMO_S_PER_PAIR * pairs
    if "pyomo.environ" not in sys.modules:
        needed += PYOMO_IMPORT_S
    if needed <= limit:
        return None
    return (
        f"time limit: building the Pyomo model of {pairs} pairs takes about {needed:.1f} s, "
        f"more than the {limit:g} s limit; not started (exact builds the same model in a "
        "fraction of that)"
    )


def _checked_initial(initial: NDArray[np.int64], num_requests: int) -> NDArray[np.int64]:
    """``initial`` as int64, refused unless it has one entry per request."""
    initial = np.asarray(initial, dtype=np.int64)
    if initial.shape != (num_requests,):
        raise ValueError(f"initial has shape {initial.shape}, expected ({num_requests},)")
    return initial


@contextmanager
def _stop_on_sigint(opt: Any) -> Iterator[None]:
    """Ctrl-C while HiGHS runs stops it at its next interrupt check, then raises
    KeyboardInterrupt (:func:`qlmio_opt.solvers.highs_direct.stop_on_sigint`).

    Without this, Python's handler raises KeyboardInterrupt inside the interrupt callback that
    Pyomo subscribes (``HandleKeyboardInterrupt``), HiGHS returns an error and the Ctrl-C is
    lost in an ERROR result. The highspy object is a private attribute of Pyomo's interface; on
    an interface without it, a Ctrl-C acts as it would without this.
    """
    from qlmio_opt.solvers.highs_direct import stop_on_sigint

    highs = getattr(opt, "_solver_model", None)
    if highs is None or not hasattr(highs, "cbMipInterrupt"):
        yield
        return
    # Pyomo 6.10 warns that it does not know HiGHS's "interrupted" status; the Ctrl-C is
    # reported as KeyboardInterrupt instead
    pyomo_highs_log = logging.getLogger(_PYOMO_HIGHS_LOGGER)
    pyomo_highs_log.addFilter(_not_interrupt_status)
    try:
        with stop_on_sigint(highs):
            yield
    finally:
        pyomo_highs_log.removeFilter(_not_interrupt_status)


def _not_interrupt_status(record: logging.LogRecord) -> bool:
    return "kInterrupt" not in record.getMessage()


def _set_start(opt: Any, model: Any, problem: Problem, assignment: NDArray[np.int64]) -> None:
    """Give HiGHS ``assignment`` as a starting incumbent (ignored by HiGHS if infeasible).

    ``pyomo.contrib.solver``'s HiGHS interface has no warm-start option, so this writes the
    column values into its highspy object; on an interface without those (private) attributes
    the start is skipped.
    """
    highs = getattr(opt, "_solver_model", None)
    columns = getattr(opt, "_pyomo_var_to_solver_var_map", None)
    if highs is None or columns is None:
        return
    import highspy

    counts = np.bincount(assignment[assignment >= 0], minlength=problem.num_nodes)
    start_values = [(var, float(assignment[r] == n)) for (r, n), var in model.x.items()]
    if problem.deferral_allowed:
        start_values += [(var, float(assignment[r] < 0)) for r, var in model.d.items()]
    for n in model.CONGESTED:
        start_values.append((model.count[n], float(counts[n])))
        start_values.append((model.theta[n], float(problem.congestion_curves[n](int(counts[n])))))
    values = np.zeros(highs.getNumCol())
    for var, value in start_values:
        column = columns.get(id(var))
        if column is not None:  # a variable no row or objective uses never reaches HiGHS
            values[column] = value
    start = highspy.HighsSolution()
    start.col_value = values.tolist()
    start.value_valid = True
    highs.setSolution(start)
