"""An independent checker: recompute a solution's objective and feasibility from scratch.

:func:`check` takes an instance and a :class:`~qlmio_opt.solution.Solution` (as written by
``qlmio-opt solve --format json``) and re-derives everything the solution claims, from the
instance's raw data and the predictors' matrices only. It deliberately shares no code with
:mod:`qlmio_opt.formulations`, :mod:`qlmio_opt.evaluation` or :mod:`qlmio_opt.solvers`: it is a
second implementation of the model of ``docs/formulation.md``, so that a bug in one shows up as a
disagreement with the other.

What it recomputes
------------------
* routes: the lowest total ``rtt_ms`` path from each site to each node through routers only
  (link end points that are neither sites nor nodes), with networkx on the raw links;
* allowed pairs: reachable, an image-capable node for requests with images, a finite predicted
  latency (a null override latency rules the pair out), ``Q >= min_quality`` and
  ``L <= deadline_s`` on the stand-alone predicted values;
* the assignment: every request exactly once, on a known node or deferred, deferred only when
  ``objective.deferral_penalty_s`` is set;
* KV memory per node against the node's free memory, and megabits per link
  (``(image bytes + 4 bytes per prompt token) * 8 / 1e6`` on every link of the route) against
  ``bandwidth_mbps * window_s``, both with tolerance 1e-6;
* the quality floor of ``quality_floor`` mode, ``sum over placed requests of (Q - T) >= 0``, with
  ``T`` explicit or all-cloud's mean predicted quality less ``quality_tolerance``;
* the objective, with the congestion curve of every node rebuilt from the formulation (queueing
  plus batching, lower convex envelope at the integers), and the mean latency and quality.

The envelope is taken over ``m = 0 .. M_n``, ``M_n`` the number of requests allowed on the node
(the most a valid assignment can place there), which is the tightest convex curve below the raw
model on the counts that can occur. ``S_n``, ``D_n`` and the KV bytes behind ``alpha_n`` are means
over those allowed requests. No congestion is added when the instance gives latencies as
overrides (they are final).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import networkx as nx
import numpy as np

from qlmio_opt.instance import Instance
from qlmio_opt.predictors import Predictions, Predictor, predict
from qlmio_opt.solution import Solution

TOL = 1e-6
"""Absolute tolerance on memory, bandwidth and the quality floor."""

OBJECTIVE_RTOL = 1e-6
"""``|recomputed - reported| <= OBJECTIVE_RTOL * max(1, |recomputed|)`` counts as a match."""

_CONGESTION_PARTS = ("vision_s", "prefill_s", "decode_s", "image_tokens", "output_tokens")


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check` found.

    Attributes
    ----------
    feasible
        True when the solution carries an assignment that breaks no constraint.
    violations
        One sentence per broken constraint, starting with the constraint's name (``assignment``,
        ``deferral``, ``eligibility``, ``memory``, ``bandwidth``, ``quality floor``) and naming the
        request, node or link. A solution without an assignment gets one entry saying so.
    objective
        The recomputed objective (NaN when there is no assignment to check).
    mean_latency_s, mean_quality
        Recomputed means over the placed requests (latency with the congestion shares); None when
        nothing is placed.
    objective_matches
        Whether the solution's own objective equals the recomputed one within
        ``1e-6 * max(1, |objective|)`` (a solution without an assignment matches when it claims no
        objective).
    has_assignment
        False when the solution's status carries no assignment (infeasible or error without one).
    reported_objective
        The objective the solution claims.
    mismatches
        Reported figures other than the objective (means, per-request, per-node and per-link
        figures) that differ from the recomputed ones; informational, not violations.
    node_requests, node_memory_gb, node_congestion_s, link_megabits
        The recomputed usage, by node or link id.
    """

    feasible: bool
    violations: tuple[str, ...]
    objective: float
    mean_latency_s: float | None
    mean_quality: float | None
    objective_matches: bool
    has_assignment: bool = True
    status: str = ""
    reported_objective: float | None = None
    mismatches: tuple[str, ...] = ()
    node_requests: Mapping[str, int] = field(default_factory=dict)
    node_memory_gb: Mapping[str, float] = field(default_factory=dict)
    node_congestion_s: Mapping[str, float] = field(default_factory=dict)
    link_megabits: Mapping[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for a person: verdict, objective, violations and mismatches."""
        if not self.has_assignment:
            lines = [f"no assignment to check (status {self.status})"]
            lines += [f"  - {v}" for v in self.violations[1:]]
            return "\n".join(lines)
        verdict = "feasible" if self.feasible else f"INFEASIBLE ({len(self.violations)})"
        reported = "none" if self.reported_objective is None else f"{self.reported_objective:.6f}"
        match = "matches" if self.objective_matches else "DOES NOT MATCH"
        lines = [
            f"{verdict}; objective {self.objective:.6f} (reported {reported}: {match})",
            f"mean latency {_fmt(self.mean_latency_s, ' s')}, "
            f"mean quality {_fmt(self.mean_quality, '')}",
        ]
        lines += [f"  - {v}" for v in self.violations]
        if self.mismatches:
            lines.append("reported figures that differ:")
            lines += [f"  ~ {m}" for m in self.mismatches]
        return "\n".join(lines)


def _fmt(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:.4f}{unit}"


# -- routing ------------------------------------------------------------------------------------


def routes(instance: Instance) -> dict[tuple[str, str], tuple[str, ...] | None]:
    """Link ids from each site to each node along the lowest-RTT path through routers only.

    ``None`` where no such path exists.
    """
    graph = nx.Graph()
    for link in instance.network.links:
        graph.add_edge(link.from_, link.to, link=link.id, rtt=float(link.rtt_ms))
    node_ids = [n.id for n in instance.nodes]
    endpoints = set(instance.network.sites) | set(node_ids)
    routers = [v for v in graph.nodes if v not in endpoints]
    out: dict[tuple[str, str], tuple[str, ...] | None] = {}
    for site in instance.network.sites:
        for node in node_ids:
            out[(site, node)] = None
            if site not in graph or node not in graph:
                continue
            view = graph.subgraph([*routers, site, node])
            try:
                hops = nx.dijkstra_path(view, site, node, weight="rtt")
            except nx.NetworkXNoPath:
                continue
            out[(site, node)] = tuple(graph.edges[a, b]["link"] for a, b in pairwise(hops))
    return out


# -- congestion ---------------------------------------------------------------------------------


def congestion_total(m: int, concurrency: int, service_s: float, decode_s: float, alpha: float):
    """``Q_n(m) + B_n(m)`` of the formulation, before the convex envelope."""
    # request i waits floor((i - 1) / c) rounds: c requests wait 0, the next c wait 1, ...
    rounds, rest = divmod(m, concurrency)
    queueing = service_s * (concurrency * rounds * (rounds - 1) / 2 + rest * rounds)
    batching = alpha * decode_s * m * (min(m, concurrency) - 1) if m > 0 else 0.0
    return queueing + batching


def lower_envelope(values: np.ndarray) -> np.ndarray:
    """The lower convex envelope of the points ``(m, values[m])``, evaluated at every ``m``."""
    n = len(values)
    if n <= 2:
        return np.asarray(values, dtype=float).copy()
    hull: list[int] = []
    for m in range(n):
        # drop the last hull point while it lies on or above the chord from its predecessor to m
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (values[b] - values[a]) * (m - a) >= (values[m] - values[a]) * (b - a):
                hull.pop()
            else:
                break
        hull.append(m)
    out = np.empty(n)
    for a, b in pairwise(hull):
        for m in range(a, b + 1):
            out[m] = values[a] + (values[b] - values[a]) * (m - a) / (b - a)
    return out


def congestion_curve(
    max_count: int,
    concurrency: int,
    service_s: float,
    decode_s: float,
    alpha: float,
    active: int = 0,
) -> np.ndarray:
    """``E(m)`` for ``m = 0 .. max_count``: the envelope of queueing + batching on that range,
    counted after the node's ``active`` requests of earlier windows."""
    before = congestion_total(active, concurrency, service_s, decode_s, alpha)
    raw = np.array(
        [
            congestion_total(active + m, concurrency, service_s, decode_s, alpha) - before
            for m in range(max_count + 1)
        ]
    )
    return lower_envelope(raw)


# -- the check ----------------------------------------------------------------------------------


def _predictions(instance: Instance, solution: Solution, predictors: Any) -> Predictions:
    if isinstance(predictors, Predictions):
        return predictors
    if predictors is not None:
        return predict(instance, predictors)
    name = solution.predictors or "analytic"
    base = name.split("+")[0]
    # "overrides" alone means every matrix was given; predict() then needs no predictor
    try:
        return predict(instance, "analytic" if base == "overrides" else base)
    except ValueError as err:
        raise ValueError(
            f'the solution names predictors "{name}", which the checker cannot rebuild ({err}); '
            "pass them as check(..., predictors=...)"
        ) from None


def check(
    instance: Instance,
    solution: Solution,
    *,
    predictors: str | Predictor | Predictions | None = None,
) -> CheckReport:
    """Recompute ``solution``'s objective and every constraint from ``instance``.

    Parameters
    ----------
    instance
        The window the solution is for.
    solution
        What a solver produced (``qlmio_opt.solve`` or ``qlmio-opt solve --format json``).
    predictors
        The predictor (registry name or object) or ready predictions to judge with; default: the
        one the solution names in ``solution.predictors`` (``overrides`` meaning the instance's
        overrides, which :func:`qlmio_opt.predictors.predict` applies itself).
    """
    status = str(solution.status.value)
    if not solution.status.has_assignment and not solution.assignment and not solution.deferred:
        why = f"status {status}: no assignment to check"
        if solution.message:
            why += f" ({solution.message})"
        return CheckReport(
            feasible=False,
            violations=(why,),
            objective=math.nan,
            mean_latency_s=None,
            mean_quality=None,
            objective_matches=solution.objective is None,
            has_assignment=False,
            status=status,
            reported_objective=solution.objective,
        )

    preds = _predictions(instance, solution, predictors)
    reqs = instance.requests
    nodes = instance.nodes
    obj = instance.objective
    num_r, num_n = len(reqs), len(nodes)
    node_pos = {n.id: j for j, n in enumerate(nodes)}
    req_pos = {r.id: i for i, r in enumerate(reqs)}
    quality = np.asarray(preds.quality, dtype=float)
    latency = np.asarray(preds.latency_s, dtype=float)
    memory = np.asarray(preds.memory_gb, dtype=float)
    violations: list[str] = []
    if solution.instance != instance.name:
        violations.append(
            f'instance: the solution is for "{solution.instance}", not "{instance.name}"'
        )

    # -- allowed pairs --------------------------------------------------------------------------
    paths = routes(instance)
    catalog = instance.resolved_catalog
    takes_images = [
        "image" in (n.modalities or catalog.model(n.model).modalities) for n in instance.nodes
    ]
    reason = np.full((num_r, num_n), "", dtype=object)  # "" = allowed
    for i, req in enumerate(reqs):
        for j, node in enumerate(nodes):
            if paths[(req.site, node.id)] is None:
                reason[i, j] = f'no path from site "{req.site}"'
            elif req.images and not takes_images[j]:
                reason[i, j] = "the node does not accept images"
            elif not math.isfinite(latency[i, j]):
                reason[i, j] = "no latency for the pair (null override)"
            elif req.min_quality is not None and quality[i, j] < req.min_quality:
                reason[i, j] = f"quality {quality[i, j]:.4f} < min_quality {req.min_quality:.4f}"
            elif req.deadline_s is not None and latency[i, j] > req.deadline_s:
                reason[i, j] = f"latency {latency[i, j]:.4f} s > deadline {req.deadline_s:.4f} s"
    allowed = reason == ""

    # -- the assignment: each request exactly once ----------------------------------------------
    place = np.full(num_r, -1, dtype=np.int64)
    seen_deferred = Counter(solution.deferred)
    for rid, count in seen_deferred.items():
        if rid not in req_pos:
            violations.append(f'assignment: deferred request "{rid}" is not in the instance')
        elif count > 1:
            violations.append(f'assignment: request "{rid}" is deferred {count} times')
    for rid, nid in solution.assignment.items():
        if rid not in req_pos:
            violations.append(f'assignment: request "{rid}" is not in the instance')
            continue
        if nid not in node_pos:
            violations.append(f'assignment: request "{rid}" is on unknown node "{nid}"')
            continue
        if rid in seen_deferred:
            violations.append(f'assignment: request "{rid}" is both on "{nid}" and deferred')
        place[req_pos[rid]] = node_pos[nid]
    deferred = np.zeros(num_r, dtype=bool)
    for i, req in enumerate(reqs):
        if place[i] >= 0:
            continue
        if req.id in seen_deferred:
            deferred[i] = True
            if obj.deferral_penalty_s is None:
                violations.append(
                    f'deferral: request "{req.id}" is deferred but deferral is off '
                    "(objective.deferral_penalty_s is null)"
                )
        elif req.id not in solution.assignment:
            violations.append(f'assignment: request "{req.id}" is neither placed nor deferred')

    placed = np.flatnonzero(place >= 0)
    on = place[placed]
    for i, j in zip(placed, on, strict=True):
        if not allowed[i, j]:
            violations.append(
                f'eligibility: request "{reqs[i].id}" is not allowed on node "{nodes[j].id}" '
                f"({reason[i, j]})"
            )

    # -- memory ---------------------------------------------------------------------------------
    node_mem = np.zeros(num_n)
    node_count = np.zeros(num_n, dtype=np.int64)
    for i, j in zip(placed, on, strict=True):
        node_mem[j] += memory[i, j]
        node_count[j] += 1
    capacity = instance.node_memory_gb
    for j, node in enumerate(nodes):
        if math.isfinite(capacity[j]) and node_mem[j] > capacity[j] + TOL:
            violations.append(
                f'memory: node "{node.id}" holds {node_mem[j]:.4f} GB of KV cache '
                f"> {capacity[j]:.4f} GB free ({node_count[j]} requests)"
            )

    # -- bandwidth ------------------------------------------------------------------------------
    link_mb = {k.id: 0.0 for k in instance.network.links}
    for i, j in zip(placed, on, strict=True):
        req = reqs[i]
        megabits = (sum(im.bytes for im in req.images) + 4 * req.prompt_tokens) * 8 / 1e6
        for link_id in paths[(req.site, nodes[j].id)] or ():
            link_mb[link_id] += megabits
    for link in instance.network.links:
        cap = link.bandwidth_mbps * instance.window_s
        if link_mb[link.id] > cap + TOL:
            violations.append(
                f'bandwidth: link "{link.id}" carries {link_mb[link.id]:.4f} Mb '
                f"> {cap:.4f} Mb ({link.bandwidth_mbps:g} Mbps x {instance.window_s:g} s)"
            )

    # -- quality floor --------------------------------------------------------------------------
    placed_q = quality[placed, on]
    if obj.mode == "quality_floor":
        target = obj.quality_target
        if target is None:
            target = _all_cloud_quality(instance, quality, latency, allowed) - obj.quality_tolerance
        slack = float(np.sum(placed_q - target))
        if slack < -TOL:
            violations.append(
                f"quality floor: sum of (Q - T) over the {len(placed)} placed requests is "
                f"{slack:.6f} < 0 (mean quality {placed_q.mean():.4f} < target {target:.4f})"
            )

    # -- congestion and objective ---------------------------------------------------------------
    congestion = _node_congestion(instance, preds, allowed, node_count)
    kappa = obj.latency_weight / obj.latency_scale_s if obj.mode == "weighted" else 1.0
    placed_l = latency[placed, on]
    if obj.mode == "weighted":
        pair_sum = float(
            np.sum(obj.latency_weight * placed_l / obj.latency_scale_s)
            - np.sum(obj.quality_weight * placed_q)
        )
    else:
        pair_sum = float(np.sum(placed_l))
    objective = pair_sum + kappa * float(congestion.sum())
    num_deferred = int(deferred.sum())
    if num_deferred and obj.deferral_penalty_s is not None:
        objective += num_deferred * kappa * obj.deferral_penalty_s
    mean_latency = float((placed_l.sum() + congestion.sum()) / len(placed)) if len(placed) else None
    mean_quality = float(placed_q.mean()) if len(placed) else None

    reported = solution.objective
    matches = reported is not None and (
        reported == objective
        or abs(reported - objective) <= OBJECTIVE_RTOL * max(1.0, abs(objective))
    )
    report_args = {
        "node_requests": {n.id: int(node_count[j]) for j, n in enumerate(nodes)},
        "node_memory_gb": {n.id: float(node_mem[j]) for j, n in enumerate(nodes)},
        "node_congestion_s": {n.id: float(congestion[j]) for j, n in enumerate(nodes)},
        "link_megabits": dict(link_mb),
    }
    mismatches = _mismatches(
        solution,
        mean_latency,
        mean_quality,
        {
            reqs[i].id: (float(quality[i, j]), float(latency[i, j]))
            for i, j in zip(placed, on, strict=True)
        },
        report_args,
    )
    return CheckReport(
        feasible=not violations,
        violations=tuple(violations),
        objective=objective,
        mean_latency_s=mean_latency,
        mean_quality=mean_quality,
        objective_matches=bool(matches),
        has_assignment=True,
        status=status,
        reported_objective=reported,
        mismatches=mismatches,
        **report_args,
    )


def _all_cloud_quality(
    instance: Instance, quality: np.ndarray, latency: np.ndarray, allowed: np.ndarray
) -> float:
    """Mean predicted quality when each request goes to its lowest-latency allowed cloud node.

    A request no cloud node may take counts with its best allowed quality; one no node may take
    is left out (it is deferred whatever the decision, outside the floor's sum).
    """
    cloud = [j for j, n in enumerate(instance.nodes) if n.tier == "cloud"]
    total, counted = 0.0, 0
    for i in range(len(instance.requests)):
        anywhere = [quality[i, j] for j in range(len(instance.nodes)) if allowed[i, j]]
        if not anywhere:
            continue
        counted += 1
        options = [j for j in cloud if allowed[i, j]]
        if options:
            best = min(options, key=lambda j: (latency[i, j], j))
            total += quality[i, best]
        else:
            total += max(anywhere)
    return total / counted if counted else 0.0


def _node_congestion(
    instance: Instance, preds: Predictions, allowed: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Total congestion latency ``E_n(m_n)`` per node (zeros when latencies are given)."""
    out = np.zeros(len(instance.nodes))
    given_latency = instance.overrides is not None and instance.overrides.latency_s is not None
    parts = preds.components
    if given_latency or any(name not in parts for name in _CONGESTION_PARTS):
        return out
    catalog = instance.resolved_catalog
    prompt = np.array([r.prompt_tokens for r in instance.requests], dtype=float)
    for j, node in enumerate(instance.nodes):
        rows = np.flatnonzero(allowed[:, j])
        if counts[j] == 0 or len(rows) == 0:
            continue
        service = (
            parts["vision_s"][rows, j] + parts["prefill_s"][rows, j] + parts["decode_s"][rows, j]
        )
        decode = parts["decode_s"][rows, j]
        context = (
            prompt[rows] + parts["image_tokens"][rows, j] + parts["output_tokens"][rows, j] / 2
        )
        model = catalog.model(node.model)
        kv_bytes = float(np.mean(context)) * model.kv_bytes_per_token
        alpha = kv_bytes / (model.weights_gb * 1e9 + kv_bytes)
        # the curve runs over every count the node can see: its allowed requests (or more, when
        # an assignment breaks eligibility)
        top = max(len(rows), int(counts[j]))
        curve = congestion_curve(
            top,
            int(instance.node_concurrency[j]),
            float(np.mean(service)),
            float(np.mean(decode)),
            alpha,
            node.active_requests,
        )
        out[j] = curve[int(counts[j])]
    return out


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a == b:
        return True
    return abs(a - b) <= OBJECTIVE_RTOL * max(1.0, abs(b))


def _mismatches(
    solution: Solution,
    mean_latency: float | None,
    mean_quality: float | None,
    per_request: dict[str, tuple[float, float]],
    usage: dict[str, dict],
) -> tuple[str, ...]:
    """Reported figures (besides the objective) that disagree with the recomputed ones."""
    out: list[str] = []
    if solution.mean_latency_s is not None and not _close(solution.mean_latency_s, mean_latency):
        out.append(f"mean_latency_s: reported {solution.mean_latency_s}, recomputed {mean_latency}")
    if solution.mean_quality is not None and not _close(solution.mean_quality, mean_quality):
        out.append(f"mean_quality: reported {solution.mean_quality}, recomputed {mean_quality}")
    share = {
        node: usage["node_congestion_s"][node] / count
        for node, count in usage["node_requests"].items()
        if count
    }
    for dec in solution.requests:
        if dec.node is None or dec.request not in per_request:
            continue
        q, lat = per_request[dec.request]
        lat += share.get(dec.node, 0.0)
        if dec.quality is not None and not _close(dec.quality, q):
            out.append(f'request "{dec.request}" quality: reported {dec.quality}, recomputed {q}')
        if dec.latency_s is not None and not _close(dec.latency_s, lat):
            out.append(
                f'request "{dec.request}" latency_s: reported {dec.latency_s}, recomputed {lat}'
            )
    for nu in solution.nodes:
        if nu.node not in usage["node_requests"]:
            continue
        for label, reported, mine in (
            ("requests", nu.requests, usage["node_requests"][nu.node]),
            ("memory_gb", nu.memory_gb, usage["node_memory_gb"][nu.node]),
            ("congestion_s", nu.congestion_s, usage["node_congestion_s"][nu.node]),
        ):
            if not _close(float(reported), float(mine)):
                out.append(f'node "{nu.node}" {label}: reported {reported}, recomputed {mine}')
    for lu in solution.links:
        if lu.link in usage["link_megabits"] and not _close(
            lu.megabits, usage["link_megabits"][lu.link]
        ):
            out.append(
                f'link "{lu.link}" megabits: reported {lu.megabits}, '
                f"recomputed {usage['link_megabits'][lu.link]}"
            )
    return tuple(out)


__all__ = ["CheckReport", "check", "congestion_curve", "lower_envelope", "routes"]
