"""One interface for every solver, and what a solver hands back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from qlmio_opt.domain.solution import Status
from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solvers.diagnose import why_not_allowed


@dataclass(frozen=True)
class SolverResult:
    """A solver's raw answer: node index per request (-1 = deferred) and what it knows.

    The objective is recomputed from the problem by the caller; a solver's own figure is kept
    only as ``reported_objective`` for comparison.
    """

    status: Status
    assignment: np.ndarray | None
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


class Solver(ABC):
    """Base class: ``solve(problem, *, time_limit, seed) -> SolverResult``."""

    name: str = ""
    description: str = ""

    @abstractmethod
    def solve(
        self, problem: Problem, *, time_limit: float | None = None, seed: int = 0
    ) -> SolverResult: ...

    def supports(self, problem: Problem) -> bool:
        """Whether this solver can take ``problem`` at all (all can, unless they say)."""
        return True


class Residual:
    """Remaining memory per node and bandwidth per link while a heuristic places requests."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.memory = problem.node_memory_gb.astype(float).copy()
        self.bandwidth = problem.link_capacity_megabits.astype(float).copy()

    def shortfall(self, r: int, n: int) -> str | None:
        """Why request ``r`` does not fit on node ``n`` now, or None if it fits."""
        p = self.problem
        need = p.memory_gb[r, n]
        if need > self.memory[n] + 1e-9:
            return (
                f'memory on "{p.node_ids[n]}" (needs {need:.3f} GB, {max(self.memory[n], 0):.3f} '
                "GB left)"
            )
        for k in p.path_links(r, n):
            if p.upload_megabits[r] > self.bandwidth[k] + 1e-9:
                return (
                    f'bandwidth on link "{p.link_ids[k]}" (needs {p.upload_megabits[r]:.2f} Mb, '
                    f"{max(self.bandwidth[k], 0):.2f} Mb left)"
                )
        return None

    def place(self, r: int, n: int) -> None:
        p = self.problem
        self.memory[n] -= p.memory_gb[r, n]
        self.bandwidth[p.path_links(r, n)] -= p.upload_megabits[r]


def explain_unplaceable(problem: Problem, r: int, residual: Residual) -> str:
    """A sentence saying why request ``r`` cannot go anywhere."""
    reasons = []
    for n in range(problem.num_nodes):
        if not problem.allowed[r, n]:
            reasons.append(
                f'"{problem.node_ids[n]}" not allowed ({why_not_allowed(problem, r, n)})'
            )
        else:
            reasons.append(residual.shortfall(r, n) or "?")
    return f'request "{problem.request_ids[r]}" fits on no node: ' + "; ".join(reasons)
