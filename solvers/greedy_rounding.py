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

from qlmio_opt.solvers.greedy_state import TOL, Window

NEGLIGIBLE = 1e-4  # weights below this are not considered as placements
COUNT_SLACK = 1e-3  # expected counts within this of an integer are not rounded up


def round_weights(window: Window, weights: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Columns from the soft-min weights ``(C, R)``, capacity-aware (see the module notes)."""
    w = window
    num_c, num_r = weights.shape
    quota = np.ceil(weights.sum(axis=1, dtype=float) - COUNT_SLACK).astype(np.int64)
    quota[w.defer] = num_r  # deferral has no count
    candidate = (weights > NEGLIGIBLE) & w.finite.T
    flat = np.flatnonzero(candidate)  # column-major pairs, c * R + r
    order = flat[np.argsort(-weights.ravel()[flat], kind="stable")]
    cols_of, rows_of = np.divmod(order, num_r)

    s = w.scalars()
    memory, memory_cap, upload = s["memory"], s["memory_cap"], s["upload"]
    site, link_cap = s["site"], s["link_cap"]
    paths = [
        [tuple(np.flatnonzero(w.paths[i, c]).tolist()) for c in range(num_c)]
        for i in range(len(w.paths))
    ]
    memory_load = [0.0] * num_c
    link_load = [0.0] * len(link_cap)
    left = quota.tolist()
    columns = [-1] * num_r
    for c, r in zip(cols_of.tolist(), rows_of.tolist(), strict=True):
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
    result = np.asarray(columns, dtype=np.int64)
    return np.where(result < 0, fallback, result)
