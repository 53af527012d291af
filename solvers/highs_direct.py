"""Solve :class:`MilpArrays` with HiGHS through highspy, fed numpy arrays directly.

A hard deadline: HiGHS checks its clock only between some of its steps, and some steps never
check it (the analytic centre it computes beside the root relaxation, a sub-MIP's presolve): in
development probes a HiGHS ``time_limit`` of 1.6 s on a 10,000 x 12 window ended after 12.8 s
(docs/scaling.md, "Time limits"). So :func:`solve_highs` runs HiGHS
in a helper thread (``run`` releases the GIL) and waits for it at most until its ``deadline``;
past it, HiGHS is told to stop (its interrupt callbacks) and left to finish in the background,
and the answer is what its callbacks saw by then: the last improving solution and dual bound.
The next run waits for such a straggler first (:func:`settle_stragglers`), so two HiGHS runs
never overlap; the interpreter's exit waits for it too (a non-daemon thread).

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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import highspy
import numpy as np
from numpy.typing import NDArray

from qlmio_opt.formulations.milp_arrays import MilpArrays

# Every HiGHS run uses one thread unless told otherwise. HiGHS is deterministic for a given
# thread count, not across counts: serial runs used its default (2 on the development machine)
# and parallel workers 1, and window_001 got two "optimal" assignments 4e-4 apart (7 of the 91
# committed windows both runs closed differed). HiGHS's branch and bound is serial, so one
# thread costs little; workers need 1 anyway (N workers on N cores). docs/scaling.md, "Threads".
HIGHS_THREADS = 1

T = TypeVar("T")
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
    run_s: float  # HiGHS's own run time (h.run()), or the wait for it when abandoned
    pass_s: float  # handing the arrays to HiGHS
    finished: bool = True  # False: the deadline came first; HiGHS still stops in the background


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


class HighsWatch:
    """HiGHS ``h``'s callbacks, shared with the thread that waits for it: a ``stop`` flag its
    interrupt checks obey, and the last improving solution and MIP dual bound it reported.

    Subscribed for the life of ``h`` (never unsubscribed: a HiGHS left to stop in the
    background still calls them).
    """

    def __init__(self, h: Any) -> None:
        self.stop = threading.Event()
        self.incumbent: NDArray[np.float64] | None = None
        self.bound: float | None = None
        for callback in _interrupt_callbacks(h):
            callback.subscribe(self._check)
        h.cbMipInterrupt.subscribe(self._note_bound)
        h.cbMipImprovingSolution.subscribe(self._note_solution)

    def _check(self, event: Any) -> None:
        if self.stop.is_set():
            event.interrupt()

    def _note_bound(self, event: Any) -> None:
        bound = float(getattr(event.data_out, "mip_dual_bound", np.nan))
        if np.isfinite(bound):
            self.bound = bound

    def _note_solution(self, event: Any) -> None:
        self.incumbent = np.array(event.data_out.mip_solution, dtype=float)


@contextmanager
def stop_on_sigint(stop: threading.Event) -> Iterator[None]:
    """Within the block, a SIGINT (Ctrl-C) sets ``stop`` (a :class:`HighsWatch`'s, so HiGHS
    stops at its next interrupt check); when the block ends, KeyboardInterrupt is raised if a
    SIGINT came.

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
        # must not raise: the main thread may be inside a HiGHS callback (a run without helper
        # thread, e.g. Pyomo's), where an exception would unwind through HiGHS's C++
        interrupted.set()
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():
        raise KeyboardInterrupt


_STRAGGLERS: list[threading.Thread] = []
_STRAGGLERS_LOCK = threading.Lock()


def settle_stragglers(deadline: float | None) -> bool:
    """Wait, at most until ``deadline`` (``time.perf_counter()`` seconds; None: as long as it
    takes), for HiGHS runs left to stop in the background; whether none is left."""
    with _STRAGGLERS_LOCK:
        while _STRAGGLERS:
            left = None if deadline is None else max(deadline - time.perf_counter(), 0.0)
            _STRAGGLERS[0].join(left)
            if _STRAGGLERS[0].is_alive():
                return False
            _STRAGGLERS.pop(0)
    return True


def run_until(
    run: Callable[[], T], watch: HighsWatch, deadline: float | None
) -> tuple[bool, T | None]:
    """Call ``run`` (a HiGHS run watched by ``watch``) in a helper thread and wait for it until
    ``deadline`` (None: until it ends): whether it ended, and what it returned. Past the
    deadline ``watch.stop`` is set and the run is left to stop at its next check in the
    background (:func:`settle_stragglers` waits for it).

    Raises
    ------
    KeyboardInterrupt
        A SIGINT came while waiting (main thread, default handler): HiGHS stopped at its next
        interrupt check, or is left stopping if the deadline came first.
    """
    done = threading.Event()
    answer: list[T] = []

    def target() -> None:
        try:
            answer.append(run())
        finally:
            done.set()

    thread = threading.Thread(target=target, name="qlmio-highs")
    thread.start()
    with stop_on_sigint(watch.stop):
        try:
            left = None if deadline is None else max(deadline - time.perf_counter(), 0.0)
            finished = done.wait(left)
        finally:
            if not done.is_set():
                watch.stop.set()
                with _STRAGGLERS_LOCK:
                    _STRAGGLERS.append(thread)
    return finished, (answer[0] if answer else None)


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
        use_scheduler_threads(int(threads))
        h.setOptionValue("threads", int(threads))
    for name, value in (options or {}).items():
        if h.setOptionValue(name, value) != highspy.HighsStatus.kOk:
            raise ValueError(f"HiGHS rejected option {name}={value!r}")
    return h


_SCHEDULER_THREADS: list[int] = []  # the thread count HiGHS's process-wide scheduler was made with


def use_scheduler_threads(threads: int) -> None:
    """Make HiGHS's process-wide task scheduler run ``threads`` threads.

    HiGHS builds it at its first run with that run's ``threads``; a later run asking for
    another count fails at once (model status "Not Set"). Rebuilt here when the count changes
    (after waiting for any run still stopping in the background).
    """
    if _SCHEDULER_THREADS and _SCHEDULER_THREADS[0] != threads:
        settle_stragglers(None)
        highspy.Highs.resetGlobalScheduler(True)
    _SCHEDULER_THREADS[:] = [threads]


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
    threads: int = HIGHS_THREADS,
    seed: int = 0,
    initial: NDArray[np.float64] | None = None,
    relax: bool = False,
    options: Mapping[str, bool | int | float | str] | None = None,
    deadline: float | None = None,
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
    deadline
        ``time.perf_counter()`` time by which to return whatever HiGHS is doing (None: wait for
        it). An outcome returned at the deadline has ``finished`` False, status
        ``"time_limit"``, and the last improving solution and dual bound HiGHS reported (its
        callbacks; no solution if it reported none); HiGHS stops in the background. A run still
        stopping in the background at the deadline means this one does not start (status
        ``"time_limit"``, no solution, ``run_s`` 0).

    Raises
    ------
    KeyboardInterrupt
        A SIGINT came while HiGHS ran (in the main thread): HiGHS stopped at its next
        interrupt check (:func:`stop_on_sigint`) and its partial answer is dropped.
    """
    start = time.perf_counter()
    if not settle_stragglers(deadline):
        return HighsOutcome("time_limit", None, None, None, None, 0.0, 0.0, finished=False)
    h = new_highs(
        time_limit=time_limit, mip_rel_gap=mip_rel_gap, threads=threads, seed=seed, options=options
    )
    pass_model(h, milp, relax=relax)
    if initial is not None and not relax:
        solution = highspy.HighsSolution()
        solution.col_value = np.asarray(initial, dtype=float)
        solution.value_valid = True
        h.setSolution(solution)
    passed = time.perf_counter()
    watch = HighsWatch(h)
    if not run_until(h.run, watch, deadline)[0]:
        return _abandoned_outcome(milp, watch, relax, time.perf_counter() - passed, passed - start)
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
                deadline=deadline,
            )
            return HighsOutcome(
                again.status,
                again.values,
                again.objective,
                again.bound,
                again.mip_gap,
                run_s + again.run_s,
                pass_s + again.pass_s,
                again.finished,
            )
    return outcome


def _abandoned_outcome(
    milp: MilpArrays, watch: HighsWatch, relax: bool, run_s: float, pass_s: float
) -> HighsOutcome:
    """A run left at its deadline: the last improving solution and MIP dual bound its
    callbacks reported (an LP relaxation reports neither)."""
    values = watch.incumbent
    if relax or values is None or values.shape != (milp.num_cols,):
        values = None
    objective = None if values is None else float(milp.col_cost @ values)
    bound = None if relax else watch.bound
    return HighsOutcome("time_limit", values, objective, bound, None, run_s, pass_s, False)


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
