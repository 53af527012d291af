"""The fast path: Lagrangian prices, rounding, repair and local search.

About 10-50 ms on most windows of 20-1,000 requests, 100-200 ms on tight ones whose answer
stays away from the bound (``benchmarks/greedy_held_out.py`` measures both against the exact
solver), in six steps:

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
   If the window is still infeasible (deferral off, capacities tight), a second start, the
   regret construction of the Martello-Toth family (:mod:`qlmio_opt.solvers.greedy_regret`),
   is repaired the same way (restarted with perturbed desirabilities while half its budget
   lasts) and, if feasible, searched as below; only when both fail is the window reported
   infeasible, with where the repair got stuck.
4. **Local search.** Exact single-request shifts and pairs of moves (swaps, evictions), room
   made for blocked moves by cascades (the best of a dozen chains, each tried from the same
   state), then the same searches steered by the prices, scaled
   and randomly perturbed (:mod:`qlmio_opt.solvers.local_search`); the best feasible
   assignment is kept. The search stops early once it is within ``Effort.gap`` (0.5%) of the
   bound, and so does the repair: the second way is skipped when the first ends that close.
   If it ends more than ``Effort.escalate_gap`` (2%) above the bound, it goes on from its best
   state with twice its budget again: about a quarter of the committed windows, the
   knife-edge ones where the optimum reshuffles many requests on packed links. The best state
   is then polished by improving shifts and swaps, and ejection chains once those find nothing
   (one request moved out so that others, often deferred ones, fit in its place:
   :func:`~qlmio_opt.solvers.local_search.polish`).
5. **Iterated local search.** If the answer is still further than ``Effort.perturb_gap``
   (0.1%) from the bound, rounds of a random kick (a few shifts and swaps that keep every
   capacity, or a chain of related moves then repaired), improving shifts and swaps, and the
   result kept if better (:mod:`qlmio_opt.solvers.greedy_perturb`), on a budget that grows
   with the room the bound leaves: it reaches optima several moves across worse or overloaded
   states, as on tight generalized-assignment-style windows.
6. **Large-neighbourhood search.** If the answer is still further than ``Effort.gap`` (0.5%)
   from the bound, rounds that free the requests of a few random columns (or random requests)
   and re-solve the window's MILP over them alone with HiGHS, every other request fixed
   (:mod:`qlmio_opt.solvers.greedy_lns`): the exact reshuffle of many requests across packed
   capacities that the kicks do not reach. Its budget grows with the room as the last step's.

Before step 4, a window of at most :data:`~qlmio_opt.solvers.tuning.LNS_WHOLE_PAIRS`
allowed pairs has its whole MILP tried with step 6's HiGHS run; when that proves it optimal, no
search runs.

The amount of search is a fixed number of work units per window, counted rather than timed,
so the answer depends only on the problem and the seed (on one machine: on knife-edge windows a
last-bit difference in the prices between CPU or BLAS builds can lead the search elsewhere);
``time_limit`` only cuts it short. Steps 1 and 2 cannot be cut short (0.15-0.3 s at 10,000 x
12): when the time left cannot hold them, the greedy answers with its quick construction instead
(:mod:`qlmio_opt.solvers.greedy_quick`: no bound, no search). Every tuning constant is in
:mod:`qlmio_opt.solvers.tuning`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from qlmio_opt.domain.solution import Status
from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solvers.base import Solver, SolverResult
from qlmio_opt.solvers.capacity import Loads, explain_unplaceable
from qlmio_opt.solvers.diagnose import infeasibility_reason
from qlmio_opt.solvers.greedy_perturb import perturbed_search
from qlmio_opt.solvers.greedy_prices import Dual, Prices
from qlmio_opt.solvers.greedy_quick import fits_priced_start, quick_assignment
from qlmio_opt.solvers.greedy_regret import construction_work, perturbed_columns, regret_start
from qlmio_opt.solvers.greedy_repair import repair, room_pass
from qlmio_opt.solvers.greedy_rounding import round_weights
from qlmio_opt.solvers.greedy_state import (
    FloatArray,
    IntArray,
    State,
    Weights,
    Window,
    build_window,
)
from qlmio_opt.solvers.local_search import (
    Budget,
    descend,
    polish,
    price_table,
    priced_search,
)
from qlmio_opt.solvers.runtime import hot_path
from qlmio_opt.solvers.tuning import (
    IMPROVES,
    LNS_SETUP_SECONDS_PER_PAIR,
    LNS_WHOLE_PAIRS,
    PRICE_PERTURBATION_SIGMA,
    PRICE_SCALES,
    REGRET_RESTART_SHARE,
    REPAIR_ALLOWANCE_SHARE,
    REPAIR_WEIGHT_FLOOR,
    REPAIRS,
    ROOM_FACTOR,
    THOROUGH_GAP,
    THOROUGH_WORK_SCALE,
    TOL,
    Effort,
)

__all__ = ["Effort", "Greedy", "GreedyThorough", "repair_weights"]


class Greedy(Solver):
    """Lagrangian rounding, repair and price-guided local search.

    Parameters
    ----------
    effort
        Search effort (:class:`~qlmio_opt.solvers.tuning.Effort`); the default targets tens of
        milliseconds per window.
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
        initial: IntArray | None = None,
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
            return self.solve_as_is(problem, time_limit, seed, initial)

    def solve_as_is(
        self,
        problem: Problem,
        time_limit: float | None,
        seed: int,
        initial: IntArray | None,
    ) -> SolverResult:
        """:meth:`solve` without :func:`~qlmio_opt.solvers.runtime.hot_path`: the process's
        BLAS threads and garbage collector left as they are (``benchmarks/greedy_speed.py``
        times both ways; the answer is the same)."""
        start = time.perf_counter()
        trivial = _trivial_result(problem)
        if trivial is not None:
            return trivial
        if time_limit is not None:
            left = time_limit - (time.perf_counter() - start)
            if not fits_priced_start(problem, left):
                return _quick_result(problem, left, start)
        window = build_window(problem)
        effort = self.effort
        prices, bound, columns, evaluations = _dual_start(window, problem, effort, initial)
        priced = time.perf_counter()
        deadline = None if time_limit is None else start + time_limit
        work = effort.work_for(problem.num_requests * problem.num_nodes)
        budget = Budget(work, deadline)
        state = _repaired(window, columns, prices, budget, bound, effort.gap)
        second_start = not state.feasible() and effort.regret_fallback
        if second_start:
            state, budget = _regret_repaired(
                window, prices, bound, work, deadline, effort, state, seed
            )
        if not state.feasible():
            return SolverResult(
                Status.INFEASIBLE, None, message=_explain(problem, state, second_start)
            )
        state, escalated = _improved(problem, state, prices, bound, work, budget, effort, seed)
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
                "regret_start": float(second_start),
            },
        )


def _trivial_result(problem: Problem) -> SolverResult | None:
    """The answer without any search: a window infeasible for a reason the diagnosis names,
    or one without requests; None for every other window."""
    reason = infeasibility_reason(problem)
    if reason is not None:
        return SolverResult(Status.INFEASIBLE, None, message=reason)
    if problem.num_requests == 0:
        return SolverResult(
            Status.OPTIMAL, np.zeros(0, dtype=np.int64), bound=0.0, bound_source="lagrangian"
        )
    return None


def _quick_result(problem: Problem, left: float, start: float) -> SolverResult:
    """The quick construction's answer (``feasible``, as any answer a limit cut short; the
    message says the limit left no time for the priced start and the search, and the stats
    hold ``quick_start``), or ``time_limit`` without an assignment if it found none."""
    assignment = quick_assignment(problem)
    stats = {"quick_start": 1.0, "search_s": time.perf_counter() - start}
    too_short = (
        f"time limit: {max(left, 0.0):.3f} s left, less than the greedy's priced start needs "
        f"at {problem.num_requests} x {problem.num_nodes}"
    )
    if assignment is None:
        return SolverResult(
            Status.TIME_LIMIT,
            None,
            message=f"{too_short}, and its quick construction found no feasible assignment",
            stats=stats,
        )
    return SolverResult(
        Status.FEASIBLE,
        assignment,
        message=f"{too_short}: the quick construction's assignment, not searched",
        stats=stats,
    )


def _dual_start(
    window: Window, problem: Problem, effort: Effort, initial: IntArray | None
) -> tuple[Prices, float, IntArray, int]:
    """Step 1 and 2: the dual prices, their bound, the starting columns (``initial`` if given,
    else the rounded soft-min weights) and the number of dual evaluations."""
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
    return dual.prices(y), bound, columns, evaluations


def _improved(
    problem: Problem,
    state: State,
    prices: Prices,
    bound: float,
    work: float,
    budget: Budget,
    effort: Effort,
    seed: int,
) -> tuple[State, bool]:
    """Steps 4 to 6: the searches, an escalation when they end far from ``bound``, the
    polish (all skipped when the start is within ``effort.gap`` of ``bound``), the iterated
    local search while the answer is further than ``effort.perturb_gap`` from it, then the
    large-neighbourhood search while it is further than ``effort.gap``.

    Returns the best state and whether the search escalated.
    """
    escalated = False
    weights = repair_weights(state.w, prices, ROOM_FACTOR)
    if _small_enough_to_solve(problem, effort) and not _proven(state.value, bound, effort.gap):
        state, optimal = _solved_whole(problem, state, budget, work, effort, seed)
        if optimal:
            return state, escalated
    if not _proven(state.value, bound, effort.gap):
        memo = Memo(weights)
        state = _search(state, prices, memo, budget, effort, seed, bound)
        if effort.escalate_scale > 0 and not _proven(state.value, bound, effort.escalate_gap):
            escalated = True
            more = Budget(effort.escalate_scale * work, budget.deadline)
            state = _search(state, prices, memo, more, effort, seed + 1, bound)
        if effort.polish_scale > 0:
            state = polish(state, Budget(effort.polish_scale * work, budget.deadline))
    if effort.perturb_scale > 0 and not _proven(state.value, bound, effort.perturb_gap):
        target = bound + effort.perturb_gap * max(1.0, abs(bound))
        rng = np.random.default_rng(seed + 2)  # seed and seed + 1 draw the price perturbations
        share = effort.perturb_scale * _room_share(state.value, bound, effort)
        kicks = Budget(share * work, budget.deadline)
        state = perturbed_search(state, kicks, weights, rng, target)
    if effort.lns_scale > 0 and not _proven(state.value, bound, effort.gap):
        share = effort.lns_scale * _room_share(state.value, bound, effort)
        rounds = Budget(share * work, budget.deadline)
        if _outlasts(rounds, LNS_SETUP_SECONDS_PER_PAIR * int(problem.allowed.sum())):
            return state, escalated
        # imported here: it loads highspy and scipy, which a window that never gets this far
        # (most of them) need not pay for at import (tests/test_imports.py)
        from qlmio_opt.solvers.greedy_lns import Subproblems, neighbourhood_search

        rng = np.random.default_rng(seed + 3)
        target = bound + effort.gap * max(1.0, abs(bound))
        state = neighbourhood_search(state, Subproblems(problem), rounds, rng, target)
    return state, escalated


def _small_enough_to_solve(problem: Problem, effort: Effort) -> bool:
    """Whether the large-neighbourhood search is on and the window small enough to try its
    MILP whole first (at most :data:`~qlmio_opt.solvers.tuning.LNS_WHOLE_PAIRS` allowed
    request-node pairs)."""
    return effort.lns_scale > 0 and int(problem.allowed.sum()) <= LNS_WHOLE_PAIRS


def _solved_whole(
    problem: Problem, state: State, budget: Budget, work: float, effort: Effort, seed: int
) -> tuple[State, bool]:
    """A small window's MILP solved whole from ``state`` before any search (a few ms where
    the searches would spend their budgets against a loose bound: a scheduler's windows of 5-10
    requests on full nodes took 0.2-0.3 s with them, ``benchmarks/service_load.py``); the
    better state, and whether it is proven optimal."""
    rounds = Budget(effort.lns_scale * work, budget.deadline)
    if _outlasts(rounds, LNS_SETUP_SECONDS_PER_PAIR * int(problem.allowed.sum())):
        return state, False
    from qlmio_opt.solvers.greedy_lns import Subproblems, solved_whole

    return solved_whole(state, Subproblems(problem), rounds, seed + 3)


def _outlasts(budget: Budget, seconds: float) -> bool:
    """Whether ``budget`` is spent, or a step of ``seconds`` that cannot stop half-way would
    end after its deadline."""
    if budget.exhausted:
        return True
    return budget.deadline is not None and time.perf_counter() + seconds > budget.deadline


def _room_share(value: float, bound: float, effort: Effort) -> float:
    """The relative gap of ``value`` to the lower ``bound`` as a share of
    ``effort.escalate_gap`` (at most 1): the iterated local search and the large-neighbourhood
    search get this share of their budgets, little where the bound leaves little room."""
    room = (value - bound) / max(1.0, abs(value))
    return min(1.0, room / effort.escalate_gap)


def _columns(window: Window, initial: IntArray) -> IntArray:
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
    columns: IntArray,
    prices: Prices,
    budget: Budget,
    bound: float,
    gap: float,
) -> State:
    """Step 3: ``columns`` repaired each way of :data:`~qlmio_opt.solvers.tuning.REPAIRS` and
    descended: the better state, infeasible only if no repair succeeded.

    Each repair has its own allowance (a share of the search budget's start), so that the
    second is not starved by the first one's descent. The second is skipped when the first
    ends within relative ``gap`` of the lower ``bound``: it could gain at most that.
    """
    best: State | None = None
    allowance = budget.left * REPAIR_ALLOWANCE_SHARE
    for factor, grow in REPAIRS:
        # out of budget, or within ``gap`` of the bound (the other way could gain at most that)
        if (
            best is not None
            and best.feasible()
            and (budget.exhausted or _proven(best.value, bound, gap))
        ):
            break
        state = State(window, columns)
        if best is not None and state.feasible():
            break  # nothing to repair: every way gives the same state
        weights = repair_weights(window, prices, factor)
        if repair(state, Budget(allowance, budget.deadline), weights, grow):
            descend(state, budget)
            if best is None or not best.feasible() or state.value < best.value:
                best = state
        elif best is None:
            best = state
    if best is None:  # REPAIRS is empty
        raise ValueError("no repair configured")
    return best


def _regret_repaired(
    window: Window,
    prices: Prices,
    bound: float,
    work: float,
    deadline: float | None,
    effort: Effort,
    failed: State,
    seed: int,
) -> tuple[State, Budget]:
    """The second start, for a window whose priced start stayed infeasible: the regret
    construction (:func:`~qlmio_opt.solvers.greedy_regret.regret_start`), repaired each way
    as the first, with a budget of its own for the repair and the searches after it. If that
    stays infeasible too, perturbed constructions
    (:func:`~qlmio_opt.solvers.greedy_regret.perturbed_columns`) that place every request are
    repaired, until one is feasible or the budget falls to
    :data:`~qlmio_opt.solvers.tuning.REGRET_RESTART_SHARE` of its start.

    Returns the first feasible state, else ``failed`` (the first start's, which
    :func:`_explain` describes), and the budget the searches go on with.
    """
    budget = Budget(work, deadline)
    state = _repaired(window, regret_start(window, deadline), prices, budget, bound, effort.gap)
    rng = np.random.default_rng(seed)
    attempt = 0
    while (
        not state.feasible() and budget.left > REGRET_RESTART_SHARE * work and not budget.exhausted
    ):
        columns = perturbed_columns(window, attempt, rng, deadline)
        budget.spend(construction_work(window))
        attempt += 1
        if (columns != window.defer).all():
            state = _repaired(window, columns, prices, budget, bound, effort.gap)
    return (state if state.feasible() else failed), budget


def repair_weights(window: Window, prices: Prices, factor: float) -> Weights:
    """Overload penalties: ``factor`` times the dual prices, and at least
    :data:`~qlmio_opt.solvers.tuning.REPAIR_WEIGHT_FLOOR` of a typical pair cost per typical
    request's use (a price is 0 where the relaxation had room)."""
    floor = window.unit_weights.scaled(REPAIR_WEIGHT_FLOOR)
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
    scales: list[float | None] = [*PRICE_SCALES, *[None] * effort.variants]  # None: perturbed
    for scale in scales[: effort.variants]:
        if budget.exhausted or _proven(best.value, bound, effort.gap):
            break
        key = (best.columns.tobytes(), scale)
        if scale is not None and key in memo.priced:
            continue
        memory, link, quality = _trial_prices(prices, scale, rng)
        trial = priced_search(best, price_table(best, memory, link, quality), budget)
        if scale is not None and not budget.exhausted:
            memo.priced.add((key[0], scale))
        if trial.feasible() and trial.value < best.value - IMPROVES:
            best = descend(_make_room(trial, memo, budget), budget)
    return best


def _trial_prices(
    prices: Prices, scale: float | None, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray, float]:
    """The dual prices times ``scale``, or (``None``) each times a random log-normal factor."""
    if scale is None:
        sigma = PRICE_PERTURBATION_SIGMA
        memory = prices.memory * np.exp(rng.normal(0.0, sigma, np.shape(prices.memory)))
        link = prices.link * np.exp(rng.normal(0.0, sigma, np.shape(prices.link)))
        quality = prices.quality * np.exp(rng.normal(0.0, sigma, np.shape(prices.quality)))
        return memory, link, float(quality)
    return scale * prices.memory, scale * prices.link, float(scale * prices.quality)


def _make_room(state: State, memo: Memo, budget: Budget) -> State:
    """Room passes until one keeps nothing."""
    while not budget.exhausted and room_pass(state, budget, memo.weights, tried=memo.tried):
        pass
    return state


def _explain(problem: Problem, state: State, second_start: bool) -> str:
    """Why the greedy has no answer: what its starts tried, where ``state`` (the first start's,
    repaired) is stuck, and that no sufficient condition of
    :func:`~qlmio_opt.solvers.diagnose.infeasibility_reason` proves the window infeasible (it
    ran first: a window it can blame never gets here), so the window may still be feasible."""
    tried = (
        "the priced and the regret starts, each repaired"
        if second_start
        else "the priced start, repaired"
    )
    return (
        f"the greedy found no feasible assignment from {tried}: "
        f"{_where_stuck(problem, state)}; no single constraint proves the window infeasible, "
        "so it may still have a feasible assignment (the exact solver can decide)"
    )


def _where_stuck(problem: Problem, state: State) -> str:
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
    if not stuck.any() and problem.floor_gain is not None:
        return (
            "the quality floor could not be met together with "
            "the memory and bandwidth limits (deferral is off)"
        )
    if not stuck.any():
        return "no assignment within the memory and bandwidth limits was found (deferral is off)"
    r = int(np.flatnonzero(stuck)[-1])
    loads = Loads(problem)
    for other in np.flatnonzero(state.columns < w.defer).tolist():
        if other != r:
            loads.move(other, int(state.columns[other]))
    return explain_unplaceable(problem, r, loads)


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
        thorough = Effort(
            search_work=THOROUGH_WORK_SCALE * Effort().search_work,
            gap=THOROUGH_GAP,
            escalate_scale=0.0,
        )
        super().__init__(effort or thorough)
