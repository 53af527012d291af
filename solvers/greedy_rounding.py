"""Rounding the smoothed Lagrangian solution to a starting assignment for the greedy.

At the dual prices many requests are nearly indifferent between columns (two identical cloud
nodes, say). Giving each request its column of least reduced cost then sends all of them the same
way, overloading that node's links and congestion. The smoothed dual also gives each request a
distribution over columns (the soft-min weights ``p``), whose column totals meet the capacities
about as the relaxation does. :func:`round_weights` places requests by those weights, most
confident first, keeping each node's count within its expected count (rounded up) and every
memory and link capacity within its limit; requests that fit nowhere keep the given fallback
column (the repair then deals with them).
"""

from __future__ import annotations

import numpy as np

from qlmio_opt.solvers.greedy_state import Floats, IntArray, Window
from qlmio_opt.solvers.tuning import COUNT_SLACK, NEGLIGIBLE, TOL


def round_weights(window: Window, weights: Floats, fallback: IntArray) -> IntArray:
    """Columns from the soft-min weights ``(C, R)``, capacity-aware (see the module notes)."""
    num_r = weights.shape[1]
    quota = np.ceil(weights.sum(axis=1, dtype=float) - COUNT_SLACK).astype(np.int64)
    quota[window.defer] = num_r  # deferral has no count
    columns = _place_in_order(window, _candidates_by_weight(window, weights), quota.tolist())
    result = np.asarray(columns, dtype=np.int64)
    return np.where(result < 0, fallback, result)


def _candidates_by_weight(window: Window, weights: Floats) -> list[tuple[int, int]]:
    """``(column, request)`` of every pair worth placing, heaviest weight first."""
    num_r = weights.shape[1]
    candidate = (weights > NEGLIGIBLE) & window.finite.T
    flat = np.flatnonzero(candidate)  # column-major pairs, c * R + r
    order = flat[np.argsort(-weights.ravel()[flat], kind="stable")]
    cols_of, rows_of = np.divmod(order, num_r)
    return list(zip(cols_of.tolist(), rows_of.tolist(), strict=True))


def _place_in_order(window: Window, pairs: list[tuple[int, int]], left: list[int]) -> list[int]:
    """Each request on the first of its ``pairs`` whose column has count quota ``left`` and
    room in memory and on every link of its path (-1: none had).

    The loads are plain Python lists, not :class:`~qlmio_opt.solvers.capacity.Loads`: this
    loop runs once per candidate pair (up to R x C), where NumPy's per-call cost dominates.
    """
    w = window
    s = w.scalars
    memory, memory_cap, upload = s.memory, s.memory_cap, s.upload
    site, link_cap = s.site, s.link_cap
    num_c = w.num_nodes + 1
    paths = [
        [tuple(np.flatnonzero(w.paths[i, c]).tolist()) for c in range(num_c)]
        for i in range(len(w.paths))
    ]
    memory_load = [0.0] * num_c
    link_load = [0.0] * len(link_cap)
    columns = [-1] * w.num_requests
    for c, r in pairs:
        if columns[r] >= 0 or not left[c]:
            continue
        need = memory[r][c]
        if need and memory_load[c] + need > memory_cap[c] + TOL:
            continue
        links = paths[site[r]][c]
        if links:
            size = upload[r]
            fits = True
            for k in links:  # a plain loop, not any(<generator>): it runs once per candidate
                if link_load[k] + size > link_cap[k] + TOL:
                    fits = False
                    break
            if not fits:
                continue
            for k in links:
                link_load[k] += size
        memory_load[c] += need
        left[c] -= 1
        columns[r] = c
    return columns
