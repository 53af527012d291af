"""Iterated local search for the greedy: kick, repair, descend, keep what is better.

The searches of :mod:`qlmio_opt.solvers.local_search` end in a local optimum of their moves
(shifts, pairs, swaps, room-making cascades, ejection chains). On tight windows (the
generalized-assignment-style ones: every node nearly full, deferral off) the optimum is often
several moves away, across states that are worse or overloaded. :func:`perturbed_search` gets
there by rounds of the standard iterated local search:

1. a *kick* moves a few requests at random, alternately (first)

   * :func:`feasible_kick`: random shifts and swaps that keep every capacity, and
   * :func:`chain_kick`: a chain of related moves (a request to another column, a request of
     that column on to a third, ...) that may overload, then repaired by
     :func:`~qlmio_opt.solvers.local_search.penalty_descent`;

2. improving shifts and swaps until none is left (:func:`settle`);
3. the result replaces the best state if it is better, and becomes the state the next kick
   starts from if it is within :data:`~qlmio_opt.solvers.tuning.PERTURB_ACCEPT` of the best
   (a walk over near-equal local optima instead of kicking the same one again).

The draws come from a generator seeded by the solve's seed and the rounds are counted against a
work budget, so the answer depends only on the problem and the seed.
"""

from __future__ import annotations

import numpy as np

from qlmio_opt.solvers.greedy_state import State, Weights
from qlmio_opt.solvers.local_search import Budget, penalty_descent, shift_pass, swap_pass
from qlmio_opt.solvers.tuning import (
    IMPROVES,
    KICK_SIZES,
    PERTURB_ACCEPT,
    PERTURB_PENALTY_PASSES,
    ROOM_GROWTH,
)

# a feasible kick draws at most this many candidate moves per move it makes (not tuning: it
# only bounds the tries on a window where few random moves fit)
_TRIES_PER_MOVE = 4


def perturbed_search(
    state: State,
    budget: Budget,
    weights: Weights,
    rng: np.random.Generator,
    target: float = -np.inf,
) -> State:
    """Rounds of kick, repair and descent until ``budget`` ends or the best is at or below
    ``target``.

    Parameters
    ----------
    state
        A feasible state (left as it is).
    budget
        Work for all rounds.
    weights
        Overload penalties of the repair after a chain kick.
    rng
        The kicks' random draws.
    target
        A value below which no round need look further (the lower bound plus a stopping gap).

    Returns
    -------
    State
        The best state found (``state`` itself if no round improved on it).
    """
    best = current = state
    kick = 0
    while not budget.exhausted and best.value > target:
        size = KICK_SIZES[kick % len(KICK_SIZES)]
        trial = current.copy()
        if kick % 2 == 0:
            feasible_kick(trial, rng, size)
        else:
            chain_kick(trial, rng, size)
        kick += 1
        repaired = penalty_descent(
            trial, budget, weights, passes=PERTURB_PENALTY_PASSES, grow=ROOM_GROWTH
        )
        if not repaired:
            continue
        settle(trial, budget)
        if trial.value < best.value - IMPROVES:
            best = current = trial
        elif trial.value <= best.value + PERTURB_ACCEPT * max(1.0, abs(best.value)):
            current = trial
    return best


def settle(state: State, budget: Budget) -> None:
    """Improving shifts, then improving swaps, until neither finds one (``state`` feasible)."""
    while not budget.exhausted and (shift_pass(state, budget) or swap_pass(state, budget)):
        pass


def feasible_kick(state: State, rng: np.random.Generator, size: int) -> None:
    """``size`` random moves that keep a feasible ``state`` feasible.

    Each draws a request and another column it may use: it moves there if that fits, else it
    swaps with a random request of that column if the swap fits; a draw that fits neither way
    is dropped (at most ``_TRIES_PER_MOVE * size`` draws).
    """
    w = state.w
    made = 0
    for _ in range(_TRIES_PER_MOVE * size):
        if made >= size:
            break
        r = int(rng.integers(w.num_requests))
        here = int(state.columns[r])
        options = np.flatnonzero(w.finite[r])
        options = options[options != here]
        if not len(options):
            continue
        col = int(options[rng.integers(len(options))])
        if state.fits(r, col):
            state.shift(r, col)
            made += 1
            continue
        others = np.flatnonzero(state.columns == col)
        others = others[w.finite[others, here]]
        if not len(others):
            continue
        j = int(others[rng.integers(len(others))])
        state.shift(r, col)
        state.shift(j, here)
        if state.feasible():
            made += 1
        else:
            state.shift(j, col)
            state.shift(r, here)


def chain_kick(state: State, rng: np.random.Generator, size: int) -> None:
    """``size`` related random moves, capacities unchecked (the caller repairs).

    The first request is a deferred one half the time (when any is deferred: placing one of
    them is what the searches before most often miss), else any; it goes to a random other
    column it may use. Each next request is a random one of the column the last went to (any
    request when that is deferral or holds no other), so the chain frees room where it takes it.
    """
    w = state.w
    deferred = np.flatnonzero(state.columns == w.defer)
    if len(deferred) and rng.random() < 0.5:
        r = int(deferred[rng.integers(len(deferred))])
    else:
        r = int(rng.integers(w.num_requests))
    for _ in range(size):
        here = int(state.columns[r])
        options = np.flatnonzero(w.finite[r])
        options = options[options != here]
        if not len(options):
            r = int(rng.integers(w.num_requests))
            continue
        col = int(options[rng.integers(len(options))])
        state.shift(r, col)
        others = np.flatnonzero(state.columns == col)
        others = others[others != r]
        if col == w.defer or not len(others):
            r = int(rng.integers(w.num_requests))
        else:
            r = int(others[rng.integers(len(others))])
