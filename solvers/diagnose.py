"""Say why a window has no feasible assignment: which constraint, which requests.

Cheap, sufficient conditions checked in order of how specific their message is; the last resort
names the resource with the least room. Used when deferral is off.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solvers.tuning import TOL

MAX_NAMED = 8  # requests a message names before "and N more"


def _names(problem: Problem, rows: NDArray[np.int64]) -> str:
    ids = [f'"{problem.request_ids[r]}"' for r in rows[:MAX_NAMED]]
    more = f" and {len(rows) - MAX_NAMED} more" if len(rows) > MAX_NAMED else ""
    return ", ".join(ids) + more


def why_not_allowed(problem: Problem, r: int, n: int) -> str:
    """Why pair (r, n) is excluded."""
    q, lat = problem.quality[r, n], problem.latency_s[r, n]
    if not np.isfinite(lat):
        return "unreachable, input not supported, or forbidden by an override"
    if not np.isnan(problem.min_quality[r]) and q < problem.min_quality[r]:
        return f"quality {q:.3f} < its floor {problem.min_quality[r]:.3f}"
    if lat > problem.deadline_s[r]:
        return f"latency {lat:.2f} s > its deadline {problem.deadline_s[r]:.2f} s"
    return "not allowed"


def infeasibility_reason(problem: Problem) -> str | None:
    """A sentence naming the constraint and requests that make the window infeasible.

    Returns None when none of the sufficient conditions holds (the window may still be
    infeasible through an interplay of constraints; the caller then says so).
    """
    if problem.deferral_allowed:
        return None
    allowed = problem.allowed
    for r in np.flatnonzero(~allowed.any(axis=1)).tolist():
        reasons = "; ".join(
            f'"{node}": {why_not_allowed(problem, r, n)}' for n, node in enumerate(problem.node_ids)
        )
        return f'request "{problem.request_ids[r]}" may run on no node ({reasons})'
    cap = problem.node_memory_gb
    fits = allowed & (problem.memory_gb <= cap[None, :] + TOL)
    for r in np.flatnonzero(~fits.any(axis=1)).tolist():
        nodes = np.flatnonzero(allowed[r])
        best = nodes[np.argmax(cap[nodes])]
        return (
            f'request "{problem.request_ids[r]}" needs {problem.memory_gb[r, best]:.2f} GB of KV '
            f"cache; the most free on any node it may use is {cap[best]:.2f} GB (node "
            f'"{problem.node_ids[best]}") and it may not go elsewhere'
        )
    crossing = problem.route_links[problem.request_site]  # (R, N, K)
    must_cross = np.all(crossing | ~allowed[:, :, None], axis=1)  # (R, K)
    for k, link in enumerate(problem.link_ids):
        rows = np.flatnonzero(must_cross[:, k])
        load = problem.upload_megabits[rows].sum()
        if load > problem.link_capacity_megabits[k] + TOL:
            return (
                f'bandwidth on link "{link}": requests {_names(problem, rows)} must all cross it, '
                f"{load:.1f} Mb in total against {problem.link_capacity_megabits[k]:.1f} Mb in the "
                "window"
            )
    only = allowed.sum(axis=1) == 1
    for n, node in enumerate(problem.node_ids):
        rows = np.flatnonzero(only & allowed[:, n])
        need = problem.memory_gb[rows, n].sum()
        if np.isfinite(cap[n]) and need > cap[n] + TOL:
            return (
                f'memory on node "{node}": requests {_names(problem, rows)} may run only there and '
                f"need {need:.2f} GB of KV cache against {cap[n]:.2f} GB free"
            )
    pooled = _pooled_memory_reason(problem)
    if pooled is not None:
        return pooled
    if problem.floor_gain is not None and problem.num_requests:
        best = np.where(allowed, problem.floor_gain, -np.inf).max(axis=1)
        if best.sum() < -TOL:
            return (
                f"quality floor: even with every request on the node that serves the floor best, "
                f"its sum is {best.sum():.4f} < 0 ({_floor_target(problem)})"
            )
    return None


def _pooled_memory_reason(problem: Problem) -> str | None:
    """The requests that may use only nodes of bounded memory, each on the one where it needs
    least, need more than all those nodes hold together (the one-node check, widened to the
    nodes they share); None otherwise."""
    allowed, cap = problem.allowed, problem.node_memory_gb
    bounded = np.isfinite(cap)
    rows = np.flatnonzero(allowed.any(axis=1) & ~(allowed & ~bounded[None, :]).any(axis=1))
    if len(rows) < 2:  # one request alone: the per-request check above covers it
        return None
    least = np.where(allowed[rows], problem.memory_gb[rows], np.inf).min(axis=1)
    nodes = np.flatnonzero(allowed[rows].any(axis=0))
    need, room = float(least.sum()), float(cap[nodes].sum())
    if need <= room + TOL:
        return None
    names = ", ".join(f'"{problem.node_ids[n]}"' for n in nodes[:MAX_NAMED])
    names += f" and {len(nodes) - MAX_NAMED} more" if len(nodes) > MAX_NAMED else ""
    return (
        f"memory on nodes {names}: requests {_names(problem, rows)} may run only there and, "
        f"each on the node where it needs least, need {need:.2f} GB of KV cache against "
        f"{room:.2f} GB free on those nodes together"
    )


def _floor_target(problem: Problem) -> str:
    if problem.quality_target is not None:
        return f"target {problem.quality_target:.4f}"
    return "each request against its reference quality"
