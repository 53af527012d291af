"""Measure an assignment against a problem: objective, resource use, violations, binding limits.

``assignment[r]`` is the node index of request r, or ``-1`` when it is deferred.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlmio_opt.formulations.problem import Problem

DEFERRED = -1
TOL = 1e-6
BINDING_SHARE = 0.99


@dataclass(frozen=True)
class Evaluation:
    """What an assignment achieves under the problem's model.

    ``node_congestion_s`` is the total extra latency congestion adds on each node; a request's
    latency is its stand-alone latency plus its node's average share of that.
    """

    objective: float
    mean_latency_s: float | None
    mean_quality: float | None
    node_requests: np.ndarray
    node_congestion_s: np.ndarray
    node_memory_gb: np.ndarray
    link_requests: np.ndarray
    link_megabits: np.ndarray
    violations: tuple[str, ...]
    binding: tuple[str, ...]

    @property
    def feasible(self) -> bool:
        return not self.violations

    def request_latency_s(self, problem: Problem, assignment: np.ndarray) -> np.ndarray:
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


def link_load(problem: Problem, assignment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Megabits and request counts per link for ``assignment``."""
    placed = assignment >= 0
    rows = problem.route_links[problem.request_site[placed], assignment[placed]]  # (P, K)
    megabits = (
        problem.upload_megabits[placed] @ rows if rows.size else np.zeros(len(problem.link_ids))
    )
    return np.asarray(megabits, dtype=float), rows.sum(axis=0).astype(np.int64)


def evaluate(problem: Problem, assignment: np.ndarray) -> Evaluation:
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
    node_memory = np.bincount(
        nodes, weights=problem.memory_gb[idx, nodes], minlength=problem.num_nodes
    )
    link_mb, link_requests = link_load(problem, assignment)

    violations: list[str] = []
    binding: list[str] = []
    rid = problem.request_ids
    for r, n in zip(idx, nodes, strict=True):
        if not problem.allowed[r, n]:
            violations.append(f'request "{rid[r]}" is not allowed on node "{problem.node_ids[n]}"')
    if num_deferred and not problem.deferral_allowed:
        violations.append(f"{num_deferred} request(s) deferred but deferral is off")
    for n, node in enumerate(problem.node_ids):
        cap = problem.node_memory_gb[n]
        if np.isfinite(cap):
            if node_memory[n] > cap + TOL:
                violations.append(
                    f'memory on node "{node}": {node_memory[n]:.3f} GB > {cap:.3f} GB free'
                )
            elif node_memory[n] >= BINDING_SHARE * cap:
                binding.append(f'memory on node "{node}" ({node_memory[n] / cap:.1%})')
    for k, link in enumerate(problem.link_ids):
        cap = problem.link_capacity_megabits[k]
        if link_mb[k] > cap + TOL:
            violations.append(f'bandwidth on link "{link}": {link_mb[k]:.1f} Mb > {cap:.1f} Mb')
        elif link_mb[k] >= BINDING_SHARE * cap:
            binding.append(f'bandwidth on link "{link}" ({link_mb[k] / cap:.1%})')
    if problem.quality_target is not None and len(idx):
        slack = float((quality - problem.quality_target).sum())
        if slack < -TOL:
            violations.append(
                f"mean quality {quality.mean():.4f} is below the target "
                f"{problem.quality_target:.4f}"
            )
        elif slack <= 1e-3 * len(idx):
            binding.append(f"quality target {problem.quality_target:.4f}")
    return Evaluation(
        objective=objective,
        mean_latency_s=float((latency.sum() + congestion.sum()) / len(idx)) if len(idx) else None,
        mean_quality=float(quality.mean()) if len(idx) else None,
        node_requests=node_requests,
        node_congestion_s=congestion,
        node_memory_gb=node_memory,
        link_requests=link_requests,
        link_megabits=link_mb,
        violations=tuple(violations),
        binding=tuple(binding),
    )
