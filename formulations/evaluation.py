"""Measure an assignment against a problem: objective, resource use, violations, binding limits.

``assignment[r]`` is the node index of request r, or ``-1`` when it is deferred.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qlmio_opt.formulations.problem import Problem

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

TOL = 1e-6  # a load this far over its capacity is not reported (the solvers' sums round)
# A constraint is reported binding at 99% of its capacity, and the quality floor when the
# placed requests' quality is within 0.001 per request of the target. Chosen by hand, not
# measured: they only choose what ``binding`` lists, never a decision.
BINDING_SHARE = 0.99
QUALITY_BINDING_SLACK = 1e-3


@dataclass(frozen=True)
class Evaluation:
    """What an assignment achieves under the problem's model.

    ``node_congestion_s`` is the total extra latency congestion adds on each node; a request's
    latency is its stand-alone latency plus its node's average share of that.
    """

    objective: float
    mean_latency_s: float | None
    mean_quality: float | None
    node_requests: IntArray
    node_congestion_s: FloatArray
    node_memory_gb: FloatArray
    link_requests: IntArray
    link_megabits: FloatArray
    violations: tuple[str, ...]
    binding: tuple[str, ...]

    @property
    def feasible(self) -> bool:
        return not self.violations

    def request_latency_s(self, problem: Problem, assignment: IntArray) -> FloatArray:
        """Each placed request's latency with its node's congestion share (NaN if deferred)."""
        out = np.full(len(assignment), np.nan)
        placed = assignment >= 0
        nodes = assignment[placed]
        share = np.divide(
            self.node_congestion_s,
            self.node_requests,
            out=np.zeros_like(self.node_congestion_s),
            where=self.node_requests > 0,
        )
        out[placed] = problem.latency_s[np.flatnonzero(placed), nodes] + share[nodes]
        return out


def link_load(problem: Problem, assignment: IntArray) -> tuple[FloatArray, IntArray]:
    """Megabits and request counts per link for ``assignment``."""
    placed = assignment >= 0
    rows = problem.route_links[problem.request_site[placed], assignment[placed]]  # (P, K)
    megabits = (
        problem.upload_megabits[placed] @ rows if rows.size else np.zeros(len(problem.link_ids))
    )
    return np.asarray(megabits, dtype=float), rows.sum(axis=0).astype(np.int64)


def evaluate(problem: Problem, assignment: IntArray) -> Evaluation:
    """Objective (with congestion) and every constraint of ``problem`` for ``assignment``."""
    assignment = np.asarray(assignment, dtype=np.int64)
    if assignment.shape != (problem.num_requests,):
        raise ValueError(
            f"assignment has shape {assignment.shape}, expected ({problem.num_requests},)"
        )
    placed = assignment >= 0
    idx = np.flatnonzero(placed)
    nodes = assignment[placed]
    latency = problem.latency_s[idx, nodes]
    quality = problem.quality[idx, nodes]
    cost = problem.pair_cost(masked=False)[idx, nodes]  # a rule may break eligibility: say so
    num_deferred = int((~placed).sum())
    node_requests = np.bincount(nodes, minlength=problem.num_nodes)
    congestion = problem.congestion_s(node_requests)
    objective = float(cost.sum()) + problem.latency_cost_weight * float(congestion.sum())
    if num_deferred:
        objective += num_deferred * problem.deferral_cost()
    node_memory = np.asarray(
        np.bincount(nodes, weights=problem.memory_gb[idx, nodes], minlength=problem.num_nodes),
        dtype=float,
    )
    link_mb, link_requests = link_load(problem, assignment)
    checks: tuple[Limits, ...] = (
        (_assignment_violations(problem, idx, nodes, num_deferred), []),
        _memory_limits(problem, node_memory),
        _link_limits(problem, link_mb),
        _quality_limit(problem, quality, _floor_gains(problem, idx, nodes)),
    )
    return Evaluation(
        objective=objective,
        mean_latency_s=float((latency.sum() + congestion.sum()) / len(idx)) if len(idx) else None,
        mean_quality=float(quality.mean()) if len(idx) else None,
        node_requests=node_requests,
        node_congestion_s=congestion,
        node_memory_gb=node_memory,
        link_requests=link_requests,
        link_megabits=link_mb,
        violations=tuple(v for broken, _ in checks for v in broken),
        binding=tuple(b for _, at_limit in checks for b in at_limit),
    )


Limits = tuple[list[str], list[str]]
"""The constraints an assignment breaks, and those it meets at their limit."""


def _assignment_violations(
    problem: Problem, idx: IntArray, nodes: IntArray, num_deferred: int
) -> list[str]:
    """Pairs that are not allowed, and deferrals when deferral is off."""
    violations = []
    rid = problem.request_ids
    for r, n in zip(idx.tolist(), nodes.tolist(), strict=True):
        if not problem.allowed[r, n]:
            violations.append(f'request "{rid[r]}" is not allowed on node "{problem.node_ids[n]}"')
    if num_deferred and not problem.deferral_allowed:
        violations.append(f"{num_deferred} request(s) deferred but deferral is off")
    return violations


def _memory_limits(problem: Problem, node_memory: FloatArray) -> Limits:
    """Nodes whose KV memory is over its capacity, or at :data:`BINDING_SHARE` of it."""
    violations, binding = [], []
    for n, node in enumerate(problem.node_ids):
        cap = problem.node_memory_gb[n]
        if np.isfinite(cap):
            if node_memory[n] > cap + TOL:
                violations.append(
                    f'memory on node "{node}": {node_memory[n]:.3f} GB > {cap:.3f} GB free'
                )
            elif node_memory[n] >= BINDING_SHARE * cap:
                share = f"{node_memory[n] / cap:.1%}" if cap > 0 else "no memory free"
                binding.append(f'memory on node "{node}" ({share})')
    return violations, binding


def _link_limits(problem: Problem, link_mb: FloatArray) -> Limits:
    """Links whose load is over their capacity in the window, or at :data:`BINDING_SHARE`."""
    violations, binding = [], []
    for k, link in enumerate(problem.link_ids):
        cap = problem.link_capacity_megabits[k]
        if link_mb[k] > cap + TOL:
            violations.append(f'bandwidth on link "{link}": {link_mb[k]:.1f} Mb > {cap:.1f} Mb')
        elif link_mb[k] >= BINDING_SHARE * cap:
            binding.append(f'bandwidth on link "{link}" ({link_mb[k] / cap:.1%})')
    return violations, binding


def _floor_gains(problem: Problem, idx: IntArray, nodes: IntArray) -> FloatArray:
    if problem.floor_gain is None:
        return np.zeros(0)
    return np.asarray(problem.floor_gain[idx, nodes], dtype=float)


def _quality_limit(problem: Problem, quality: FloatArray, gain: FloatArray) -> Limits:
    """The quality floor (``quality_floor`` only): broken when ``sum floor_gain`` over the placed
    requests is negative, binding when it is within :data:`QUALITY_BINDING_SLACK` per placed
    request."""
    if problem.floor_gain is None or not len(gain):
        return [], []
    slack = float(gain.sum())
    if slack < -TOL:
        return [f"quality floor broken: {floor_words(problem, quality, gain)}"], []
    if slack <= QUALITY_BINDING_SLACK * len(gain):
        return [], [f"quality floor ({floor_words(problem, quality, gain)})"]
    return [], []


def floor_words(problem: Problem, quality: FloatArray, gain: FloatArray) -> str:
    """The floor's state in words: against an explicit target, or against the references."""
    if problem.quality_target is not None:
        return f"mean quality {quality.mean():.4f}, target {problem.quality_target:.4f}"
    tolerance = problem.objective.quality_tolerance
    return (
        f"the placed requests' quality is {gain.mean() - tolerance:+.4f} on average against "
        f"their references (tolerance {tolerance:.4f})"
    )
