"""The fast path: Lagrangian prices, rounding, repair and local search.

About 10-50 ms per window of 20-1,000 requests (``benchmarks/greedy_gap.py`` measures it against
the exact solver), in four steps:

1. **Prices.** The Lagrangian dual of the capacity rows (memory per node, bandwidth per link,
   the quality floor) and of the node counts (which carry the congestion term) is maximised
   (:mod:`qlmio_opt.solvers.greedy_prices`). Its value is a lower bound, reported as ``bound``.
2. **Rounding.** Requests are placed by their soft-min weights at the last temperature, most
   confident first, keeping each node's count within the relaxation's expected count and every
   memory and link capacity within its limit (:mod:`qlmio_opt.solvers.greedy_rounding`); a
   request that fits nowhere takes its column (a node, or deferral) of least reduced cost.
3. **Repair.** Overloads are removed by moves that penalise them at the dual prices, growing
   until the assignment is feasible (:mod:`qlmio_opt.solvers.greedy_repair`); requests may
   cascade through several resources, and deferral is one more column when it is allowed.
4. **Local search.** Exact single-request shifts and pairs of moves (swaps, evictions), room
   made for blocked moves by cascades (the best of a dozen chains, each tried from the same
   state), then the same searches steered by the prices, scaled
   and randomly perturbed (:mod:`qlmio_opt.solvers.local_search`); the best feasible
   assignment is kept. The search stops early once it is within ``Effort.gap`` (0.5%) of the
   bound, and so does the repair: the second way is skipped when the first ends that close.
   If it ends more than ``Effort.escalate_gap`` (2%) above the bound, it goes on from its best
   state with twice its budget again: about a quarter of the committed windows, the
   knife-edge ones where the optimum reshuffles many requests on packed links. The best state
   is then polished by improving shifts and swaps (:func:`~qlmio_opt.solvers.local_search.polish`).

The amount of search is a fixed number of work units per window, counted rather than timed,
so the answer depends only on the problem and the seed (on one machine: on knife-edge windows a
last-bit difference in the prices between CPU or BLAS builds can lead the search elsewhere);
``time_limit`` only cuts it short.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from qlmio_opt.domain.solution import Status
from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solvers.base import Residual, Solver, SolverResult, explain_unplaceable
from qlmio_opt.solvers.diagnose import infeasibility_reason
from qlmio_opt.solvers.greedy_prices import Dual, Prices
from qlmio_opt.solvers.greedy_repair import repair, room_pass
from qlmio_opt.solvers.greedy_rounding import round_weights
from qlmio_opt.solvers.greedy_state import TOL, State, Window, build_window
from qlmio_opt.solvers.local_search import (
    IMPROVES,
    Budget,
    Weights,
    descend,
    polish,
    price_table,
    priced_search,
    unit_weights,
)
from qlmio_opt.solvers.runtime import hot_path

# Two ways to repair the rounding: overload penalised at a multiple of its dual price, and how
# fast that penalty grows while overloads remain. The gentle one lets requests cascade longer.
# Neither is better on every window, so both are run and the better result is kept.
REPAIRS = ((2.0, 2.0), (0.5, 1.2))
# Overload penalties of the room-making search, as a multiple of the dual prices: the firmer of
# the two repairs' (a chain is then pushed through to feasibility instead of stalling half-way).
ROOM_FACTOR = 2.0


@dataclass(frozen=True)
class Effort:
    """How hard the greedy works on one window.

    Attributes
    ----------
    temperatures
        Smoothing temperatures of the dual, as fractions of the mean pair cost, in order.
    dual_evaluations
        Dual evaluations allowed per temperature.
    search_work
        Work units for repair and local search (about a microsecond of NumPy time each, see
        :class:`~qlmio_opt.solvers.local_search.Budget`) on a window of up to
        ``reference_pairs`` request-node pairs.
    reference_pairs, max_work_scale
        Larger windows get proportionally more work, up to ``max_work_scale`` times
        ``search_work``: one move costs more there, and a fixed budget left 10,000 x 12 windows
        3% above the bound (1.3% with four times the work, for about 50 ms more).
    variants
        Price-guided searches tried (price scales 1, 1/2, 2, then random perturbations).
    gap
        The search stops once the incumbent is within this relative gap of the dual bound (and
        the second repair is skipped when the first ends within it). 0.5% rather than 0.2%:
        on the committed windows the median gap went from 0.04% to 0.05% and the windows
        further off stayed the same, for less time on the windows that settle early
        (``docs/benchmarks.md``).
    escalate_gap, escalate_scale
        When the search ends further than ``escalate_gap`` from the dual bound, it goes on from
        its best state with ``escalate_scale`` times its budget more (0: never). The bound says
        where there is room, so the extra work goes to the few windows that need it; the
        escalated search goes on where the first one stopped (see :class:`Memo`). Twice the
        budget gave the same gaps as three times on the committed windows, and the same
        windows above 3% on 80 held-out ones (``docs/benchmarks.md``).
    polish_scale
        Budget, in searches' budgets, of the final polish: improving shifts and swaps from the
        best state (0: none). Swaps keep node counts, so they reach the exchanges of requests
        between packed nodes and links that single moves and room-making chains miss.
    """

    temperatures: tuple[float, ...] = (0.1, 0.01, 0.001)
    dual_evaluations: int = 25
    search_work: float = 14_000.0
    reference_pairs: int = 12_000
    max_work_scale: float = 4.0
    variants: int = 12
    gap: float = 5e-3
    escalate_gap: float = 0.02
    escalate_scale: float = 2.0
    polish_scale: float = 0.5

    def work_for(self, pairs: int) -> float:
        """The search budget of a window with ``pairs`` request-node pairs."""
        scale = min(max(pairs / self.reference_pairs, 1.0), self.max_work_scale)
        return self.search_work * scale


class Greedy(Solver):
    """Lagrangian rounding, repair and price-guided local search.

    Parameters
    ----------
    effort
        Search effort (:class:`Effort`); the default targets tens of milliseconds per window.
    """

    name = "greedy"
    description = "Lagrangian prices, repair and local search (tens of milliseconds per window)"

    def __init__(self, effort: Effort | None = None) -> None:
        self.effort = effort or Effort()

    def solve(
        self,
        problem: Problem,
        *,
        time_limit: float | None = None,
        seed: int = 0,
        initial: np.ndarray | None = None,
    ) -> SolverResult:
        """Assign every request of ``problem`` to a node (or defer it).

        Parameters
        ----------
        problem
            The window.
        time_limit
            Seconds; cuts the search short if the fixed effort takes longer (the answer is
            then still feasible, but no longer independent of the machine's speed).
        seed
            Seeds the price perturbations: same problem and seed, same answer.
        initial
            An assignment (node index per request, -1 deferred) to start the local search from
            instead of the rounded prices; it is repaired first if it breaks a capacity.

        Returns
        -------
        SolverResult
            ``FEASIBLE`` with the assignment and the Lagrangian lower bound, or ``INFEASIBLE``
            with a message naming a request and the constraint it cannot meet.
        """
        with hot_path():
            return self._solve(problem, time_limit, seed, initial)

    def _solve(
        self,
        problem: Problem,
        time_limit: float | None,
        seed: int,
        initial: np.ndarray | None,
    ) -> SolverResult:
        start = time.perf_counter()
        reason = infeasibility_reason(problem)
        if reason is not None:
            return SolverResult(Status.INFEASIBLE, None, message=reason)
        if problem.num_requests == 0:
            return SolverResult(
                Status.OPTIMAL, np.zeros(0, dtype=np.int64), bound=0.0, bound_source="lagrangian"
            )
        window = build_window(problem)
        effort = self.effort
        dual = Dual(window, problem.allowed.sum(axis=0))
        scale = float(np.abs(window.cost[np.isfinite(window.cost)]).mean())
        if not scale > 0:
            # every cost is 0 (both objective weights 0): any assignment within the limits is
            # optimal, and the temperatures need only be positive
            scale = 1.0
        taus = tuple(scale * t for t in effort.temperatures)
        y, evaluations = dual.maximise(None, taus, effort.dual_evaluations)
        bound, columns = dual.value(y)
        if initial is not None:
            columns = _columns(window, initial)
        else:
            columns = round_weights(window, dual.weights(y, taus[-1]), columns)
        priced = time.perf_counter()
        deadline = None if time_limit is None else start + time_limit
        work = effort.work_for(problem.num_requests * problem.num_nodes)
        budget = Budget(work, deadline)
        prices = dual.prices(y)
        state = _repaired(window, columns, prices, budget, bound, effort.gap)
        if not state.feasible():
            return SolverResult(Status.INFEASIBLE, None, message=_explain(problem, state))
        escalated = False
        if not _proven(state.value, bound, effort.gap):
            memo = Memo(_repair_weights(window, prices, ROOM_FACTOR))
            state = _search(state, prices, memo, budget, effort, seed, bound)
            if effort.escalate_scale > 0 and not _proven(state.value, bound, effort.escalate_gap):
                escalated = True
                more = Budget(effort.escalate_scale * work, deadline)
                state = _search(state, prices, memo, more, effort, seed + 1, bound)
            if effort.polish_scale > 0:
                state = polish(state, Budget(effort.polish_scale * work, deadline))
        return SolverResult(
            Status.FEASIBLE,
            np.where(state.columns == window.defer, -1, state.columns),
            bound=bound,
            bound_source="lagrangian",
            reported_objective=state.value,
            stats={
                "dual_evaluations": float(evaluations),
                "dual_s": priced - start,
                "search_s": time.perf_counter() - priced,
                "search_work_left": budget.left,
                "escalated": float(escalated),
            },
        )


def _columns(window: Window, initial: np.ndarray) -> np.ndarray:
    """Window columns of an assignment (-1 = deferral), checked against the window."""
    initial = np.asarray(initial, dtype=np.int64)
    if initial.shape != (window.num_requests,):
        raise ValueError(
            f"initial assignment has shape {initial.shape}, expected ({window.num_requests},)"
        )
    if ((initial < -1) | (initial >= window.num_nodes)).any():
        raise ValueError("initial assignment has node indices out of range")
    columns = np.where(initial < 0, window.defer, initial)
    allowed = np.isfinite(window.cost[np.arange(window.num_requests), columns])
    # a pair that is not allowed (or deferral when it is off): start from the cheapest column
    return np.where(allowed, columns, np.argmin(window.cost, axis=1))


def _repaired(
    window: Window,
    columns: np.ndarray,
    prices: Prices,
    budget: Budget,
    bound: float,
    gap: float,
) -> State:
    """``columns`` repaired each way of :data:`REPAIRS` and descended: the better state,
    infeasible only if no repair succeeded.

    Each repair has its own allowance (a quarter of the search budget's start), so that the
    second is not starved by the first one's descent. The second is skipped when the first
    ends within relative ``gap`` of the lower ``bound``: it could gain at most that.
    """
    best = None
    allowance = budget.left / 4
    for factor, grow in REPAIRS:
        # out of budget, or within ``gap`` of the bound (the other way could gain at most that)
        feasible = best is not None and best.feasible()
        if feasible and (budget.exhausted or _proven(best.value, bound, gap)):
            break
        state = State(window, columns)
        if best is not None and state.feasible():
            break  # nothing to repair: every way gives the same state
        weights = _repair_weights(window, prices, factor)
        if repair(state, Budget(allowance, budget.deadline), weights, grow):
            descend(state, budget)
            if best is None or not best.feasible() or state.value < best.value:
                best = state
        elif best is None:
            best = state
    return best


def _repair_weights(window: Window, prices: Prices, factor: float) -> Weights:
    """Overload penalties: ``factor`` times the dual prices, and at least a tenth of a typical
    pair cost per typical request's use (a price is 0 where the relaxation had room)."""
    floor = unit_weights(window).scaled(0.1)
    return Weights(
        np.maximum(factor * prices.memory, floor.memory),
        np.maximum(factor * prices.link, floor.link),
        max(factor * prices.quality, floor.quality),
    )


def _proven(value: float, bound: float, gap: float) -> bool:
    """Whether ``value`` is within relative ``gap`` of the lower ``bound``."""
    return value - bound <= gap * max(1.0, abs(value))


@dataclass(frozen=True)
class Memo:
    """What the searches of one window have done already, so that an escalation step goes on
    from where the last step stopped instead of repeating it.

    Attributes
    ----------
    weights
        The room-making search's overload weights.
    tried
        Per start assignment, the room-making chains that ran to their end without gaining
        (see :func:`~qlmio_opt.solvers.greedy_repair.room_pass`).
    priced
        ``(assignment, price scale)`` of the price-guided searches that ran to their end
        (a search from the same state at the same prices would find the same trial).
    """

    weights: Weights
    tried: dict[bytes, set[tuple[int, int]]] = field(default_factory=dict)
    priced: set[tuple[bytes, float]] = field(default_factory=set)


def _search(
    state: State,
    prices: Prices,
    memo: Memo,
    budget: Budget,
    effort: Effort,
    seed: int,
    bound: float,
) -> State:
    """Room-making and price-guided searches, each from the best state so far."""
    rng = np.random.default_rng(seed)
    best = descend(_make_room(state, memo, budget), budget)
    base = (prices.memory, prices.link, prices.quality)
    scales = [1.0, 0.5, 2.0] + [None] * effort.variants  # None: a random perturbation
    for scale in scales[: effort.variants]:
        if budget.exhausted or _proven(best.value, bound, effort.gap):
            break
        if scale is None:
            memory, link, quality = (p * np.exp(rng.normal(0.0, 0.5, np.shape(p))) for p in base)
        else:
            key = (best.columns.tobytes(), scale)
            if key in memo.priced:
                continue
            memory, link, quality = (scale * p for p in base)
        trial = priced_search(best, price_table(best, memory, link, float(quality)), budget)
        if scale is not None and not budget.exhausted:
            memo.priced.add(key)
        if trial.feasible() and trial.value < best.value - IMPROVES:
            best = descend(_make_room(trial, memo, budget), budget)
    return best


def _make_room(state: State, memo: Memo, budget: Budget) -> State:
    """Room passes until one keeps nothing."""
    while not budget.exhausted and room_pass(state, budget, memo.weights, tried=memo.tried):
        pass
    return state


def _explain(problem: Problem, state: State) -> str:
    """Why the repair could not make ``state`` feasible: a request and the constraint.

    The last request on an overloaded node or link is named, with what every node it may use
    lacks once all other requests are placed as they are.
    """
    w = state.w
    memory, links, _ = state.violations()
    stuck = memory[state.columns] > TOL
    over = links > TOL
    if over.any():
        stuck |= w.paths[w.site, state.columns][:, over].any(axis=1)
    if not stuck.any() and problem.quality_target is not None:
        return (
            f"the quality target {problem.quality_target:.4f} could not be met together with "
            "the memory and bandwidth limits (deferral is off)"
        )
    if not stuck.any():
        return "no assignment within the memory and bandwidth limits was found (deferral is off)"
    r = int(np.flatnonzero(stuck)[-1])
    residual = Residual(problem)
    for other in np.flatnonzero(state.columns < w.defer):
        if other != r:
            residual.place(int(other), int(state.columns[other]))
    return explain_unplaceable(problem, r, residual)


class GreedyThorough(Greedy):
    """The same method with eight times the local-search budget on every window (no
    escalation on top, and the stricter stopping gap of 0.2%).

    Measured on the 100 committed windows before the plain greedy escalated
    (``benchmarks/solver_gaps.py``, loaded machine): median gap 0.04% against 0.05%, p95 2.44%
    against 3.36%, median 33 ms against 20 ms, up to ~0.2 s on the large windows that use the
    whole budget. ``docs/benchmarks.md`` compares it with the escalating greedy.
    """

    name = "greedy-thorough"
    description = "greedy with 8x the search budget (median gap ~0.04%, up to ~0.2 s per window)"

    def __init__(self, effort: Effort | None = None) -> None:
        thorough = Effort(search_work=8 * Effort().search_work, gap=2e-3, escalate_scale=0.0)
        super().__init__(effort or thorough)
