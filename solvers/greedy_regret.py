"""A second start for the greedy: regret-based construction in the Martello-Toth (MTHG) family.

The priced rounding (:mod:`qlmio_opt.solvers.greedy_rounding`) places requests by the
relaxation's weights, so on tight windows (every node nearly full, deferral off) it can leave a
few requests that fit nowhere, and the repair then cannot always move the others out of their
way. The regret construction of Martello and Toth's heuristic for the generalized assignment
problem (*Knapsack Problems*, 1990, section 7.4) aims at feasibility first: for every request
still open it takes the nodes with room for it, its best node by a desirability measure and
its *regret*, how much worse its second-best node with room is (unbounded when only one node
has room). The request with the largest regret is placed on its best node, since waiting would
cost it most, and the loads are updated; repeat until every request is placed.

Desirability measures (:data:`MEASURES`), each a construction of its own, the best kept:

* ``"cost"``: minus the pair cost;
* ``"cost_per_use"``: the pair's saving against the window's dearest pair per unit of relative
  capacity it uses (its memory as a share of the node's, its upload as a share of each binding
  link on its path): cheap pairs that use little;
* ``"use"``: minus the relative capacity used: the measure that keeps most room.

If none of them can be repaired to feasibility, the greedy restarts the construction with
randomly perturbed desirabilities (:func:`perturbed_columns`, seeded by the solve's seed) while
its budget allows.

Only memory and the links that can bind are checked; the quality floor and congestion are left
to the repair and local search that follow. A request with no node with room when its turn
comes is left open (deferral's column); the caller hands the result to the same repair.

The loads only grow, so a pair that stops fitting never fits again. Each node keeps its
requests sorted by their demand on it, and each (site, node) its site's requests sorted by
upload, so a pointer finds the pairs that stopped fitting after each placement; only requests
whose best or second-best node stopped fitting get their regret recomputed, and the open
requests wait in a heap by regret: about ``R log R`` steps in all rather than ``R^2 N``.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable

import numpy as np

from qlmio_opt.solvers.greedy_state import BoolArray, FloatArray, IntArray, State, Window
from qlmio_opt.solvers.tuning import (
    REGRET_CLOCK_EVERY,
    REGRET_PERTURBATION_SIGMA,
    REGRET_WORK,
    TINY,
    TOL,
)

MEASURES = ("cost", "cost_per_use", "use")


def regret_columns(window: Window, measure: str, deadline: float | None = None) -> IntArray:
    """Columns of the regret construction under ``measure`` (deferral's column: left open,
    which every request still open at ``deadline`` is)."""
    return _Construction(window, desirability(window, measure)).run(deadline)


def regret_start(window: Window, deadline: float | None = None) -> IntArray:
    """The best regret construction: of those that place every request, the least objective;
    if none does, the one that leaves the fewest open (then least objective), with each open
    request on the column of its least pair cost, for the repair to fix."""
    best_key: tuple[int, float] | None = None
    best = np.zeros(0, dtype=np.int64)
    for measure in MEASURES:
        columns = regret_columns(window, measure, deadline)
        open_rows = columns == window.defer
        if not window.can_defer:
            columns = np.where(open_rows, np.argmin(window.cost, axis=1), columns)
        key = (int(open_rows.sum()), State(window, columns).value)
        if best_key is None or key < best_key:
            best_key, best = key, columns
    return best


def perturbed_columns(
    window: Window, attempt: int, rng: np.random.Generator, deadline: float | None = None
) -> IntArray:
    """A restart: the regret construction under measure ``attempt`` (cycling through
    :data:`MEASURES`) with every desirability's magnitude scaled by a random log-normal factor
    (spread :data:`~qlmio_opt.solvers.tuning.REGRET_PERTURBATION_SIGMA`), so that ties and
    near-ties fall another way."""
    value = desirability(window, MEASURES[attempt % len(MEASURES)])
    noise = np.exp(rng.normal(0.0, REGRET_PERTURBATION_SIGMA, value.shape))
    return _Construction(window, value * noise).run(deadline)


def construction_work(window: Window) -> float:
    """Work units one construction is charged
    (:data:`~qlmio_opt.solvers.tuning.REGRET_WORK`)."""
    overhead, per_pair = REGRET_WORK
    return overhead + per_pair * window.num_requests * window.num_nodes


def relative_use(window: Window) -> FloatArray:
    """``(R, N)`` each pair's use of the capacities that can bind, each as a share of it."""
    num_n = window.num_nodes
    cap = window.memory_cap[:num_n]
    bounded = np.isfinite(cap)
    use = np.where(
        bounded, window.memory[:, :num_n] / np.maximum(np.where(bounded, cap, 1.0), TINY), 0.0
    )
    if len(window.links):
        share = window.upload[:, None] / np.maximum(window.link_cap, TINY)[None, :]  # (R, L)
        use = use + np.einsum("rnl,rl->rn", window.crossing[:, :num_n], share)
    return use


def desirability(window: Window, measure: str) -> FloatArray:
    """``(R, N)`` how much each request wants each node under ``measure`` (higher is better;
    ``-inf`` where the pair is not allowed)."""
    cost = window.cost[:, : window.num_nodes]
    finite = np.isfinite(cost)
    if measure == "cost":
        value = -cost
    elif measure == "use":
        value = -relative_use(window)
    elif measure == "cost_per_use":
        # the saving against the dearest allowed pair, plus one typical spread so that the
        # dearest pair still counts, per unit of relative capacity used
        allowed = cost[finite]
        top = float(allowed.max()) if allowed.size else 0.0
        spread = float(allowed.std()) if allowed.size else 0.0
        saving = top - cost + max(spread, TINY)
        value = saving / np.maximum(relative_use(window), TINY)
    else:
        raise ValueError(f"unknown desirability measure {measure!r} (known: {', '.join(MEASURES)})")
    return np.where(finite, value, -np.inf)


class _Construction:
    """One regret construction: the loads, which pairs still fit, each open request's best and
    second-best node and its regret (``-inf`` once it is placed or fits nowhere)."""

    def __init__(self, window: Window, value: FloatArray) -> None:
        w = window
        num_r, num_n = w.num_requests, w.num_nodes
        self.w, self.value = w, value
        self.memory = w.memory[:, :num_n]
        self.memory_left = w.memory_cap[:num_n].astype(float).copy()
        self.link_left = w.link_cap.astype(float).copy()
        self.paths = w.paths[:, :num_n, :]  # (S, N, L)
        self.routed: BoolArray = np.asarray(
            self.paths.any(axis=2)
        )  # (S, N) whether a binding link is on the path
        self.fits: BoolArray = np.isfinite(value)
        self.columns = np.full(num_r, w.defer, dtype=np.int64)
        # per node: requests by demand, largest first, and how many of them no longer fit
        self.by_memory = np.argsort(-self.memory, axis=0, kind="stable").T  # (N, R)
        self.memory_cut = np.zeros(num_n, dtype=np.int64)
        # per site: its requests by upload, largest first; per (site, node) how many no longer fit
        self.by_upload = [
            rows[np.argsort(-w.upload[rows], kind="stable")]
            for rows in (np.flatnonzero(w.site == s) for s in range(w.paths.shape[0]))
        ]
        self.upload_cut = np.zeros(self.routed.shape, dtype=np.int64)
        self.best = np.zeros(num_r, dtype=np.int64)
        self.second = np.zeros(num_r, dtype=np.int64)
        self.regret = np.zeros(num_r)
        self.heap: list[tuple[float, int]] = []
        self._advance_memory(range(num_n))
        self._advance_links(self.routed)
        self._rank(np.arange(num_r))

    def run(self, deadline: float | None = None) -> IntArray:
        """Place requests by largest regret (ties: lowest index) until none is open, or until
        ``deadline`` (``time.perf_counter()``) passes; return the columns.

        The open requests sit in a heap of ``(-regret, request)``; an entry whose regret has
        changed since (the request was re-ranked, or placed) is skipped when it comes up.
        """
        regret, heap = self.regret, self.heap
        placed = 0
        while heap:
            minus, r = heapq.heappop(heap)
            if -minus != regret[r]:
                continue  # stale: re-ranked (a fresh entry is in the heap) or placed
            self._place(r, int(self.best[r]))
            placed += 1
            if (
                deadline is not None
                and placed % REGRET_CLOCK_EVERY == 0
                and time.perf_counter() > deadline
            ):
                break
        return self.columns

    def _rank(self, rows: IntArray) -> None:
        """Best and second-best node with room, and the regret, of the open ``rows``: infinite
        with one node with room, ``-inf`` (closed, left open on deferral's column) with none."""
        if not len(rows):
            return
        index = np.arange(len(rows))
        value = np.where(self.fits[rows], self.value[rows], -np.inf)
        best = np.argmax(value, axis=1)
        top = value[index, best]
        value[index, best] = -np.inf
        second = np.argmax(value, axis=1)
        runner_up = value[index, second]
        self.best[rows], self.second[rows] = best, second
        with np.errstate(invalid="ignore"):
            regret = np.where(np.isfinite(runner_up), top - runner_up, np.inf)
        regret = np.where(np.isfinite(top), regret, -np.inf)
        self.regret[rows] = regret
        live = np.isfinite(top)
        for minus, r in zip((-regret[live]).tolist(), rows[live].tolist(), strict=True):
            heapq.heappush(self.heap, (minus, r))

    def _place(self, r: int, n: int) -> None:
        """Put request ``r`` on node ``n``, update the loads and re-rank the open requests whose
        best or second-best node stopped fitting."""
        w = self.w
        self.columns[r] = n
        self.regret[r] = -np.inf
        self.memory_left[n] -= self.memory[r, n]
        lost = self._advance_memory([n])
        crossed = self.paths[w.site[r], n]
        if crossed.any():
            self.link_left[crossed] -= w.upload[r]
            lost += self._advance_links(np.asarray(self.paths[:, :, crossed].any(axis=2)))
        hit = [gone[(self.best[gone] == node) | (self.second[gone] == node)] for gone, node in lost]
        if hit:
            rows = np.unique(np.concatenate(hit))
            self._rank(rows[self.regret[rows] > -np.inf])

    def _advance_memory(self, nodes: Iterable[int]) -> list[tuple[IntArray, int]]:
        """The requests that stopped fitting in the memory of each of ``nodes``, marked in
        ``fits``: ``(requests, node)`` pairs."""
        lost = []
        for n in nodes:
            order, cut, left = self.by_memory[n], int(self.memory_cut[n]), self.memory_left[n]
            demand = self.memory[:, n]
            end = cut
            while end < len(order) and demand[order[end]] > left + TOL:
                end += 1
            if end > cut:
                gone = order[cut:end]
                self.fits[gone, n] = False
                self.memory_cut[n] = end
                lost.append((gone, n))
        return lost

    def _advance_links(self, touched: BoolArray) -> list[tuple[IntArray, int]]:
        """The requests that stopped fitting on a link of their path to a node, for the
        ``(site, node)`` pairs ``touched``, marked in ``fits``: ``(requests, node)`` pairs."""
        lost = []
        upload = self.w.upload
        for s, n in zip(*np.nonzero(touched & self.routed), strict=True):
            room = float(self.link_left[self.paths[s, n]].min())
            order, cut = self.by_upload[s], int(self.upload_cut[s, n])
            end = cut
            while end < len(order) and upload[order[end]] > room + TOL:
                end += 1
            if end > cut:
                gone = order[cut:end]
                self.fits[gone, n] = False
                self.upload_cut[s, n] = end
                lost.append((gone, int(n)))
        return lost
