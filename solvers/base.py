"""One interface for every solver, and what a solver hands back."""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from qlmio_opt.domain.solution import Status
from qlmio_opt.formulations.problem import Problem


@dataclass(frozen=True)
class SolverResult:
    """A solver's raw answer: node index per request (-1 = deferred) and what it knows.

    The objective is recomputed from the problem by the caller; a solver's own figure is kept
    only as ``reported_objective`` for comparison.
    """

    status: Status
    assignment: NDArray[np.int64] | None
    bound: float | None = None
    reported_objective: float | None = None
    bound_source: str | None = None  # what proved ``bound``: see Solution.bound_source
    message: str | None = None
    stats: Mapping[str, float] = field(default_factory=dict)  # e.g. build_s, highs_run_s


def empty_window_result() -> SolverResult:
    """The answer to a window without requests: the empty assignment, optimal at cost 0."""
    return SolverResult(
        Status.OPTIMAL, np.zeros(0, dtype=np.int64), bound=0.0, reported_objective=0.0
    )


def deadline_after(time_limit: float | None) -> float:
    """The ``time.perf_counter()`` time ``time_limit`` seconds from now (inf: no limit)."""
    if time_limit is None or math.isinf(time_limit):
        return math.inf
    return time.perf_counter() + max(float(time_limit), 0.0)


def stopped_result(done: int, total: int) -> SolverResult:
    """The answer of a rule its time limit stopped after ``done`` of ``total`` requests: no
    assignment (a partial one would leave requests undecided)."""
    return SolverResult(
        Status.TIME_LIMIT,
        None,
        message=f"time limit: the rule had decided {done} of {total} requests",
    )


class Solver(ABC):
    """Base class: ``solve(problem, *, time_limit, seed) -> SolverResult``."""

    name: str = ""
    description: str = ""

    @abstractmethod
    def solve(
        self, problem: Problem, *, time_limit: float | None = None, seed: int = 0
    ) -> SolverResult: ...
