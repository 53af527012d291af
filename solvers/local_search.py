"""Moves of the greedy solver on a :class:`~qlmio_opt.solvers.greedy_state.State`.

Every single-request move (a *shift* of request r to column c, deferral included) is evaluated
for all requests at once as ``(R, C)`` tables: :func:`shift_table` (exact objective change,
congestion included), :func:`fits_table` (capacities) and :func:`penalty_table` (change in
weighted overload). Passes then apply the best moves one by one, each re-checked exactly
against the state as it is by then.

Work is metered by a :class:`Budget` in units of about a microsecond of NumPy time, counted,
not timed, so the answer does not depend on the machine's load.
"""

from __future__ import annotations

import time

import numpy as np

from qlmio_opt.solvers.greedy_state import BoolArray, FloatArray, IntArray, State, Weights
from qlmio_opt.solvers.tuning import (
    CELL_WORK,
    CHECK_WORK,
    EJECT_ROOTS,
    EJECT_SECONDS,
    IMPROVES,
    MAX_CHECKS,
    PAIR_CANDIDATES,
    PRICED_PASSES,
    SWAP_MOVERS,
    SWAP_SECONDS_PER_CELL,
    TABLE_WORK,
    TOL,
)


class Budget:
    """How much search is left, in work units (about a microsecond of NumPy time each).

    Parameters
    ----------
    work
        Work units the search may spend.
    deadline
        ``time.perf_counter()`` value after which the search stops, or None.
    """

    def __init__(self, work: float, deadline: float | None = None) -> None:
        self.left = float(work)
        self.deadline = deadline

    def spend(self, work: float) -> None:
        self.left -= work

    def spend_table(self, cells: int) -> None:
        """Charge one pass's move tables over ``cells`` request-column pairs."""
        self.left -= TABLE_WORK + CELL_WORK * cells

    @property
    def exhausted(self) -> bool:
        if self.left <= 0:
            return True
        return self.deadline is not None and time.perf_counter() > self.deadline


def shift_table(
    state: State, budget: Budget | None = None, subset: IntArray | None = None
) -> FloatArray:
    """``(R, C)`` exact objective change of moving each request to each column (inf: no move);
    only the rows of ``subset``, in its order, when given (charged as a full table)."""
    w, a, rows, cost = state.w, state.columns, state.rows, state.w.cost
    if budget is not None:
        budget.spend_table(w.cost.size)
    if subset is not None:
        a, rows, cost = a[subset], subset, cost[subset]
    add, remove = state.marginals()
    delta = cost - w.cost[rows, a][:, None]
    delta += add[None, :] - remove[a][:, None]
    delta[np.arange(len(a)), a] = np.inf
    return delta


def fits_table(state: State, quality: bool = True) -> BoolArray:
    """``(R, C)`` whether each move pushes no capacity over (or further over) its limit.

    Staying put counts as fitting. With ``quality=False`` the quality floor is not checked.
    """
    w, a = state.w, state.columns
    ok = np.isfinite(w.cost)
    ok &= state.memory_load[None, :] + w.memory <= w.memory_cap[None, :] + TOL
    if len(w.links):
        slack = w.link_cap - state.link_load
        room = np.where(w.gained, slack, np.inf).min(axis=3)  # (site, from, to)
        ok &= w.upload[:, None] <= room[w.site, a] + TOL
    if quality and w.gain is not None:
        after = state.quality_slack + w.gain - w.gain[state.rows, a][:, None]
        ok &= after >= min(state.quality_slack, 0.0) - TOL
    ok[state.rows, a] = True
    return ok


def penalty_table(state: State, weights: Weights, subset: IntArray | None = None) -> FloatArray:
    """``(R, C)`` change in weighted overload of every shift (only the rows of ``subset``, in
    its order, when given)."""
    w, a, rows = state.w, state.columns, state.rows
    memory, crossing, upload, gain = w.memory, w.crossing, w.upload, w.gain
    if subset is not None:
        a, rows = a[subset], subset
        memory, crossing, upload = memory[subset], crossing[subset], upload[subset]
        gain = None if gain is None else gain[subset]
    index = np.arange(len(a))
    load, cap = state.memory_load, w.memory_cap
    excess_memory = load - cap  # -inf on columns without a memory row
    over = np.maximum(excess_memory, 0.0)
    table = np.maximum(memory + excess_memory, 0.0)
    table -= over
    table *= weights.memory
    freed = np.maximum(excess_memory[a] - w.memory[rows, a], 0.0) - over[a]
    table += (weights.memory[a] * freed)[:, None]
    # only links that one move could push over (or that are over) can change
    link_load = state.link_load
    hot = np.flatnonzero(link_load + w.upload.max(initial=0.0) > w.link_cap + TOL)
    if len(hot):
        # A move changes link l's overload only if it starts (``on``) or stops (``off``)
        # crossing it, so the table is one pass over (R, C, L): crossing @ (on - off) over the
        # links the request does not cross now (on) and does (off), plus the sum of every
        # ``off`` of its present path. Links that are not hot weigh 0.
        link_w = np.zeros(len(link_load))
        link_w[hot] = weights.link[hot]
        excess = link_load - w.link_cap
        now = np.maximum(excess, 0.0)
        here = crossing[index, a]  # (R, L) the present paths
        lift = upload[:, None]
        on = (np.maximum(excess + lift, 0.0) - now) * link_w
        off = (np.maximum(excess - lift, 0.0) - now) * link_w
        off *= here
        on -= here * on
        table += np.einsum("rcl,rl->rc", crossing, on - off)
        table += off.sum(axis=1)[:, None]
    if gain is not None and w.gain is not None:
        after = state.quality_slack + gain - w.gain[rows, a][:, None]
        table += weights.quality * (np.maximum(-after, 0.0) - max(-state.quality_slack, 0.0))
    table[index, a] = 0.0
    return table


def overload_cost(state: State, weights: Weights) -> float:
    """Weighted total overload of ``state`` (0 when feasible)."""
    memory, links, deficit = state.violations()
    return float(weights.memory @ memory + weights.link @ links + weights.quality * deficit)


def price_table(state: State, memory: FloatArray, link: FloatArray, quality: float) -> FloatArray:
    """``(R, C)`` priced resource use of every pair: memory, bandwidth, minus quality gain."""
    w = state.w
    use = memory[None, :] * w.memory
    if len(w.links):
        use = use + w.upload[:, None] * (w.paths.astype(float) @ link)[w.site]
    if w.gain is not None:
        use = use - quality * w.gain
    return use


def improving_order(gain: FloatArray) -> IntArray:
    """Indices of the (at most :data:`MAX_CHECKS`) entries below ``-IMPROVES``, most negative
    first, ties in index order."""
    found = np.flatnonzero(gain < -IMPROVES)
    return found[np.argsort(gain[found], kind="stable")][:MAX_CHECKS]


def shift_pass(state: State, budget: Budget, price: FloatArray | None = None) -> int:
    """Apply improving shifts that fit, best first, each re-checked exactly.

    With ``price`` (a :func:`price_table`) moves are judged by objective change plus the change
    in priced resource use. Returns the number of moves made.
    """
    delta = shift_table(state, budget)
    if price is not None:
        delta += price - price[state.rows, state.columns][:, None]
    delta = np.where(fits_table(state), delta, np.inf)
    best = np.argmin(delta, axis=1)
    order = improving_order(delta[state.rows, best])
    budget.spend(CHECK_WORK * len(order))
    moved = 0
    for r, col in zip(order.tolist(), best[order].tolist(), strict=True):
        change = state.shift_delta(r, col)
        if price is not None:
            change += price[r, col] - price[r, state.columns[r]]
        if change < -IMPROVES and state.fits(r, col):
            state.shift(r, col)
            moved += 1
    return moved


def penalty_descent(
    state: State,
    budget: Budget,
    weights: Weights,
    passes: int,
    grow: float,
    limit: float = np.inf,
) -> bool:
    """Reach feasibility by shifts that lower objective plus weighted overload.

    A move may overload another resource if that is cheaper than its alternatives, so requests
    cascade (r1 leaves a full node for a second one, r2 leaves that one, ...). The weights of
    resources still overloaded after a pass are multiplied by ``grow``. Frozen requests stay.
    Gives up once the objective exceeds ``limit`` (a room-making chain that already costs more
    than it can gain). Returns whether the state is feasible at the end.
    """
    for _ in range(passes):
        if state.feasible():
            return True
        if budget.exhausted or state.value > limit:
            break
        table = shift_table(state, budget) + penalty_table(state, weights)
        table[state.frozen] = np.inf
        rows = state.rows
        best = np.argmin(table, axis=1)
        checks = improving_order(table[np.arange(len(rows)), best])
        budget.spend(CHECK_WORK * len(checks))
        memory_w, link_w = weights.memory.tolist(), weights.link.tolist()
        for r, col in zip(rows[checks].tolist(), best[checks].tolist(), strict=True):
            change = state.shift_delta(r, col)
            change += state.overload_delta(r, col, memory_w, link_w, weights.quality)
            if change < -IMPROVES:
                state.shift(r, col)
        memory, links, deficit = state.violations()
        weights = Weights(
            np.where(memory > TOL, weights.memory * grow, weights.memory),
            np.where(links > TOL, weights.link * grow, weights.link),
            weights.quality * (grow if deficit > TOL else 1.0),
        )
    return state.feasible()


def pair_pass(state: State, budget: Budget, candidates: int = PAIR_CANDIDATES) -> int:
    """Blocked improving shifts, each with the best second move that makes the state feasible.

    A first move ``r1 -> c1`` that would gain but overloads something (a node's memory, a link,
    the quality floor) is applied; every second move ``r2 -> c2`` after which nothing is
    overloaded is evaluated exactly (a swap is ``c2`` = r1's old column; an eviction to
    deferral makes room for a more valuable request). The best pair is kept if it gains.
    Returns the number of pairs kept.
    """
    blocked = np.where(fits_table(state), np.inf, shift_table(state, budget))
    flat = np.argsort(blocked, axis=None, kind="stable")[:candidates]
    any_overload = Weights(
        np.isfinite(state.w.memory_cap).astype(float), np.ones(len(state.w.links)), 1.0
    )
    kept = 0
    for index in flat:
        r1, c1 = (int(i) for i in np.unravel_index(index, blocked.shape))
        if not blocked[r1, c1] < -IMPROVES or budget.exhausted:
            break
        first = state.shift_delta(r1, c1)
        if state.fits(r1, c1):  # an earlier pair made room: a plain shift now
            if first < -IMPROVES:
                state.shift(r1, c1)
                kept += 1
            continue
        back = int(state.columns[r1])
        state.shift(r1, c1)
        over = overload_cost(state, any_overload)
        # only requests using every overloaded node and link can end the overload
        memory, links, _ = state.violations()
        subset = _relievers(state, memory, links) if over > TOL else state.rows
        ends_feasible = penalty_table(state, any_overload, subset) + over <= TOL
        second = np.where(ends_feasible, shift_table(state, budget, subset), np.inf)
        second[subset == r1] = np.inf
        best = int(np.argmin(second)) if second.size else 0
        if second.size and first + second.flat[best] < -IMPROVES:
            r2, c2 = divmod(best, second.shape[1])
            state.shift(int(subset[r2]), c2)
            kept += 1
        else:
            state.shift(r1, back)
    return kept


def swap_pass(state: State, budget: Budget, movers: int = SWAP_MOVERS) -> int:
    """Apply improving swaps that keep a feasible state feasible, best first.

    A swap exchanges the columns of two requests (a deferred request may take a placed one's
    place), so node counts and congestion stay as they are and the objective changes by the
    pair costs alone. The ``movers`` requests with the largest pair-cost gain from some shift
    are paired with every other request; memory, bandwidth and the quality floor are checked
    for all pairs at once and the best that fit re-checked exactly. Returns the swaps made.
    """
    if not state.feasible():
        return 0
    w, a, rows = state.w, state.columns, state.rows
    change = w.cost - w.cost[rows, a][:, None]  # pair-cost change of every shift
    best = change.min(axis=1)
    found = np.flatnonzero(best < -IMPROVES)
    if not len(found):
        return 0
    m = found[np.argsort(best[found], kind="stable")][:movers]
    am = a[m]
    cells = len(m) * len(rows) * max(len(w.links), 1)
    if budget.deadline is not None and (
        time.perf_counter() + SWAP_SECONDS_PER_CELL * cells > budget.deadline
    ):
        return 0  # its tables would outlast the time limit (they cannot stop half-way)
    budget.spend_table(cells)
    delta = change[m][:, a] + change[:, am].T  # (M, R): mover i takes j's column, j takes i's
    slack = w.memory_cap - state.memory_load
    ok = w.memory[:, am].T - w.memory[m, am][:, None] <= slack[am][:, None] + TOL
    ok &= w.memory[m][:, a] - w.memory[rows, a][None, :] <= slack[a][None, :] + TOL
    if len(w.links):
        here = w.crossing[rows, a]  # (R, L) the present paths
        load = w.upload[m][:, None, None] * (w.crossing[m][:, a] - here[m][:, None, :])
        load += w.upload[None, :, None] * (w.crossing[:, am].transpose(1, 0, 2) - here[None])
        ok &= (load <= (w.link_cap - state.link_load + TOL)[None, None, :]).all(axis=2)
    if w.gain is not None:
        g = w.gain
        after = state.quality_slack + g[m][:, a] - g[m, am][:, None]
        after += g[:, am].T - g[rows, a][None, :]
        ok &= after >= -TOL
    order = improving_order(np.where(ok, delta, np.inf).ravel())
    budget.spend(2 * CHECK_WORK * len(order))
    cost, swapped = w.scalars.cost, 0
    for index in order.tolist():
        i, j = int(m[index // len(rows)]), index % len(rows)
        ci, cj = int(state.columns[i]), int(state.columns[j])
        if ci == cj or not cost[i][cj] - cost[i][ci] + cost[j][ci] - cost[j][cj] < -IMPROVES:
            continue  # stale: an earlier swap moved one of them
        state.shift(i, cj)
        state.shift(j, ci)
        if state.feasible():
            swapped += 1
        else:
            state.shift(j, cj)
            state.shift(i, ci)
    return swapped


def eject_pass(
    state: State,
    budget: Budget,
    roots: int = EJECT_ROOTS,
    seconds: int = EJECT_SECONDS,
) -> int:
    """Blocked improving shifts made to fit by a second move, then refilled: the best chain kept.

    A root ``r1 -> c1`` (an improving shift that does not fit, typically a deferred request
    that could be placed) is applied; each of the ``seconds`` cheapest second moves
    ``r2 -> c2`` after which nothing is overloaded (``r2`` ejected to deferral or another
    column) is applied, and improving shifts that fit then refill what ``r2`` freed. Unlike
    :func:`pair_pass` a chain whose first two moves lose may be kept: it is judged after the
    refill, so one ejection can make room for two insertions (on a node whose optimum is near
    zero, one request deferred instead of two). Every chain starts from the same state; the
    best is kept if it gains. Returns 1 if a chain was kept, else 0.
    """
    if not state.feasible():
        return 0
    blocked = np.where(fits_table(state), np.inf, shift_table(state, budget))
    order = np.argsort(blocked, axis=None, kind="stable")[:roots]
    any_overload = Weights(
        np.isfinite(state.w.memory_cap).astype(float), np.ones(len(state.w.links)), 1.0
    )
    start, before = state.columns.copy(), state.value
    best_value, best = before - IMPROVES, None
    for index in order.tolist():
        r1, c1 = (int(i) for i in np.unravel_index(index, blocked.shape))
        if not blocked[r1, c1] < -IMPROVES or budget.exhausted:
            break
        state.shift(r1, c1)
        for r2, c2 in _second_moves(state, budget, r1, any_overload, seconds):
            state.shift(r2, c2)
            while not budget.exhausted and shift_pass(state, budget):
                pass
            if state.feasible() and state.value < best_value:
                best_value, best = state.value, state.columns.copy()
            state.restore(start)
            state.shift(r1, c1)
        state.restore(start)
    if best is None:
        return 0
    state.restore(best)
    return 1


def _second_moves(
    state: State, budget: Budget, first: int, any_overload: Weights, count: int
) -> list[tuple[int, int]]:
    """The ``count`` cheapest shifts of a request other than ``first`` after which ``state``
    (overloaded by the move of ``first``) overloads nothing, cheapest first."""
    over = overload_cost(state, any_overload)
    memory, links, _ = state.violations()
    subset = _relievers(state, memory, links) if over > TOL else state.rows
    ends_feasible = penalty_table(state, any_overload, subset) + over <= TOL
    second = np.where(ends_feasible, shift_table(state, budget, subset), np.inf)
    second[subset == first] = np.inf
    flat = np.argsort(second, axis=None, kind="stable")[:count]
    moves = []
    for index in flat.tolist():
        r, c = divmod(index, second.shape[1])
        if np.isfinite(second[r, c]):
            moves.append((int(subset[r]), int(c)))
    return moves


def polish(state: State, budget: Budget) -> State:
    """Improving shifts and swaps until neither finds one, then an ejection chain
    (:func:`eject_pass`) and again, until none of them gains (``state`` must be feasible).

    The chains come only after shifts and swaps end, so the polish never ends worse than it
    did without them."""
    while not budget.exhausted and (
        shift_pass(state, budget) or swap_pass(state, budget) or eject_pass(state, budget)
    ):
        pass
    return state


def _relievers(state: State, memory: FloatArray, links: FloatArray) -> IntArray:
    """Requests that use every node and link over its limit (``memory`` and ``links``, the
    overloads) by more than ``TOL``."""
    w, a = state.w, state.columns
    mask = np.ones(w.num_requests, dtype=bool)
    for n in np.flatnonzero(memory > TOL).tolist():
        mask &= a == n
    for k in np.flatnonzero(links > TOL).tolist():
        mask &= w.paths[w.site, a, k]
    return np.flatnonzero(mask)


def descend(state: State, budget: Budget) -> State:
    """Shift passes, and pair passes when no shift improves, until neither does.

    A state that has not moved since a descent last ended is returned as it is.
    """
    while not budget.exhausted and state.settled != state.shifts:
        if shift_pass(state, budget):
            continue
        if not pair_pass(state, budget):
            state.settled = state.shifts
    return state


def priced_search(
    state: State, price: FloatArray, budget: Budget, passes: int = PRICED_PASSES
) -> State:
    """A copy of ``state`` moved by priced shifts, then descended on the true objective.

    Pricing scarce resources moves requests off them even at a small cost, which makes room
    for moves the plain descent cannot reach (e.g. placing a deferred request).
    """
    trial = state.copy()
    for _ in range(passes):
        if budget.exhausted or not shift_pass(trial, budget, price):
            break
    return descend(trial, budget)
