"""The greedy's construction for time limits too short for its priced start.

The priced start (the Lagrangian dual, its rounding and the greedy's move tables) takes about
0.02 s plus 1-2 us per request-node pair and cannot be interrupted: 0.2-0.3 s on a 10,000 x 12
window. When the time left is shorter (:func:`fits_priced_start`), the greedy answers with
:func:`quick_assignment` instead: each request takes its cheapest column (a node, or deferral)
among those with room left for it, priced with the node's congestion at its current count,
a block of requests at a time, then the quality floor is met by deferring requests that pull it
down. It is a few whole-array operations per block (45-55 ms at 10,000 x 12 at load average
1.4 on the shared 2-core machine, ``benchmarks/time_floor.py``'s ``quick ms``) and its answer is
checked against every constraint (:func:`~qlmio_opt.formulations.evaluation.evaluate`) before
it is returned; it has no lower bound and no local search.
"""

from __future__ import annotations

import numpy as np

from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solvers.greedy_state import BoolArray, FloatArray, IntArray
from qlmio_opt.solvers.tuning import (
    PRICED_START_ALWAYS_PAIRS,
    PRICED_START_S,
    PRICED_START_S_PER_PAIR,
    QUICK_BLOCKS,
    TOL,
)


def fits_priced_start(problem: Problem, seconds_left: float | None) -> bool:
    """Whether ``seconds_left`` (None: no limit) holds the priced start of ``problem``
    (:data:`~qlmio_opt.solvers.tuning.PRICED_START_S` plus
    :data:`~qlmio_opt.solvers.tuning.PRICED_START_S_PER_PAIR` per request-node pair), or the
    window is small enough that it always runs
    (:data:`~qlmio_opt.solvers.tuning.PRICED_START_ALWAYS_PAIRS`)."""
    pairs = problem.num_requests * problem.num_nodes
    if seconds_left is None or pairs <= PRICED_START_ALWAYS_PAIRS:
        return True
    return seconds_left >= PRICED_START_S + PRICED_START_S_PER_PAIR * pairs


def quick_assignment(problem: Problem) -> IntArray | None:
    """Node per request (-1 deferred) meeting every constraint, or None if this construction
    found none (the window may still have one).

    Requests are placed in blocks of about ``R / QUICK_BLOCKS``, the ones with the most to lose
    first (the largest gap between their two cheapest columns). Within a block each takes its
    cheapest column with room for it alone, and is kept there only while the block's
    requests before it on the same node and links still leave room; the others are placed
    again with the next block.
    """
    cost = problem.pair_cost()
    loads = _Loads(problem)
    extra = _MarginalCongestion(problem)
    assignment = np.full(problem.num_requests, -1, dtype=np.int64)
    pending = _most_to_lose_first(cost, problem.deferral_cost())
    block = max(1, -(-problem.num_requests // QUICK_BLOCKS))
    while pending.size:
        rows, pending = pending[:block], pending[block:]
        nodes, alternative, defer_next = _cheapest_with_room(problem, cost, loads, extra, rows)
        if (nodes == _NOWHERE).any():
            return None  # deferral is off and some request fits nowhere any more
        placing = nodes >= 0
        rows, nodes = rows[placing], nodes[placing]
        in_turn = _worth_its_turn(
            extra, loads.counts, cost[rows, nodes], nodes, alternative[placing]
        )
        kept = in_turn.copy()
        kept[in_turn] = loads.keep_in_order(rows[in_turn], nodes[in_turn])
        assignment[rows[kept]] = nodes[kept]
        # one that prefers deferral to its node's congestion in its turn is deferred (counts
        # only grow: it would prefer it later too); the others try again with the next block
        retry = (in_turn & ~kept) | (~in_turn & ~defer_next[placing])
        pending = np.concatenate([rows[retry], pending])
    if not _meet_quality_floor(problem, assignment):
        return None
    return None if evaluate(problem, assignment).violations else assignment


_NOWHERE = -2  # no column at all: no node with room and deferral off


def _most_to_lose_first(cost: FloatArray, deferral_cost: float) -> IntArray:
    """Requests by decreasing gap between their two cheapest columns (stable)."""
    columns = np.concatenate([cost, np.full((cost.shape[0], 1), deferral_cost)], axis=1)
    if columns.shape[1] < 2:
        return np.arange(cost.shape[0])
    two = np.partition(columns, 1, axis=1)[:, :2]
    with np.errstate(invalid="ignore"):
        regret = two[:, 1] - two[:, 0]
    return np.argsort(-np.nan_to_num(regret, nan=0.0, posinf=np.finfo(float).max), kind="stable")


def _cheapest_with_room(
    problem: Problem, cost: FloatArray, loads: _Loads, extra: _MarginalCongestion, rows: IntArray
) -> tuple[IntArray, FloatArray, BoolArray]:
    """Each request's cheapest node with room for it alone, its congestion priced at the
    node's current count (-1 where deferral is cheaper, :data:`_NOWHERE` where nothing is
    possible), the cost of its next best column (deferral included) and whether that is
    deferral."""
    marginal = extra.at(np.arange(problem.num_nodes), loads.counts)
    columns = np.full((rows.size, problem.num_nodes + 1), problem.deferral_cost())
    columns[:, :-1] = np.where(loads.room_for(rows), cost[rows] + marginal, np.inf)
    two = np.argpartition(columns, 1, axis=1)[:, :2] if columns.shape[1] > 1 else None
    every = np.arange(rows.size)
    best = np.argmin(columns, axis=1)
    if two is None:
        alternative = np.full(rows.size, np.inf)
    else:
        other = np.where(two[:, 0] == best, two[:, 1], two[:, 0])
        alternative = columns[every, other]
    nodes = np.where(best == problem.num_nodes, -1, best)
    nodes = np.where(np.isfinite(columns[every, best]), nodes, _NOWHERE)
    defer_next = np.zeros(rows.size, dtype=bool) if two is None else other == problem.num_nodes
    return nodes, alternative, defer_next


def _worth_its_turn(
    extra: _MarginalCongestion,
    counts: IntArray,
    pair_cost: FloatArray,
    nodes: IntArray,
    alternative: FloatArray,
) -> BoolArray:
    """Which requests of a block still prefer their node once the block's requests before them
    on it are counted: on each node, by decreasing gain over their next best column, the k-th
    pays the congestion of count ``counts + k`` (the first always stays)."""
    order = np.lexsort((pair_cost - alternative, nodes))
    first = np.searchsorted(nodes[order], nodes[order], side="left")
    rank = np.empty_like(nodes)
    rank[order] = np.arange(nodes.size) - first
    marginal = extra.at(nodes, counts[nodes] + rank)
    return (rank == 0) | (pair_cost + marginal <= alternative)


class _MarginalCongestion:
    """What one more request costs in congestion on a node holding ``m``: ``kappa (E_n(m + 1)
    - E_n(m))``, read from a table (the last slope beyond a curve's end)."""

    def __init__(self, problem: Problem) -> None:
        steps = [np.diff(np.asarray(c.values, dtype=float)) for c in problem.congestion_curves]
        steps = [d if d.size else np.zeros(1) for d in steps]
        self.last = np.array([d.size - 1 for d in steps], dtype=np.int64)
        self.table = np.zeros((len(steps), int(self.last.max(initial=0)) + 1))
        for n, d in enumerate(steps):
            self.table[n, : d.size] = d
        self.table *= problem.latency_cost_weight

    def at(self, nodes: IntArray, counts: IntArray) -> FloatArray:
        """The cost of one more request on each of ``nodes`` holding ``counts``."""
        return self.table[nodes, np.minimum(counts, self.last[nodes])]


class _Loads:
    """Memory left per node, megabits left per link and requests per node, block by block."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.memory_left = np.asarray(problem.node_memory_gb, dtype=float).copy()
        self.link_left = np.asarray(problem.link_capacity_megabits, dtype=float).copy()
        self.counts = np.zeros(problem.num_nodes, dtype=np.int64)

    def room_for(self, rows: IntArray) -> BoolArray:
        """``(len(rows), N)`` whether each node (and its path) has room for each request."""
        p = self.problem
        memory = p.memory_gb[rows] <= self.memory_left + TOL
        routes = p.route_links  # (S, N, K)
        if routes.shape[2] == 0:
            return memory & p.allowed[rows]
        path_left = np.where(routes, self.link_left, np.inf).min(axis=2)  # (S, N)
        links = p.upload_megabits[rows, None] <= path_left[p.request_site[rows]] + TOL
        return memory & links & p.allowed[rows]

    def keep_in_order(self, rows: IntArray, nodes: IntArray) -> BoolArray:
        """Which of ``rows`` (placed on ``nodes``) fit together, in order: a request is kept
        while the memory of its node and the megabits of its links, counted over the block's
        requests up to it (kept or not, so the test is conservative), stay within what is
        left. The kept ones are added to the loads."""
        p = self.problem
        if rows.size == 0:
            return np.zeros(0, dtype=bool)
        on_node = np.zeros((rows.size, p.num_nodes))
        on_node[np.arange(rows.size), nodes] = p.memory_gb[rows, nodes]
        memory_ok = np.cumsum(on_node, axis=0)[np.arange(rows.size), nodes] <= (
            self.memory_left[nodes] + TOL
        )
        crossing = p.route_links[p.request_site[rows], nodes]  # (B, K)
        megabits = np.cumsum(crossing * p.upload_megabits[rows, None], axis=0)
        links_ok = ((megabits <= self.link_left + TOL) | ~crossing).all(axis=1)
        kept = memory_ok & links_ok
        self.memory_left -= np.bincount(
            nodes[kept], weights=p.memory_gb[rows[kept], nodes[kept]], minlength=p.num_nodes
        )
        self.link_left -= p.upload_megabits[rows[kept]] @ crossing[kept]
        self.counts += np.bincount(nodes[kept], minlength=p.num_nodes)
        return kept


def _meet_quality_floor(problem: Problem, assignment: IntArray) -> bool:
    """Defer placed requests that pull the quality floor's sum below zero, the worst first,
    until it holds (in place); whether it holds at the end."""
    if problem.floor_gain is None:
        return True
    placed = np.flatnonzero(assignment >= 0)
    gain = problem.floor_gain[placed, assignment[placed]]
    deficit = -float(gain.sum())
    if deficit <= TOL:
        return True
    if not problem.deferral_allowed:
        return False
    worst = np.argsort(gain, kind="stable")
    worst = worst[gain[worst] < 0]
    covered = np.cumsum(-gain[worst])
    enough = int(np.searchsorted(covered, deficit - TOL)) + 1
    if enough > worst.size:
        return False
    assignment[placed[worst[:enough]]] = -1
    return True
