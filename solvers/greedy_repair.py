"""Feasibility for the greedy solver: repairing an overloaded state, and making room.

:func:`repair` turns the rounded Lagrangian assignment (which may overload memory, links or the
quality floor) into a feasible one; :func:`room_pass` uses the same machinery as a local-search
move, placing a request where it does not fit yet and letting others cascade out of its way.
"""

from __future__ import annotations

import numpy as np

from qlmio_opt.solvers.greedy_state import FloatArray, State, Weights
from qlmio_opt.solvers.local_search import (
    Budget,
    fits_table,
    penalty_descent,
    shift_pass,
    shift_table,
)
from qlmio_opt.solvers.tuning import (
    IMPROVES,
    REPAIR_PENALTY_PASSES,
    REPAIR_ROUNDS,
    ROOM_CANDIDATES_PER_ROOT,
    ROOM_GROWTH,
    ROOM_PENALTY_PASSES,
    ROOM_ROOTS,
    ROOM_ROOTS_PER_REQUEST,
    TOL,
)


def repair(state: State, budget: Budget, weights: Weights, grow: float) -> bool:
    """Make ``state`` feasible, giving up as little objective as possible.

    First :func:`~qlmio_opt.solvers.local_search.penalty_descent` (overload penalised by
    ``weights``, e.g. from the dual prices, growing by ``grow`` while overloads remain). If that
    does not get there: rounds of moves at the least extra cost per unit of relief, never
    overloading what was within its limit. If those get stuck and deferral is allowed, memory
    and bandwidth are repaired first without guarding the quality floor, then the floor alone
    (deferring a request below the target always lifts it), which always ends feasible.
    Requests may be moved even if they are placed already; deferral is just one more column.
    Returns whether the state is feasible at the end.
    """
    if penalty_descent(state, budget, weights, passes=REPAIR_PENALTY_PASSES, grow=grow):
        return True
    if _repair_rounds(state, budget, REPAIR_ROUNDS, capacity=True, quality=True):
        return True
    if not state.w.can_defer:
        return False
    unlimited = Budget(np.inf)  # finishing a repair is not optional
    rounds = state.w.num_requests + 1
    _repair_rounds(state, unlimited, rounds, capacity=True, quality=False)
    return _repair_rounds(state, unlimited, rounds, capacity=False, quality=True)


def relief_table(state: State, capacity: bool = True, quality: bool = True) -> FloatArray:
    """``(R, C)`` how much of the current overload each move removes.

    Each overloaded resource counts in units of its own overload, so curing one completely
    adds 1. ``capacity`` (memory, links) and ``quality`` choose which overloads count.
    """
    w, a = state.w, state.columns
    memory, links, deficit = state.violations()
    relief = np.zeros(w.cost.shape)
    if capacity:
        hot = memory[a] > TOL
        if hot.any():
            freed = np.minimum(w.memory[state.rows, a], memory[a]) / np.where(hot, memory[a], 1)
            relief += np.where(hot, freed, 0.0)[:, None]
        over = links > TOL
        if over.any():
            left = w.paths[:, :, None, over] & ~w.paths[:, None, :, over]  # (site, a, c, O)
            share = np.minimum(w.upload[:, None], links[over]) / links[over]  # (R, O)
            relief += np.einsum("rco,ro->rc", left[w.site, a], share)
    if quality and deficit > TOL and w.gain is not None:
        change = w.gain - w.gain[state.rows, a][:, None]
        relief += np.clip(change / deficit, 0.0, 1.0)
    relief[state.rows, a] = 0.0
    return relief


def _repair_rounds(
    state: State, budget: Budget, rounds: int, *, capacity: bool, quality: bool
) -> bool:
    """Rounds of ranking every relieving move once, then applying the best still useful."""
    for _ in range(rounds):
        if state.feasible():
            return True
        relief = relief_table(state, capacity, quality)
        ok = fits_table(state, quality=quality) & (relief > TOL)
        ok[state.frozen] = False
        score = np.where(ok, shift_table(state, budget) / np.where(ok, relief, 1.0), np.inf)
        best = np.argmin(score, axis=1)
        best_score = score[state.rows, best]
        order = np.argsort(best_score, kind="stable")
        moved = False
        for r in order[np.isfinite(best_score[order])]:
            col = int(best[r])
            if state.relieves(r, col, capacity, quality) and state.fits(r, col, quality):
                state.shift(r, col)
                moved = True
                if state.feasible():
                    return True
        if not moved or budget.exhausted:
            break
    return state.feasible()


def room_pass(
    state: State,
    budget: Budget,
    weights: Weights,
    roots: int = ROOM_ROOTS,
    tried: dict[bytes, set[tuple[int, int]]] | None = None,
) -> int:
    """Make room for the most valuable blocked shift by a cascade of other moves.

    Each root ``r1 -> c1`` (an improving shift that does not fit, at most two columns per
    request: typically a deferred request that could be placed) is applied to the state as it
    is, then :func:`~qlmio_opt.solvers.local_search.penalty_descent` moves requests until
    nothing is overloaded. They may cascade through several resources (r2 leaves a full link for
    another path, r3 leaves that one, ...), and r1 itself may move on. Improving shifts then
    refill what was freed (plain shifts; the caller descends fully afterwards). A chain is
    abandoned once its moves cost more than the root gains. Every root is tried from the same
    start, and the best chain is kept (keeping the first that gains would often settle for a
    small gain that blocks a large one). Returns 1 if a chain was kept, else 0.

    ``tried`` (one dictionary per window and weights) remembers, per start assignment, the
    roots whose chains ran to their end without gaining: a later pass from the same assignment
    (the escalated search starts where the first one ended, often in the middle of a pass the
    budget cut short) goes on with the roots not tried yet instead of repeating them.
    """
    blocked = np.where(fits_table(state), np.inf, shift_table(state, budget))
    order = np.argsort(blocked, axis=None, kind="stable")
    start = state.columns.copy()
    done: set[tuple[int, int]] = set()
    if tried is not None:
        done = tried.setdefault(start.tobytes(), set())
    before = state.value
    per_request: dict[int, int] = {}
    best_value, best = before - IMPROVES, None
    for index in order[: ROOM_CANDIDATES_PER_ROOT * roots]:
        r1, c1 = (int(i) for i in np.unravel_index(index, blocked.shape))
        if not blocked[r1, c1] < -IMPROVES or len(per_request) >= roots or budget.exhausted:
            break
        if per_request.get(r1, 0) >= ROOM_ROOTS_PER_REQUEST:
            continue
        per_request[r1] = per_request.get(r1, 0) + 1
        if (r1, c1) in done or state.fits(r1, c1):  # fits: the table and the check round apart
            continue
        state.shift(r1, c1)
        # give up on a chain whose moves already cost more than the root gains
        limit = before + (before - state.value)
        passes, grow = ROOM_PENALTY_PASSES, ROOM_GROWTH
        if penalty_descent(state, budget, weights, passes=passes, grow=grow, limit=limit):
            # plain shifts only: the caller descends fully once no root is kept any more
            while not budget.exhausted and shift_pass(state, budget):
                pass
            if state.value < best_value:
                best_value, best = state.value, state.columns.copy()
        if not budget.exhausted:  # a chain the budget cut short may gain when run further
            done.add((r1, c1))
        state.restore(start)
    if best is None:
        return 0
    state.restore(best)
    return 1
