"""An independent checker: recompute a solution's objective and feasibility from scratch.

:func:`check` takes an instance and a :class:`~qlmio_opt.domain.solution.Solution` (as written by
``qlmio-opt solve --format json``) and re-derives everything the solution claims, from the
instance's raw data and the predictors' matrices only. It deliberately shares no code with
:mod:`qlmio_opt.formulations`, :mod:`qlmio_opt.formulations.evaluation` or :mod:`qlmio_opt.solvers`:
it is a second implementation of the model of ``docs/formulation.md``, so that a bug in one shows up
as a disagreement with the other.

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
  ``T`` explicit, or each placed request against its reference quality (its mean quality over
  the cloud nodes allowed to take it) within ``quality_tolerance`` on average;
* the objective, with the congestion curve of every node rebuilt from the formulation (queueing
  plus batching, lower convex envelope at the integers), and the mean latency and quality;
* every other figure the file claims: bound (never above the objective) and gap, per-request
  node, quality and latency, per-node requests, memory, congestion and capacities, per-link
  requests, megabits and capacity, and the lists of broken constraints. A false figure is
  reported with its JSON path (:attr:`CheckReport.mismatches`) and the solution is not accepted.

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

from qlmio_opt.domain.errors import InputError, Issue
from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.solution import Solution
from qlmio_opt.predictors import Predictions, Predictor, predict

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
        ``1e-6 * max(1, |objective|)``. A solution that claims no objective matches when the
        recomputed one is finite; an infinite or NaN recomputed objective never matches.
    has_assignment
        False when the solution's status carries no assignment (infeasible or error without one).
    reported_objective
        The objective the solution claims.
    mismatches
        Every other figure the solution claims (means, gap and bound, per-request, per-node and
        per-link figures, the lists of deferred requests and broken constraints) that the
        recomputation contradicts, one sentence each, starting with the field's JSON path.
    predictors
        The predictors the figures were recomputed with.
    node_requests, node_memory_gb, node_congestion_s, link_megabits, link_requests
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
    predictors: str = ""
    node_requests: Mapping[str, int] = field(default_factory=dict)
    node_memory_gb: Mapping[str, float] = field(default_factory=dict)
    node_congestion_s: Mapping[str, float] = field(default_factory=dict)
    link_megabits: Mapping[str, float] = field(default_factory=dict)
    link_requests: Mapping[str, int] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        """A feasible assignment whose every claimed figure is true."""
        return (
            self.has_assignment and self.feasible and self.objective_matches and not self.mismatches
        )

    def summary(self) -> str:
        """A few lines for a person: verdict, objective, violations and false figures."""
        if not self.has_assignment:
            lines = [f"no assignment to check (status {self.status})"]
            lines += [f"  - {v}" for v in self.violations[1:]]
            return "\n".join(lines)
        verdict = "feasible" if self.feasible else f"INFEASIBLE ({len(self.violations)})"
        if self.reported_objective is None:
            claim = "none claimed"
        else:
            match = "matches" if self.objective_matches else "DOES NOT MATCH"
            claim = f"reported {self.reported_objective:.6f}: {match}"
        lines = [
            f"{verdict}; objective {self.objective:.6f} ({claim})",
            f"mean latency {_fmt(self.mean_latency_s, ' s')}, "
            f"mean quality {_fmt(self.mean_quality, '')}"
            + (f" (predictors {self.predictors})" if self.predictors else ""),
        ]
        lines += [f"  - {v}" for v in self.violations]
        if self.mismatches:
            lines.append(f"FALSE FIGURES ({len(self.mismatches)}): reported, then recomputed")
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
    prefill_s: float = 0.0,
    interference: float = 1.0,
) -> np.ndarray:
    """``E(m)`` for ``m = 0 .. max_count``: the envelope of queueing + batching (counted after
    the node's ``active`` requests of earlier windows, in rounds lengthened by the prefills of the
    other requests in the slots) + the window's own prefill contention among the first
    ``concurrency`` (the k-th waits for the k - 1 prefills before it and loses ``interference`` of
    each later one while it decodes) and, for each request admitted after them, ``interference``
    of the prefills of the ``concurrency - 1`` others in the slots."""
    slots = concurrency
    round_s = service_s + interference * prefill_s * (slots - 1)
    before = congestion_total(active, slots, round_s, decode_s, alpha)
    values = []
    for m in range(max_count + 1):
        first = min(m, slots)
        own = sum((k - 1) * prefill_s * (1.0 + interference) for k in range(1, first + 1))
        own += (m - first) * interference * prefill_s * (slots - 1)
        values.append(congestion_total(active + m, slots, round_s, decode_s, alpha) - before + own)
    return lower_envelope(np.array(values))


# -- the check ----------------------------------------------------------------------------------

BUILT_IN_PREDICTORS = ("analytic", "learned")
"""Predictor specs a solution may name that the checker rebuilds on its own. A model path named
only inside a solution file is never loaded: the user passes it (``check(..., predictors=)``,
``qlmio-opt check --predictors``)."""


def solution_predictors(solution: Solution) -> str:
    """The predictor spec a solution names, without the ``+overrides`` suffix (``overrides``
    alone when every matrix was given)."""
    name = solution.predictors or "analytic"
    return name.removesuffix("+overrides") if name != "overrides" else name


def _predictions(instance: Instance, solution: Solution, predictors: Any) -> Predictions:
    if isinstance(predictors, Predictions):
        return predictors
    if predictors is not None:
        return predict(instance, predictors)
    base = solution_predictors(solution)
    if base == "overrides":  # every matrix was given: predict() needs no predictor
        return predict(instance, "analytic")
    if base not in BUILT_IN_PREDICTORS:
        raise InputError(
            Issue(
                "predictors",
                f'the solution was made with predictors "{base}"; a model named only inside a '
                f"solution file is never loaded: pass it to check it with (--predictors {base})",
            )
        )
    return predict(instance, base)


def check(
    instance: Instance,
    solution: Solution,
    *,
    predictors: str | Predictor | Predictions | None = None,
) -> CheckReport:
    """Recompute ``solution``'s objective, constraints and every figure it claims.

    Parameters
    ----------
    instance
        The window the solution is for.
    solution
        What a solver produced (``qlmio_opt.app.solve`` or ``qlmio-opt solve --format json``).
    predictors
        The predictor (registry name, model path or object) or ready predictions to judge with;
        default: the one the solution names, if it is built in (``analytic``, ``learned``, or
        ``overrides``: the instance's own matrices).

    Raises
    ------
    InputError
        When the solution names predictors the checker may not rebuild by itself (a model path).
    """
    status = str(solution.status.value)
    if not solution.status.has_assignment and not solution.assignment and not solution.deferred:
        return _without_assignment(solution, status)
    preds = _predictions(instance, solution, predictors)
    pairs = _Pairs.of(instance, preds)
    decision = _Decision.read(instance, solution, pairs)
    usage = _usage(instance, pairs, decision)
    violations = [
        *decision.violations,
        *_capacity_violations(instance, usage),
        *_floor_violations(instance, pairs, decision),
    ]
    congestion = _node_congestion(instance, preds, pairs.allowed, usage.node_count)
    objective, mean_latency, mean_quality = _objective(instance, pairs, decision, congestion)
    matches = _objective_matches(solution.objective, objective)
    recomputed = _Recomputed(
        objective=objective,
        mean_latency_s=mean_latency,
        mean_quality=mean_quality,
        congestion=congestion,
        usage=usage,
        violations=tuple(violations),
    )
    return CheckReport(
        feasible=not violations,
        violations=tuple(violations),
        objective=objective,
        mean_latency_s=mean_latency,
        mean_quality=mean_quality,
        objective_matches=matches,
        has_assignment=True,
        status=status,
        reported_objective=solution.objective,
        mismatches=_false_figures(instance, solution, pairs, decision, recomputed),
        predictors=_spec_of(predictors, solution),
        node_requests={n.id: int(usage.node_count[j]) for j, n in enumerate(instance.nodes)},
        node_memory_gb={n.id: float(usage.node_memory[j]) for j, n in enumerate(instance.nodes)},
        node_congestion_s={n.id: float(congestion[j]) for j, n in enumerate(instance.nodes)},
        link_megabits=dict(usage.link_megabits),
        link_requests=dict(usage.link_requests),
    )


def _spec_of(predictors: Any, solution: Solution) -> str:
    if predictors is None:
        return solution_predictors(solution)
    if isinstance(predictors, str):
        return predictors
    return type(predictors).__name__


def _without_assignment(solution: Solution, status: str) -> CheckReport:
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


def _objective_matches(reported: float | None, objective: float) -> bool:
    """A finite recomputed objective that the claim (if any) equals within the tolerance."""
    if not math.isfinite(objective):
        return False
    return reported is None or _close(reported, objective)


@dataclass(frozen=True)
class _Pairs:
    """The instance's pairs as the checker sees them: matrices, routes and allowed pairs."""

    quality: np.ndarray
    latency: np.ndarray  # with what the nodes' live state adds
    externality: np.ndarray  # the delay each pair imposes on its node's in-flight requests
    memory: np.ndarray
    paths: dict[tuple[str, str], tuple[str, ...] | None]
    reason: np.ndarray  # (R, N) object: "" where the pair is allowed, else why not

    @property
    def allowed(self) -> np.ndarray:
        return self.reason == ""

    @classmethod
    def of(cls, instance: Instance, preds: Predictions) -> _Pairs:
        quality = np.asarray(preds.quality, dtype=float)
        delay, externality = _live_state_terms(instance, preds)
        latency = np.asarray(preds.latency_s, dtype=float) + delay
        paths = routes(instance)
        return cls(
            quality=quality,
            latency=latency,
            externality=externality,
            memory=np.asarray(preds.memory_gb, dtype=float),
            paths=paths,
            reason=_exclusions(instance, quality, latency, paths),
        )


def _exclusions(
    instance: Instance,
    quality: np.ndarray,
    latency: np.ndarray,
    paths: dict[tuple[str, str], tuple[str, ...] | None],
) -> np.ndarray:
    """Why each pair is excluded ("" where it is allowed), from the raw instance."""
    catalog = instance.resolved_catalog
    takes_images = [
        "image" in (n.modalities or catalog.model(n.model).modalities) for n in instance.nodes
    ]
    reason = np.full((len(instance.requests), len(instance.nodes)), "", dtype=object)
    for i, req in enumerate(instance.requests):
        for j, node in enumerate(instance.nodes):
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
    return reason


@dataclass(frozen=True)
class _Decision:
    """The solution's decision read against the instance: where each request is placed (node
    index, -1 if not placed), which are deferred, and what breaks the assignment rules."""

    place: np.ndarray
    deferred: np.ndarray
    violations: tuple[str, ...]

    @property
    def placed(self) -> np.ndarray:
        return np.flatnonzero(self.place >= 0)

    @property
    def on(self) -> np.ndarray:
        return self.place[self.placed]

    @classmethod
    def read(cls, instance: Instance, solution: Solution, pairs: _Pairs) -> _Decision:
        node_pos = {n.id: j for j, n in enumerate(instance.nodes)}
        req_pos = {r.id: i for i, r in enumerate(instance.requests)}
        violations: list[str] = []
        if solution.instance != instance.name:
            violations.append(
                f'instance: the solution is for "{solution.instance}", not "{instance.name}"'
            )
        seen_deferred = Counter(solution.deferred)
        for rid, count in seen_deferred.items():
            if rid not in req_pos:
                violations.append(f'assignment: deferred request "{rid}" is not in the instance')
            elif count > 1:
                violations.append(f'assignment: request "{rid}" is deferred {count} times')
        place = np.full(len(instance.requests), -1, dtype=np.int64)
        for rid, nid in solution.assignment.items():
            if rid not in req_pos:
                violations.append(f'assignment: request "{rid}" is not in the instance')
            elif nid not in node_pos:
                violations.append(f'assignment: request "{rid}" is on unknown node "{nid}"')
            else:
                if rid in seen_deferred:
                    violations.append(
                        f'assignment: request "{rid}" is both on "{nid}" and deferred'
                    )
                place[req_pos[rid]] = node_pos[nid]
        deferred = np.zeros(len(instance.requests), dtype=bool)
        for i, req in enumerate(instance.requests):
            if place[i] >= 0:
                j = place[i]
                if not pairs.allowed[i, j]:
                    violations.append(
                        f'eligibility: request "{req.id}" is not allowed on node '
                        f'"{instance.nodes[j].id}" ({pairs.reason[i, j]})'
                    )
            elif req.id in seen_deferred:
                deferred[i] = True
                if instance.objective.deferral_penalty_s is None:
                    violations.append(
                        f'deferral: request "{req.id}" is deferred but deferral is off '
                        "(objective.deferral_penalty_s is null)"
                    )
            elif req.id not in solution.assignment:
                violations.append(f'assignment: request "{req.id}" is neither placed nor deferred')
        return cls(place, deferred, tuple(violations))


@dataclass(frozen=True)
class _Usage:
    node_count: np.ndarray
    node_memory: np.ndarray
    link_megabits: dict[str, float]
    link_requests: dict[str, int]


def _usage(instance: Instance, pairs: _Pairs, decision: _Decision) -> _Usage:
    """Requests and KV memory per node, megabits and requests per link."""
    num_n = len(instance.nodes)
    node_mem = np.zeros(num_n)
    node_count = np.zeros(num_n, dtype=np.int64)
    link_mb = {k.id: 0.0 for k in instance.network.links}
    link_count = {k.id: 0 for k in instance.network.links}
    for i, j in zip(decision.placed, decision.on, strict=True):
        req = instance.requests[i]
        node_mem[j] += pairs.memory[i, j]
        node_count[j] += 1
        megabits = (sum(im.bytes for im in req.images) + 4 * req.prompt_tokens) * 8 / 1e6
        for link_id in pairs.paths[(req.site, instance.nodes[j].id)] or ():
            link_mb[link_id] += megabits
            link_count[link_id] += 1
    return _Usage(node_count, node_mem, link_mb, link_count)


def _capacity_violations(instance: Instance, usage: _Usage) -> list[str]:
    """KV memory per node and megabits per link against their capacities."""
    out = []
    capacity = instance.node_memory_gb
    for j, node in enumerate(instance.nodes):
        if math.isfinite(capacity[j]) and usage.node_memory[j] > capacity[j] + TOL:
            out.append(
                f'memory: node "{node.id}" holds {usage.node_memory[j]:.4f} GB of KV cache '
                f"> {capacity[j]:.4f} GB free ({usage.node_count[j]} requests)"
            )
    for link in instance.network.links:
        cap = link.bandwidth_mbps * instance.window_s
        if usage.link_megabits[link.id] > cap + TOL:
            out.append(
                f'bandwidth: link "{link.id}" carries {usage.link_megabits[link.id]:.4f} Mb '
                f"> {cap:.4f} Mb ({link.bandwidth_mbps:g} Mbps x {instance.window_s:g} s)"
            )
    return out


def _floor_violations(instance: Instance, pairs: _Pairs, decision: _Decision) -> list[str]:
    """The quality floor of ``quality_floor`` mode, over the placed requests: their mean quality
    at least an explicit target, or each against its own reference quality (its mean over the
    cloud nodes allowed to take it) within ``quality_tolerance`` on average."""
    obj = instance.objective
    if obj.mode != "quality_floor":
        return []
    placed_q = pairs.quality[decision.placed, decision.on]
    if obj.quality_target is not None:
        slack = float(np.sum(placed_q - obj.quality_target))
        if slack >= -TOL:
            return []
        words = f"mean quality {placed_q.mean():.4f} < target {obj.quality_target:.4f}"
    else:
        reference = _reference_quality(instance, pairs)[decision.placed]
        slack = float(np.sum(placed_q - reference + obj.quality_tolerance))
        if slack >= -TOL:
            return []
        words = (
            f"the placed requests lose {float(np.mean(reference - placed_q)):.4f} quality on "
            f"average against their reference nodes, more than the tolerance "
            f"{obj.quality_tolerance:.4f}"
        )
    return [f"quality floor: {words} (sum {slack:.6f} < 0 over {len(placed_q)} placed requests)"]


def _reference_quality(instance: Instance, pairs: _Pairs) -> np.ndarray:
    """Each request's reference quality: its mean quality over the cloud nodes allowed to take it,
    or its best allowed quality when no cloud node may (NaN when no node may)."""
    cloud = [j for j, n in enumerate(instance.nodes) if n.tier == "cloud"]
    out = np.full(len(instance.requests), np.nan)
    for i in range(len(instance.requests)):
        allowed = [j for j in range(len(instance.nodes)) if pairs.allowed[i, j]]
        if not allowed:
            continue
        options = [j for j in cloud if pairs.allowed[i, j]]
        if options:
            out[i] = sum(pairs.quality[i, j] for j in options) / len(options)
        else:
            out[i] = max(pairs.quality[i, j] for j in allowed)
    return out


def _objective(
    instance: Instance, pairs: _Pairs, decision: _Decision, congestion: np.ndarray
) -> tuple[float, float | None, float | None]:
    """The objective with congestion and deferral, and the means over the placed requests."""
    obj = instance.objective
    placed, on = decision.placed, decision.on
    placed_q = pairs.quality[placed, on]
    placed_l = pairs.latency[placed, on]
    # the objective counts the delay a request imposes on its node's in-flight requests too
    imposed = float(np.sum(pairs.externality[placed, on]))
    if obj.mode == "weighted":
        kappa = obj.latency_weight / obj.latency_scale_s
        pair_sum = float(
            kappa * (np.sum(placed_l) + imposed) - obj.quality_weight * np.sum(placed_q)
        )
    else:
        kappa = 1.0
        pair_sum = float(np.sum(placed_l) + imposed)
    objective = pair_sum + kappa * float(congestion.sum())
    num_deferred = int(decision.deferred.sum())
    if num_deferred and obj.deferral_penalty_s is not None:
        objective += num_deferred * kappa * obj.deferral_penalty_s
    if not len(placed):
        return objective, None, None
    mean_latency = float((placed_l.sum() + congestion.sum()) / len(placed))
    return objective, mean_latency, float(placed_q.mean())


@dataclass(frozen=True)
class _Live:
    """A node's live load as the checker derives it from the instance (see the formulation's
    docs/formulation.md, "Serving engines and live state")."""

    backlog_s: float
    decoders: int
    occupied: int
    interference: float
    stretch: float
    slowdown: float


MAX_LOAD = 0.9  # the recent prefill load is capped here, as docs/formulation.md states


def _live_loads(instance: Instance) -> list[_Live]:
    catalog = instance.resolved_catalog
    return [
        _live_load(node, engine.scheduler, engine.max_batched_tokens, catalog)
        for node, engine in zip(instance.nodes, instance.node_engines, strict=True)
    ]


def _live_load(node: Any, scheduler: str, budget: int, catalog: Any) -> _Live:
    model, device = catalog.model(node.model), catalog.device(node.device)
    prefill_rate = device.prefill_tok_s(model)
    step_alone = 1.0 / device.decode_tok_s(model)
    gamma = 1.0
    if scheduler == "chunked-prefill":
        gamma = 1.0 - step_alone / max(step_alone, budget / prefill_rate)
    state = node.state
    if state is None:
        return _Live(0.0, 0, 0, gamma, 1.0, 0.0)
    backlog = sum(_prefill_work(r, model, device) for r in state.waiting)
    backlog += sum(
        0.5 * _prefill_work(r, model, device) for r in state.running if r.output_tokens == 0
    )
    read_gb = sum(
        (r.prompt_tokens + r.image_tokens + r.output_tokens) * model.kv_bytes_per_token / 1e9
        for r in state.running
    )
    load = min(state.prefill_load or 0.0, MAX_LOAD)
    in_flight = len(state.running) + len(state.waiting)
    return _Live(
        backlog_s=backlog,
        decoders=in_flight,
        occupied=in_flight,
        interference=gamma,
        stretch=1.0 / (1.0 - gamma * load),
        slowdown=read_gb / model.weights_gb,
    )


def _prefill_work(item: Any, model: Any, device: Any) -> float:
    """Seconds of vision encoding and prefill an in-flight request needs on its node alone."""
    vision = item.image_tokens * model.vision_patches_per_token / device.vision_tok_s(model)
    return vision + (item.prompt_tokens + item.image_tokens) / device.prefill_tok_s(model)


def _live_state_terms(instance: Instance, preds: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: the extra latency the node's live state adds to the request (backlog to wait
    for, decode slowed by the node's batch and recent prefill load), and the delay the request's
    prefill imposes on the node's in-flight requests. Zeros when latencies are given."""
    shape = (len(instance.requests), len(instance.nodes))
    delay, imposed = np.zeros(shape), np.zeros(shape)
    parts = preds.components
    given_latency = instance.overrides is not None and instance.overrides.latency_s is not None
    if given_latency or any(name not in parts for name in _CONGESTION_PARTS):
        return delay, imposed
    none = np.zeros(shape)
    transfer, rtt = parts.get("transfer_s", none), parts.get("rtt_s", none)
    for j, live in enumerate(_live_loads(instance)):
        for i in range(shape[0]):
            decode = parts["decode_s"][i, j]
            compute = parts["vision_s"][i, j] + parts["prefill_s"][i, j]
            batch = decode * (1.0 + live.slowdown)
            # the next windows' prefills reach the decode one window after dispatch
            decoding_from = transfer[i, j] + rtt[i, j] + compute + live.backlog_s
            if not decoding_from < np.inf:  # unreachable (inf or NaN): the pair is not allowed
                decoding_from = np.inf
            exposed = max(batch - max(instance.window_s - decoding_from, 0.0), 0.0)
            delay[i, j] = live.backlog_s + batch - decode + exposed * (live.stretch - 1.0)
            imposed[i, j] = live.decoders * live.interference * compute
    return delay, imposed


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
    live = _live_loads(instance)
    prompt = np.array([r.prompt_tokens for r in instance.requests], dtype=float)
    for j, node in enumerate(instance.nodes):
        rows = np.flatnonzero(allowed[:, j])
        if counts[j] == 0 or len(rows) == 0:
            continue
        compute = parts["vision_s"][rows, j] + parts["prefill_s"][rows, j]
        service = compute + parts["decode_s"][rows, j]
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
            live[j].occupied,
            prefill_s=float(np.mean(compute)),
            interference=live[j].interference,
        )
        out[j] = curve[int(counts[j])]
    return out


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a == b:
        return math.isfinite(b)
    return abs(a - b) <= OBJECTIVE_RTOL * max(1.0, abs(b))


@dataclass(frozen=True)
class _Recomputed:
    """The checker's own figures for the solution's decision."""

    objective: float
    mean_latency_s: float | None
    mean_quality: float | None
    congestion: np.ndarray
    usage: _Usage
    violations: tuple[str, ...]


def _false_figures(
    instance: Instance,
    solution: Solution,
    pairs: _Pairs,
    decision: _Decision,
    mine: _Recomputed,
) -> tuple[str, ...]:
    """Every figure the solution claims that the recomputation contradicts (JSON path first)."""
    return (
        *_false_summary(solution, mine),
        *_false_requests(instance, solution, pairs, decision, mine),
        *_false_nodes(instance, solution, mine),
        *_false_links(instance, solution, mine),
    )


def _differs(path: str, reported: float | None, mine: float | None) -> list[str]:
    if reported is None or _close(float(reported), None if mine is None else float(mine)):
        return []
    return [f"{path}: reported {reported}, recomputed {mine}"]


def _false_summary(solution: Solution, mine: _Recomputed) -> list[str]:
    """Means, bound and gap, the status and the list of broken constraints."""
    out = [
        *_differs("mean_latency_s", solution.mean_latency_s, mine.mean_latency_s),
        *_differs("mean_quality", solution.mean_quality, mine.mean_quality),
    ]
    bound, objective = solution.bound, mine.objective
    if bound is not None and math.isfinite(objective) and bound > objective + _slack(objective):
        out.append(f"bound: reported {bound}, above the recomputed objective {objective}")
    if solution.gap is not None:
        if bound is None or not math.isfinite(objective) or objective == 0:
            out.append(f"gap: reported {solution.gap} without a bound and a nonzero objective")
        else:
            out += _differs("gap", solution.gap, abs(objective - bound) / abs(objective))
    if solution.violations and not mine.violations:
        out.append(
            f"violations: the solution lists {len(solution.violations)} broken constraint(s); "
            "none is broken"
        )
    if solution.status.value == "infeasible" and not mine.violations:
        out.append("status: reported infeasible, but the assignment breaks no constraint")
    return out


def _slack(value: float) -> float:
    return OBJECTIVE_RTOL * max(1.0, abs(value))


def _false_requests(
    instance: Instance,
    solution: Solution,
    pairs: _Pairs,
    decision: _Decision,
    mine: _Recomputed,
) -> list[str]:
    """Per-request node, quality and latency (with the node's congestion share)."""
    req_pos = {r.id: i for i, r in enumerate(instance.requests)}
    count = mine.usage.node_count
    share = np.divide(mine.congestion, count, out=np.zeros_like(mine.congestion), where=count > 0)
    out = []
    for k, dec in enumerate(solution.requests):
        path = f'requests[{k}] (request "{dec.request}")'
        i = req_pos.get(dec.request)
        if i is None:
            out.append(f"{path}.request: not in the instance")
            continue
        j = decision.place[i]
        node = instance.nodes[j].id if j >= 0 else None
        if dec.node != node:
            out.append(f"{path}.node: reported {dec.node}, the assignment says {node}")
            continue
        if j < 0:
            continue
        out += _differs(f"{path}.quality", dec.quality, pairs.quality[i, j])
        out += _differs(f"{path}.latency_s", dec.latency_s, pairs.latency[i, j] + share[j])
    return out


def _false_nodes(instance: Instance, solution: Solution, mine: _Recomputed) -> list[str]:
    """Per-node requests, memory, congestion, tier and capacities."""
    node_pos = {n.id: j for j, n in enumerate(instance.nodes)}
    capacity = instance.node_memory_gb
    out = []
    for k, usage in enumerate(solution.nodes):
        path = f'nodes[{k}] (node "{usage.node}")'
        j = node_pos.get(usage.node)
        if j is None:
            out.append(f"{path}.node: not in the instance")
            continue
        node = instance.nodes[j]
        if usage.tier != node.tier:
            out.append(f"{path}.tier: reported {usage.tier}, the instance says {node.tier}")
        out += _differs(f"{path}.requests", usage.requests, mine.usage.node_count[j])
        out += _differs(f"{path}.memory_gb", usage.memory_gb, mine.usage.node_memory[j])
        out += _differs(f"{path}.congestion_s", usage.congestion_s, mine.congestion[j])
        cap = float(capacity[j]) if math.isfinite(capacity[j]) else None
        if (usage.memory_capacity_gb is None) != (cap is None):
            out.append(f"{path}.memory_capacity_gb: reported {usage.memory_capacity_gb}, is {cap}")
        else:
            out += _differs(f"{path}.memory_capacity_gb", usage.memory_capacity_gb, cap)
        out += _differs(
            f"{path}.max_concurrency", usage.max_concurrency, instance.node_concurrency[j]
        )
    return out


def _false_links(instance: Instance, solution: Solution, mine: _Recomputed) -> list[str]:
    """Per-link requests, megabits and capacity."""
    links = {k.id: k for k in instance.network.links}
    out = []
    for k, usage in enumerate(solution.links):
        path = f'links[{k}] (link "{usage.link}")'
        link = links.get(usage.link)
        if link is None:
            out.append(f"{path}.link: not in the instance")
            continue
        out += _differs(f"{path}.requests", usage.requests, mine.usage.link_requests[link.id])
        out += _differs(f"{path}.megabits", usage.megabits, mine.usage.link_megabits[link.id])
        out += _differs(
            f"{path}.capacity_megabits",
            usage.capacity_megabits,
            link.bandwidth_mbps * instance.window_s,
        )
    return out


__all__ = ["CheckReport", "check", "congestion_curve", "lower_envelope", "routes"]
