"""Rule-based policies: the baselines batch optimisation is measured against.

``all-cloud`` and ``all-edge`` apply their rule even when it breaks a capacity; the caller's
evaluation then reports the violated constraints (status ``infeasible``) with the assignment
kept, so the rule's cost is visible. ``latency-greedy`` respects every constraint.
"""

from __future__ import annotations

import numpy as np

from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solution import Status
from qlmio_opt.solvers.base import Residual, Solver, SolverResult, explain_unplaceable


def _arrival_order(problem: Problem) -> np.ndarray:
    wait = problem.components.get("wait_s")
    if wait is None or wait.size == 0:
        return np.arange(problem.num_requests)
    return np.argsort(-wait[:, 0], kind="stable")  # longest wait = earliest arrival first


class TierRule(Solver):
    """Every request to the lowest-latency allowed node of one tier, memory permitting."""

    edge: bool

    def solve(self, problem: Problem, *, time_limit=None, seed: int = 0) -> SolverResult:
        tier = problem.is_edge if self.edge else ~problem.is_edge
        residual = Residual(problem)
        assignment = np.full(problem.num_requests, -1, dtype=np.int64)
        for r in _arrival_order(problem):
            candidates = np.flatnonzero(problem.allowed[r] & tier)
            if len(candidates) == 0:
                kind = "edge" if self.edge else "cloud"
                return SolverResult(
                    Status.INFEASIBLE,
                    None,
                    message=f'request "{problem.request_ids[r]}" is allowed on no {kind} node',
                )
            candidates = candidates[np.argsort(problem.latency_s[r, candidates], kind="stable")]
            fits = [n for n in candidates if residual.memory[n] >= problem.memory_gb[r, n] - 1e-9]
            # The rule never leaves its tier: with no room it overloads the roomiest node.
            n = fits[0] if fits else candidates[np.argmax(residual.memory[candidates])]
            residual.place(r, n)
            assignment[r] = n
        return SolverResult(Status.FEASIBLE, assignment)


class AllCloud(TierRule):
    name = "all-cloud"
    description = "every request to its lowest-latency cloud node"
    edge = False


class AllEdge(TierRule):
    name = "all-edge"
    description = "every request to its lowest-latency edge node with memory left"
    edge = True


class LatencyGreedy(Solver):
    """In arrival order, each request to the lowest-latency node that still has room."""

    name = "latency-greedy"
    description = "arrival order, lowest predicted latency among nodes with room (capacity-aware)"

    def solve(self, problem: Problem, *, time_limit=None, seed: int = 0) -> SolverResult:
        residual = Residual(problem)
        assignment = np.full(problem.num_requests, -1, dtype=np.int64)
        latency = np.where(problem.allowed, problem.latency_s, np.inf)
        for r in _arrival_order(problem):
            order = np.argsort(latency[r], kind="stable")
            chosen = next(
                (
                    n
                    for n in order
                    if np.isfinite(latency[r, n]) and residual.shortfall(r, n) is None
                ),
                None,
            )
            if chosen is None:
                if problem.deferral_allowed:
                    continue
                return SolverResult(
                    Status.INFEASIBLE, None, message=explain_unplaceable(problem, r, residual)
                )
            residual.place(r, chosen)
            assignment[r] = chosen
        return SolverResult(Status.FEASIBLE, assignment)
