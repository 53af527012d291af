"""Rule-based policies: the baselines batch optimisation is measured against.

``all-cloud`` and ``all-edge`` apply their rule even when it breaks a capacity; the caller's
evaluation then reports the violated constraints (status ``infeasible``) with the assignment
kept, so the rule's cost is visible. ``latency-greedy`` respects every constraint.

``random``, ``round-robin``, ``quality-greedy`` and ``threshold`` are rules too: each ranks a
request's allowed nodes its own way and takes the first that still has KV memory for it (see
:class:`RankingRule` for what happens when none has). They never look at link bandwidth, so they
may overload a link; the evaluation reports it. ``per-request`` gives each request its own
cheapest pair and then repairs the capacities and the quality floor, so it is feasible or says
why not.

Every rule checks its time limit between requests (and between repair moves): a rule the limit
stops answers ``time_limit`` without an assignment (docs/scaling.md, "Time limits").
"""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from qlmio_opt.domain.solution import Status
from qlmio_opt.formulations.evaluation import floor_words
from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solvers.base import (
    Solver,
    SolverResult,
    deadline_after,
    empty_window_result,
    stopped_result,
)
from qlmio_opt.solvers.capacity import Loads, Resource, explain_unplaceable
from qlmio_opt.solvers.tuning import THRESHOLD_MARGIN, TOL

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def _arrival_order(problem: Problem) -> IntArray:
    """Request indices, earliest arrival (longest wait) first; index order without waits."""
    wait = problem.components.get("wait_s")
    if wait is None or wait.size == 0:
        return np.arange(problem.num_requests)
    return np.argsort(-wait[:, 0], kind="stable")  # longest wait = earliest arrival first


class TierRule(Solver):
    """Every request to the lowest-latency allowed node of one tier, memory permitting."""

    edge: bool

    def solve(
        self, problem: Problem, *, time_limit: float | None = None, seed: int = 0
    ) -> SolverResult:
        if problem.num_requests == 0:
            return empty_window_result()
        deadline = deadline_after(time_limit)
        tier = problem.is_edge if self.edge else ~problem.is_edge
        loads = Loads(problem)
        for done, r in enumerate(_arrival_order(problem).tolist()):
            if time.perf_counter() > deadline:
                return stopped_result(done, problem.num_requests)
            candidates = np.flatnonzero(problem.allowed[r] & tier)
            if len(candidates) == 0:
                kind = "edge" if self.edge else "cloud"
                return SolverResult(
                    Status.INFEASIBLE,
                    None,
                    message=f'request "{problem.request_ids[r]}" is allowed on no {kind} node',
                )
            candidates = candidates[np.argsort(problem.latency_s[r, candidates], kind="stable")]
            fits = [n for n in candidates.tolist() if loads.has_memory(r, n)]
            # The rule never leaves its tier: with no room it overloads the roomiest node.
            n = fits[0] if fits else int(candidates[np.argmax(loads.memory_left()[candidates])])
            loads.move(r, n)
        return SolverResult(Status.FEASIBLE, loads.assignment)


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

    def solve(
        self, problem: Problem, *, time_limit: float | None = None, seed: int = 0
    ) -> SolverResult:
        if problem.num_requests == 0:
            return empty_window_result()
        deadline = deadline_after(time_limit)
        loads = Loads(problem)
        latency = np.where(problem.allowed, problem.latency_s, np.inf)
        for done, r in enumerate(_arrival_order(problem).tolist()):
            if time.perf_counter() > deadline:
                return stopped_result(done, problem.num_requests)
            order = np.argsort(latency[r], kind="stable").tolist()
            chosen = next(
                (n for n in order if np.isfinite(latency[r, n]) and loads.shortfall(r, n) is None),
                None,
            )
            if chosen is None:
                if problem.deferral_allowed:
                    continue
                return SolverResult(
                    Status.INFEASIBLE, None, message=explain_unplaceable(problem, r, loads)
                )
            loads.move(r, chosen)
        return SolverResult(Status.FEASIBLE, loads.assignment)


# -- rules that rank the allowed nodes ----------------------------------------------------------


class RankingRule(Solver):
    """In arrival order, each request to the first node of its rule's ranking that has room.

    A subclass ranks a request's allowed nodes (:meth:`ranking`). The rule respects node memory
    as a serving engine's admission check would: nodes without KV memory left for the request
    are skipped. When none of the ranked nodes has room, the request is deferred if the window
    allows deferral (that is what deferral is for); otherwise the rule is applied anyway and the
    request goes to the first node of its ranking, overloading it, and the caller's evaluation
    reports the broken memory constraint. Link bandwidth is not observed (a dispatcher does not
    see the window's link budget), so a rule may overload a link; the evaluation reports that too.
    A request allowed on no node is deferred when deferral is on, else the window is reported
    infeasible naming it.
    """

    def ranking(self, problem: Problem, r: int, nodes: IntArray) -> list[int]:
        """The allowed ``nodes`` of request ``r``, best first."""
        raise NotImplementedError

    def start(self, problem: Problem, seed: int) -> None:
        """Reset per-solve state (random generator, cursor)."""

    def placed(self, problem: Problem, r: int, n: int) -> None:
        """Hook called after request ``r`` is placed on node ``n``."""

    def solve(
        self, problem: Problem, *, time_limit: float | None = None, seed: int = 0
    ) -> SolverResult:
        if problem.num_requests == 0:
            return empty_window_result()
        deadline = deadline_after(time_limit)
        self.start(problem, seed)
        loads = Loads(problem)
        for done, r in enumerate(_arrival_order(problem).tolist()):
            if time.perf_counter() > deadline:
                return stopped_result(done, problem.num_requests)
            nodes = np.flatnonzero(problem.allowed[r])
            if len(nodes) == 0:
                if problem.deferral_allowed:
                    continue
                return SolverResult(
                    Status.INFEASIBLE,
                    None,
                    message=explain_unplaceable(problem, r, Loads(problem)),
                )
            ranked = self.ranking(problem, r, nodes)
            room = [n for n in ranked if loads.has_memory(r, n)]
            if room:
                n = room[0]
            elif problem.deferral_allowed:
                continue
            else:
                n = ranked[0]  # the rule's own choice, memory or not: the evaluation reports it
            loads.move(r, n)
            self.placed(problem, r, n)
        return SolverResult(Status.FEASIBLE, loads.assignment)


class RandomRule(RankingRule):
    """Each request to a uniformly random allowed node that has memory for it.

    Memory: respected as in :class:`RankingRule` (a random dispatcher in front of serving
    engines that turn a request away when its KV cache does not fit). The choice is uniform over
    the allowed nodes with room; with none, the request is deferred when allowed, else sent to a
    uniformly random allowed node regardless. Reproducible: the generator is seeded by ``seed``
    (the solve's, unless one is given here).
    """

    name = "random"
    description = "each request to a uniformly random allowed node with memory left (seeded)"

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def start(self, problem: Problem, seed: int) -> None:
        self._rng = np.random.default_rng(self.seed if self.seed is not None else seed)

    def ranking(self, problem: Problem, r: int, nodes: IntArray) -> list[int]:
        # a random order of the allowed nodes: its first node with room is uniform among them
        return [int(n) for n in self._rng.permutation(nodes)]


class RoundRobin(RankingRule):
    """The nodes in turn, in arrival order, skipping nodes a request may not use.

    A cursor walks the node list cyclically; each request takes the first node from the cursor
    on that is allowed for it and has memory for it, and the cursor moves past that node. Memory:
    respected as in :class:`RankingRule` (a full node is skipped like an ineligible one, as a
    load balancer skips a backend that refuses work); with no allowed node with room, the
    request is deferred when allowed, else it takes the next allowed node in turn regardless.
    """

    name = "round-robin"
    description = "allowed nodes in turn, in arrival order, skipping nodes without memory left"

    def start(self, problem: Problem, seed: int) -> None:
        self._cursor = 0

    def ranking(self, problem: Problem, r: int, nodes: IntArray) -> list[int]:
        count = problem.num_nodes
        return sorted((int(n) for n in nodes), key=lambda n: (n - self._cursor) % count)

    def placed(self, problem: Problem, r: int, n: int) -> None:
        self._cursor = (n + 1) % problem.num_nodes


class QualityGreedy(RankingRule):
    """Each request to its highest-quality allowed node (ties: lower latency, then node order).

    Memory: respected as in :class:`RankingRule`: when the best node is full the request spills to
    the next best with room (deferred when nothing has room and deferral is on, else placed on
    its best node regardless). Bandwidth is ignored, so on thin uplinks it overloads links
    towards the (usually higher-quality) cloud; the evaluation reports them.
    """

    name = "quality-greedy"
    description = "each request to its highest-quality allowed node with memory left"

    def ranking(self, problem: Problem, r: int, nodes: IntArray) -> list[int]:
        return sorted(
            (int(n) for n in nodes),
            key=lambda n: (-problem.quality[r, n], problem.latency_s[r, n], n),
        )


class Threshold(RankingRule):
    """Edge when it is good enough, else the cloud.

    A request goes to its best edge node (highest predicted quality; ties: lower latency) when
    that quality is at least its best cloud quality less ``margin`` (default 0.05); otherwise to
    its lowest-latency cloud node. A request no cloud node may take counts any edge node as good
    enough; one no edge node may take goes to the cloud.

    Memory: respected as in :class:`RankingRule`: a full edge node is skipped for the next edge
    node that also clears the bar, then for the cloud nodes by latency (the usual offload when
    the edge is busy). Edge nodes below the bar are never used for a request a cloud node may
    take. With no room on any of those nodes the request is deferred when allowed, else sent
    where the rule points regardless. The bar is compared with a 1e-9 tolerance, so that
    ``0.85 >= 0.9 - 0.05`` holds in floating point.
    """

    name = "threshold"
    description = "edge when its quality is within a margin of the cloud's, else the cloud"

    def __init__(self, margin: float = THRESHOLD_MARGIN) -> None:
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)

    def ranking(self, problem: Problem, r: int, nodes: IntArray) -> list[int]:
        q, lat = problem.quality[r], problem.latency_s[r]
        edge = [int(n) for n in nodes if problem.is_edge[n]]
        cloud = sorted((int(n) for n in nodes if not problem.is_edge[n]), key=lambda n: (lat[n], n))
        bar = max((q[n] for n in cloud), default=-np.inf) - self.margin - TOL
        good = sorted((n for n in edge if q[n] >= bar), key=lambda n: (-q[n], lat[n], n))
        return good + cloud  # with no cloud node every edge node clears the bar


# -- per-request optimum, then repaired ---------------------------------------------------------


class PerRequest(Solver):
    """Each request's own cheapest pair, ignoring coupling, then repaired to feasibility.

    Step 1: every request takes the pair of least :meth:`Problem.pair_cost` (no congestion, no
    capacities), or is deferred when deferral is on and costs less than its cheapest pair.
    Step 2: while a node's memory or a link's bandwidth is over its capacity (the worst first,
    relative to its capacity), the request using it that is cheapest to move (least increase of
    its own pair cost; ties: the one freeing most, then the lower index) moves to another allowed
    node that has room and whose path avoids the over-full link, or is deferred when deferral is
    on. A move never overloads anything else, so the total overload only falls. Step 3
    (``quality_floor`` only): while ``sum (Q - T)`` over the placed requests is negative, the move
    with the least cost increase per unit of quality gained is made: to a better node with room,
    the deferral of a request below the target, or the placement of a deferred request above it.
    When no move is left the window is reported infeasible with a message naming the constraint
    and the requests it holds.
    """

    name = "per-request"
    description = "each request's own cheapest pair, then moved off over-full nodes and links"

    def solve(
        self, problem: Problem, *, time_limit: float | None = None, seed: int = 0
    ) -> SolverResult:
        if problem.num_requests == 0:
            return empty_window_result()
        deadline = deadline_after(time_limit)
        cost = problem.pair_cost()
        defer_cost = problem.deferral_cost()
        loads = Loads(problem)
        for r in range(problem.num_requests):
            if time.perf_counter() > deadline:
                return stopped_result(r, problem.num_requests)
            if not problem.allowed[r].any():
                if problem.deferral_allowed:
                    continue
                return SolverResult(
                    Status.INFEASIBLE,
                    None,
                    message=explain_unplaceable(problem, r, Loads(problem)),
                )
            n = int(np.argmin(cost[r]))
            if not defer_cost < cost[r, n]:
                loads.move(r, n)
        while (over := loads.worst_overload()) is not None:
            if time.perf_counter() > deadline:
                return _stopped_repairing(problem)
            move = _cheapest_relief(problem, loads, cost, defer_cost, over)
            if move is None:
                return SolverResult(Status.INFEASIBLE, None, message=_stuck_message(loads, over))
            loads.move(*move)
        if problem.floor_gain is not None:
            message = _raise_quality(problem, loads, cost, defer_cost, problem.floor_gain, deadline)
            if message == _OUT_OF_TIME:
                return _stopped_repairing(problem)
            if message is not None:
                return SolverResult(Status.INFEASIBLE, None, message=message)
        return SolverResult(Status.FEASIBLE, loads.assignment.copy())


_OUT_OF_TIME = "time limit"


def _stopped_repairing(problem: Problem) -> SolverResult:
    """The time limit stopped the repair: no assignment (the rule's is not feasible yet)."""
    return SolverResult(
        Status.TIME_LIMIT,
        None,
        message=f"time limit: the rule's repair of its {problem.num_requests} requests had not "
        "ended",
    )


def _cheapest_relief(
    problem: Problem, loads: Loads, cost: FloatArray, defer_cost: float, over: Resource
) -> tuple[int, int] | None:
    """The cheapest move of a request off the over-full resource ``over``."""
    kind, index = over
    users = loads.users(over)
    here = loads.assignment[users]
    ok = problem.allowed[users] & loads.fits(users)
    ok[np.arange(len(users)), here] = False
    if kind == "link":
        ok &= ~problem.route_links[problem.request_site[users], :, index]
    delta = np.where(ok, cost[users] - cost[users, here][:, None], np.inf)
    if problem.deferral_allowed:
        delta = np.column_stack([delta, defer_cost - cost[users, here]])
    best_node = np.argmin(delta, axis=1)
    best = delta[np.arange(len(users)), best_node]
    if not np.isfinite(best).any():
        return None
    relief = problem.memory_gb[users, here] if kind == "memory" else problem.upload_megabits[users]
    pick = min(np.flatnonzero(np.isfinite(best)), key=lambda i: (best[i], -relief[i], i))
    n = int(best_node[pick])
    return int(users[pick]), (-1 if n == problem.num_nodes else n)


def _raise_quality(
    problem: Problem,
    loads: Loads,
    cost: FloatArray,
    defer_cost: float,
    gain: FloatArray,
    deadline: float,
) -> str | None:
    """Raise the floor's sum of ``gain`` to zero at the least cost per unit of gain, or say why
    not (:data:`_OUT_OF_TIME` when ``deadline`` passed first)."""
    while (slack := loads.quality_slack(gain)) < -TOL:
        if time.perf_counter() > deadline:
            return _OUT_OF_TIME
        ratio, moved = _quality_moves(problem, loads, cost, defer_cost, gain)
        if not np.isfinite(ratio).any():
            return _floor_message(problem, loads, gain, slack)
        r, n = np.unravel_index(
            min(
                np.flatnonzero(np.isfinite(ratio)),
                key=lambda f: (ratio.flat[f], -moved.flat[f], f),
            ),
            ratio.shape,
        )
        loads.move(int(r), -1 if n == problem.num_nodes else int(n))
    return None


def _quality_moves(
    problem: Problem, loads: Loads, cost: FloatArray, defer_cost: float, gain: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """``(R, N)`` (``(R, N + 1)`` with deferral) cost increase per unit of floor gain of each
    move that raises the floor's sum (``inf`` elsewhere), and the gain each move adds."""
    rows = np.arange(problem.num_requests)
    here = loads.assignment
    placed = here >= 0
    gain_here = np.where(placed, gain[rows, np.maximum(here, 0)], 0.0)
    c_here = np.where(placed, cost[rows, np.maximum(here, 0)], defer_cost)
    moved = gain - gain_here[:, None]
    ok = problem.allowed & loads.fits(rows) & (moved > TOL)
    ok[rows[placed], here[placed]] = False
    with np.errstate(invalid="ignore"):
        ratio = np.where(ok, (cost - c_here[:, None]) / np.where(ok, moved, 1.0), np.inf)
    if problem.deferral_allowed:
        defer_gain = np.where(placed, -gain_here, 0.0)  # a deferred request leaves the sum
        defer_ok = placed & (defer_gain > TOL)
        defer_ratio = np.where(
            defer_ok, (defer_cost - c_here) / np.where(defer_ok, defer_gain, 1.0), np.inf
        )
        ratio = np.column_stack([ratio, defer_ratio])
        moved = np.column_stack([moved, defer_gain])
    return ratio, moved


def _floor_message(problem: Problem, loads: Loads, gain: FloatArray, slack: float) -> str:
    placed = np.flatnonzero(loads.assignment >= 0)
    on = loads.assignment[placed]
    worst = placed[np.argmin(gain[placed, on])]
    node = problem.node_ids[loads.assignment[worst]]
    defer = " or be deferred" if problem.deferral_allowed else ""
    state = floor_words(problem, problem.quality[placed, on], gain[placed, on])
    return (
        f"quality floor: {state} (floor sum {slack:.4f} < 0): no request can move to a better "
        f"allowed node with room{defer}; the lowest is request "
        f'"{problem.request_ids[worst]}" (on "{node}")'
    )


def _stuck_message(loads: Loads, over: Resource) -> str:
    """Why the over-full resource ``over`` cannot be relieved."""
    p = loads.problem
    kind, index = over
    users = ", ".join(f'"{p.request_ids[r]}"' for r in loads.users(over))
    if kind == "memory":
        what = (
            f'memory on node "{p.node_ids[index]}" ({loads.memory_gb[index]:.3f} GB > '
            f"{p.node_memory_gb[index]:.3f} GB free)"
        )
    else:
        what = (
            f'bandwidth on link "{p.link_ids[index]}" ({loads.megabits[index]:.2f} Mb > '
            f"{p.link_capacity_megabits[index]:.2f} Mb)"
        )
    defer = "" if p.deferral_allowed else " and deferral is off"
    return (
        f"{what} stays over capacity: no request on it (request(s) {users}) may move to "
        f"another allowed node with room{defer}"
    )
