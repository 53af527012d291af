"""What an assignment built one request at a time uses of each node's memory and each link.

:class:`Loads` is the capacity tracker of the rule-based baselines and of the solvers' messages
(why a request fits nowhere). The greedy's searches keep their own per-move form
(:class:`~qlmio_opt.solvers.greedy_state.State`), for speed.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solvers.diagnose import why_not_allowed
from qlmio_opt.solvers.tuning import TOL

Resource = tuple[str, int]
"""``("memory", node)`` or ``("link", link)``."""


class Loads:
    """An assignment in the making, with the memory it holds per node and megabits per link.

    Every request starts deferred (``-1``); :meth:`move` places, moves or defers one.

    Attributes
    ----------
    assignment
        ``(R,)`` node index per request, ``-1`` while deferred.
    memory_gb
        ``(N,)`` GB of KV cache the placed requests hold on each node.
    megabits
        ``(K,)`` megabits the placed requests send across each link.
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.assignment = np.full(problem.num_requests, -1, dtype=np.int64)
        self.memory_gb = np.zeros(problem.num_nodes)
        self.megabits = np.zeros(len(problem.link_ids))

    def move(self, r: int, n: int) -> None:
        """Put request ``r`` on node ``n`` (``-1``: defer it)."""
        p = self.problem
        here = int(self.assignment[r])
        if here >= 0:
            self.memory_gb[here] -= p.memory_gb[r, here]
            self.megabits[p.path_links(r, here)] -= p.upload_megabits[r]
        if n >= 0:
            self.memory_gb[n] += p.memory_gb[r, n]
            self.megabits[p.path_links(r, n)] += p.upload_megabits[r]
        self.assignment[r] = n

    def memory_left(self) -> NDArray[np.float64]:
        """``(N,)`` GB still free on each node (``inf`` where unbounded, negative when over)."""
        return self.problem.node_memory_gb - self.memory_gb

    def has_memory(self, r: int, n: int) -> bool:
        """Whether node ``n`` has KV memory left for request ``r`` (links not checked)."""
        p = self.problem
        return bool(self.memory_gb[n] + p.memory_gb[r, n] <= p.node_memory_gb[n] + TOL)

    def shortfall(self, r: int, n: int) -> str | None:
        """Why request ``r`` does not fit on node ``n`` now (memory, then each link of its
        path), or None if it fits."""
        p = self.problem
        need = p.memory_gb[r, n]
        if not self.has_memory(r, n):
            left = max(p.node_memory_gb[n] - self.memory_gb[n], 0)
            return f'memory on "{p.node_ids[n]}" (needs {need:.3f} GB, {left:.3f} GB left)'
        for k in p.path_links(r, n):
            if self.megabits[k] + p.upload_megabits[r] > p.link_capacity_megabits[k] + TOL:
                left = max(p.link_capacity_megabits[k] - self.megabits[k], 0)
                return (
                    f'bandwidth on link "{p.link_ids[k]}" (needs {p.upload_megabits[r]:.2f} Mb, '
                    f"{left:.2f} Mb left)"
                )
        return None

    def fits(self, rows: NDArray[np.int64]) -> NDArray[np.bool_]:
        """``(len(rows), N)``: whether moving each request to each node keeps that node's memory
        and the links its new path adds within capacity (its current node counts as fitting)."""
        p = self.problem
        here = self.assignment[rows]
        memory_ok = self.memory_gb[None, :] + p.memory_gb[rows] <= p.node_memory_gb[None, :] + TOL
        routes = p.route_links[p.request_site[rows]]  # (rows, N, K)
        old = np.where(
            (here >= 0)[:, None], routes[np.arange(len(rows)), np.maximum(here, 0)], False
        )
        link_ok = (
            self.megabits[None, :] + p.upload_megabits[rows][:, None]
            <= p.link_capacity_megabits[None, :] + TOL
        )
        added = routes & ~old[:, None, :]
        return memory_ok & ~(added & ~link_ok[:, None, :]).any(axis=2)

    def worst_overload(self) -> Resource | None:
        """The resource most over its capacity (excess relative to capacity), or None."""
        p = self.problem
        candidates: list[tuple[float, str, int]] = []
        # a capacity near 0 (memory_gb or window_s of 1e-300) makes the relative excess inf:
        # still the worst overload, so the overflow is not worth a warning
        with np.errstate(over="ignore"):
            for n in range(p.num_nodes):
                cap = p.node_memory_gb[n]
                if np.isfinite(cap) and self.memory_gb[n] > cap + TOL:
                    candidates.append(((self.memory_gb[n] - cap) / cap, "memory", n))
            for k, cap in enumerate(p.link_capacity_megabits):
                if self.megabits[k] > cap + TOL:
                    candidates.append(((self.megabits[k] - cap) / cap, "link", k))
        if not candidates:
            return None
        _, kind, index = max(candidates, key=lambda c: c[0])
        return kind, index

    def users(self, resource: Resource) -> NDArray[np.int64]:
        """Requests placed on the node (memory) or routed across the link."""
        p = self.problem
        kind, index = resource
        placed = np.flatnonzero(self.assignment >= 0)
        if kind == "memory":
            return placed[self.assignment[placed] == index]
        return placed[p.route_links[p.request_site[placed], self.assignment[placed], index]]

    def quality_slack(self, gain: NDArray[np.float64]) -> float:
        """The quality floor's sum of ``gain`` (``Problem.floor_gain``) over the placed
        requests."""
        placed = np.flatnonzero(self.assignment >= 0)
        return float(gain[placed, self.assignment[placed]].sum())


def explain_unplaceable(problem: Problem, r: int, loads: Loads) -> str:
    """A sentence saying why request ``r`` cannot go anywhere, given what ``loads`` holds."""
    reasons = []
    for n in range(problem.num_nodes):
        if not problem.allowed[r, n]:
            reasons.append(
                f'"{problem.node_ids[n]}" not allowed ({why_not_allowed(problem, r, n)})'
            )
        else:
            reasons.append(loads.shortfall(r, n) or "?")
    return f'request "{problem.request_ids[r]}" fits on no node: ' + "; ".join(reasons)
