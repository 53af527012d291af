"""Solve :class:`MilpArrays` with HiGHS through highspy, fed numpy arrays directly."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import highspy
import numpy as np

from qlmio_opt.formulations.milp_arrays import MilpArrays


@dataclass(frozen=True)
class HighsOutcome:
    """What HiGHS reports: its model status name, the columns, objective, bound and times."""

    status: str  # "optimal" | "time_limit" | "infeasible" | "other: <HiGHS status>"
    values: np.ndarray | None
    objective: float | None
    bound: float | None
    mip_gap: float | None
    run_s: float  # HiGHS's own run time (h.run())
    pass_s: float  # handing the arrays to HiGHS


@contextmanager
def _quiet_stdout():
    """HiGHS prints a banner to the C-level stdout when its first instance is made."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def new_highs(*, time_limit: float | None, mip_rel_gap: float, threads: int, seed: int):
    """A silent HiGHS instance with the given limits."""
    with _quiet_stdout():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    if time_limit is not None:
        h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    h.setOptionValue("random_seed", int(seed))
    if threads > 0:
        h.setOptionValue("threads", int(threads))
    return h


def to_highs_lp(milp: MilpArrays) -> highspy.HighsLp:
    """The arrays as a column-wise ``HighsLp``."""
    inf = highspy.kHighsInf
    lp = highspy.HighsLp()
    lp.num_col_ = milp.num_cols
    lp.num_row_ = milp.num_rows
    lp.col_cost_ = milp.col_cost
    lp.col_lower_ = milp.col_lower
    lp.col_upper_ = np.where(np.isinf(milp.col_upper), inf, milp.col_upper)
    lp.row_lower_ = np.where(np.isinf(milp.row_lower), -inf, milp.row_lower)
    lp.row_upper_ = np.where(np.isinf(milp.row_upper), inf, milp.row_upper)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = milp.matrix.indptr.astype(np.int32)
    lp.a_matrix_.index_ = milp.matrix.indices.astype(np.int32)
    lp.a_matrix_.value_ = milp.matrix.data
    lp.a_matrix_.num_col_ = milp.num_cols
    lp.a_matrix_.num_row_ = milp.num_rows
    lp.integrality_ = [
        highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous
        for flag in milp.integrality
    ]
    return lp


def solve_highs(
    milp: MilpArrays,
    *,
    time_limit: float | None = None,
    mip_rel_gap: float = 1e-4,
    threads: int = 0,
    seed: int = 0,
    initial: np.ndarray | None = None,
    relax: bool = False,
) -> HighsOutcome:
    """Solve the MILP (or its LP relaxation with ``relax``), warm-started from ``initial``."""
    h = new_highs(time_limit=time_limit, mip_rel_gap=mip_rel_gap, threads=threads, seed=seed)
    start = time.perf_counter()
    lp = to_highs_lp(milp)
    if relax:
        lp.integrality_ = []
    h.passModel(lp)
    if initial is not None and not relax:
        solution = highspy.HighsSolution()
        solution.col_value = np.asarray(initial, dtype=float)
        solution.value_valid = True
        h.setSolution(solution)
    passed = time.perf_counter()
    h.run()
    run_s = time.perf_counter() - passed
    status = h.getModelStatus()
    info = h.getInfo()
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    values = np.array(h.getSolution().col_value) if has_solution else None
    objective = float(info.objective_function_value) if has_solution else None
    bound = float(info.mip_dual_bound) if not relax else objective
    gap = float(info.mip_gap) if not relax and has_solution else None
    name = {
        highspy.HighsModelStatus.kOptimal: "optimal",
        highspy.HighsModelStatus.kTimeLimit: "time_limit",
        highspy.HighsModelStatus.kInfeasible: "infeasible",
    }.get(status, f"other: {h.modelStatusToString(status)}")
    if bound is not None and not np.isfinite(bound):
        bound = None
    if values is not None and initial is not None and not relax:
        recomputed = float(milp.col_cost @ values)
        if abs(recomputed - objective) > 1e-6 * max(1.0, abs(objective)):
            # Seen with HiGHS 1.16 when presolve solves the whole model: the reported objective
            # is right but the columns handed back are the warm start. Solve again without it.
            again = solve_highs(
                milp, time_limit=time_limit, mip_rel_gap=mip_rel_gap, threads=threads, seed=seed
            )
            return HighsOutcome(
                again.status,
                again.values,
                again.objective,
                again.bound,
                again.mip_gap,
                run_s + again.run_s,
                passed - start + again.pass_s,
            )
    return HighsOutcome(name, values, objective, bound, gap, run_s, passed - start)
