"""Solve :class:`MilpArrays` with HiGHS through highspy, fed numpy arrays directly.

Ctrl-C: HiGHS runs in C++, where Python's SIGINT handler (the one that raises
KeyboardInterrupt) cannot run until HiGHS returns. :func:`stop_on_sigint` lets a SIGINT stop
HiGHS at its next interrupt check instead, and raises KeyboardInterrupt once HiGHS has stopped.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
from numpy.typing import NDArray

from qlmio_opt.formulations.milp_arrays import MilpArrays

_ROWWISE = int(highspy.MatrixFormat.kRowwise)
_MINIMIZE = int(highspy.ObjSense.kMinimize)


@dataclass(frozen=True)
class HighsOutcome:
    """What HiGHS reports: its model status name, the columns, objective, bound and times."""

    status: str  # "optimal" | "time_limit" | "infeasible" | "other: <HiGHS status>"
    values: NDArray[np.float64] | None
    objective: float | None
    bound: float | None
    mip_gap: float | None
    run_s: float  # HiGHS's own run time (h.run())
    pass_s: float  # handing the arrays to HiGHS


_STDOUT_SWAP = threading.Lock()


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """HiGHS prints a banner to the C-level stdout when its first instance is made.

    The swap of the process's stdout is held under one lock: two threads swapping at once could
    each save the other's /dev/null and leave stdout there (seen with 4 threads making 300
    instances each, 3 runs of 3).
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    with _STDOUT_SWAP:
        sys.stdout.flush()
        saved = os.dup(fd)
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
                os.close(saved)


def _can_catch_sigint() -> bool:
    """Whether this thread may take over SIGINT: signal handlers live in the main thread, and
    only Python's default handler (the one raising KeyboardInterrupt) is replaced, never an
    ignored SIGINT (a worker process, ``nohup``) or an application's own handler."""
    return (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )


def _interrupt_callbacks(h: Any) -> tuple[Any, ...]:
    """HiGHS's interrupt callbacks: checked between MIP steps, simplex and IPM iterations."""
    return (h.cbMipInterrupt, h.cbSimplexInterrupt, h.cbIpmInterrupt)


@contextmanager
def stop_on_sigint(h: Any) -> Iterator[None]:
    """Within the block, a SIGINT (Ctrl-C) stops HiGHS ``h`` at its next interrupt check; when
    the block ends, KeyboardInterrupt is raised if a SIGINT came.

    HiGHS checks only between its steps: seconds apart on large models, and not at all inside
    its presolve (docs/scaling.md, "Interrupts"). Outside the main thread, or when SIGINT is not
    handled by Python's default handler, the block runs unchanged (a SIGINT then acts as it
    would without it).
    """
    if not _can_catch_sigint():
        yield
        return
    interrupted = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        # runs in the main thread inside one of the callbacks below: it must not raise there,
        # an exception would unwind through HiGHS's C++
        interrupted.set()

    def on_check(event: Any) -> None:
        if interrupted.is_set():
            event.interrupt()

    callbacks = _interrupt_callbacks(h)
    for callback in callbacks:
        callback.subscribe(on_check)
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for callback in callbacks:
            callback.unsubscribe(on_check)
    if interrupted.is_set():
        raise KeyboardInterrupt


def new_highs(
    *,
    time_limit: float | None,
    mip_rel_gap: float,
    threads: int,
    seed: int,
    options: Mapping[str, bool | int | float | str] | None = None,
) -> Any:
    """A silent HiGHS instance with the given limits and any further HiGHS ``options``."""
    with _quiet_stdout():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    if time_limit is not None:
        h.setOptionValue("time_limit", max(float(time_limit), 0.0))
    h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    h.setOptionValue("random_seed", int(seed))
    if threads > 0:
        h.setOptionValue("threads", int(threads))
    for name, value in (options or {}).items():
        if h.setOptionValue(name, value) != highspy.HighsStatus.kOk:
            raise ValueError(f"HiGHS rejected option {name}={value!r}")
    return h


def pass_model(h: Any, milp: MilpArrays, *, relax: bool = False) -> None:
    """Hand the arrays to HiGHS row-wise, in one call (its LP relaxation with ``relax``)."""
    integrality = np.zeros(milp.num_cols, dtype=np.int32)
    if not relax:
        integrality[milp.integrality] = int(highspy.HighsVarType.kInteger)
    status = h.passModel(
        milp.num_cols,
        milp.num_rows,
        milp.num_nonzeros,
        _ROWWISE,
        _MINIMIZE,
        0.0,
        milp.col_cost,
        milp.col_lower,
        milp.col_upper,
        milp.row_lower,
        milp.row_upper,
        milp.row_start[:-1],
        milp.col_index,
        milp.value,
        integrality,
    )
    if status == highspy.HighsStatus.kError:
        raise ValueError("HiGHS rejected the model arrays")


def solve_highs(
    milp: MilpArrays,
    *,
    time_limit: float | None = None,
    mip_rel_gap: float = 1e-4,
    threads: int = 0,
    seed: int = 0,
    initial: NDArray[np.float64] | None = None,
    relax: bool = False,
    options: Mapping[str, bool | int | float | str] | None = None,
) -> HighsOutcome:
    """Solve the MILP (or its LP relaxation with ``relax``), warm-started from ``initial``.

    Parameters
    ----------
    milp
        The arrays.
    time_limit
        HiGHS's ``time_limit`` in seconds (None: none). HiGHS checks its clock only between
        some of its steps, so a run can end later than this (see docs/scaling.md).
    mip_rel_gap, threads, seed
        The HiGHS options of the same names (``threads`` 0: HiGHS's default).
    initial
        Column values of a feasible solution, handed to HiGHS as a MIP start.
    relax
        Solve the LP relaxation instead (``bound`` is then the LP optimum when it is proven).
    options
        Further HiGHS options by name, e.g. ``{"presolve": "off"}``.

    Raises
    ------
    KeyboardInterrupt
        A SIGINT came while HiGHS ran (in the main thread): HiGHS stopped at its next
        interrupt check (:func:`stop_on_sigint`) and its partial answer is dropped.
    """
    h = new_highs(
        time_limit=time_limit, mip_rel_gap=mip_rel_gap, threads=threads, seed=seed, options=options
    )
    start = time.perf_counter()
    pass_model(h, milp, relax=relax)
    if initial is not None and not relax:
        solution = highspy.HighsSolution()
        solution.col_value = np.asarray(initial, dtype=float)
        solution.value_valid = True
        h.setSolution(solution)
    passed = time.perf_counter()
    with stop_on_sigint(h):
        h.run()
    outcome = _read_outcome(h, relax, time.perf_counter() - passed, passed - start)
    values, objective = outcome.values, outcome.objective
    if values is not None and objective is not None and initial is not None and not relax:
        recomputed = float(milp.col_cost @ values)
        if abs(recomputed - objective) > 1e-6 * max(1.0, abs(objective)):
            # Seen with HiGHS 1.16 when presolve solves the whole model: the reported objective
            # is right but the columns handed back are the warm start. Solve again without it,
            # within what is left of the time limit; with nothing left, the warm start (whose
            # columns these are) is the incumbent, at its own objective.
            run_s, pass_s = outcome.run_s, outcome.pass_s
            left = None if time_limit is None else time_limit - run_s
            if left is not None and left <= 0.0:
                return HighsOutcome(
                    "time_limit", values, recomputed, outcome.bound, None, run_s, pass_s
                )
            again = solve_highs(
                milp,
                time_limit=left,
                mip_rel_gap=mip_rel_gap,
                threads=threads,
                seed=seed,
                options=options,
            )
            return HighsOutcome(
                again.status,
                again.values,
                again.objective,
                again.bound,
                again.mip_gap,
                run_s + again.run_s,
                pass_s + again.pass_s,
            )
    return outcome


def _read_outcome(h: Any, relax: bool, run_s: float, pass_s: float) -> HighsOutcome:
    """What HiGHS ``h`` holds after its run: model status, columns, objective and bound."""
    status = h.getModelStatus()
    info = h.getInfo()
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    values = np.array(h.getSolution().col_value) if has_solution else None
    objective = float(info.objective_function_value) if has_solution else None
    if relax:
        # only a proven LP optimum bounds the MILP
        bound = objective if status == highspy.HighsModelStatus.kOptimal else None
    else:
        bound = float(info.mip_dual_bound)
    gap = float(info.mip_gap) if not relax and has_solution else None
    name = {
        highspy.HighsModelStatus.kOptimal: "optimal",
        highspy.HighsModelStatus.kTimeLimit: "time_limit",
        highspy.HighsModelStatus.kInfeasible: "infeasible",
    }.get(status, f"other: {h.modelStatusToString(status)}")
    if bound is not None and not np.isfinite(bound):
        bound = None
    return HighsOutcome(name, values, objective, bound, gap, run_s, pass_s)
