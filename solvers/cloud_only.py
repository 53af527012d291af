"""``cloud-only``: the exact optimiser restricted to the cloud nodes.

It is the fair reference for every latency-reduction claim: it runs the whole site's model (the
nodes' engines and live state, the congestion curves, the links) and balances the load over the
cloud nodes as well as the optimiser can, where ``all-cloud`` sends each request to its
individually fastest cloud node whatever the others do.
"""

from __future__ import annotations

from dataclasses import replace

from qlmio_opt.domain.solution import Status
from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solvers.base import Solver, SolverResult, empty_window_result
from qlmio_opt.solvers.exact import ExactHighs


def cloud_problem(problem: Problem) -> Problem:
    """``problem`` with every edge node disallowed."""
    return replace(problem, allowed=problem.allowed & ~problem.is_edge[None, :])


class CloudOnly(Solver):
    """:class:`~qlmio_opt.solvers.exact.ExactHighs` over the cloud nodes only.

    Its answer is optimal among cloud-only assignments, not for the window, so it reports
    ``feasible`` and no bound (the restricted model's bound does not bound the window's optimum).
    """

    name = "cloud-only"
    description = "exact MILP restricted to the cloud nodes (load-balanced reference)"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def solve(
        self, problem: Problem, *, time_limit: float | None = None, seed: int = 0
    ) -> SolverResult:
        if problem.num_requests == 0:
            return empty_window_result()
        result = ExactHighs(threads=self.threads).solve(
            cloud_problem(problem), time_limit=time_limit, seed=seed
        )
        status = Status.FEASIBLE if result.status is Status.OPTIMAL else result.status
        return replace(result, status=status, bound=None, bound_source=None)
