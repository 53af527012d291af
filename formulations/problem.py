"""The assignment problem as arrays: what every formulation and solver works from.

:func:`build_problem` joins a validated instance and its predictions into an immutable
:class:`Problem`. Solvers receive only this: they never call predictors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from qlmio_opt.domain.engine_load import PairLoad, node_loads, state_pair_loads
from qlmio_opt.domain.errors import InputError, Issue
from qlmio_opt.domain.instance import Instance, Objective
from qlmio_opt.formulations.congestion import CongestionCurve, curve, zero_curve

if TYPE_CHECKING:  # the formulation reads predictions' arrays; it never runs a predictor
    from qlmio_opt.predictors.base import Predictions

# The largest cost, memory demand or congestion latency (s) the model may hold: each reaches the
# MILP as a cost, a matrix entry or a right-hand side. HiGHS refuses matrix entries above its
# ``large_matrix_value`` (1e15) and treats costs and bounds from 1e20 on as infinite, and a
# double near 1e15 resolves steps of 0.125 only, so quality terms would be lost in rounding.
MAX_MAGNITUDE = 1e15


def _ro(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class Problem:
    """One window's assignment problem.

    Arrays indexed by request r (R), node n (N), link k (K) and site s (S). ``allowed[r, n]`` is
    eligibility (reachable, modality) and the request's own quality floor and deadline checked on
    the predicted values (with what the node's live state adds, before the window's own
    congestion). Memory capacities are ``inf`` where unbounded, and net of what the nodes' state
    holds.

    ``latency_s`` is the predicted latency of each pair on the node as it is
    (:mod:`qlmio_opt.domain.engine_load`); ``externality_s`` the delay the pair's prefill
    imposes on the node's in-flight requests, which the objective counts too.
    ``floor_gain[r, n]`` is what placing ``r`` on ``n`` adds to the quality floor's sum, which
    must stay >= 0: ``Q[r, n] - ref_r + tolerance`` against each request's own reference quality
    (``reference_quality``, :func:`reference_quality`), or ``Q[r, n] - quality_target`` for an
    explicit target; None without a floor.
    """

    name: str
    request_ids: tuple[str, ...]
    node_ids: tuple[str, ...]
    link_ids: tuple[str, ...]
    is_edge: np.ndarray  # (N,) bool
    quality: np.ndarray  # (R, N)
    latency_s: np.ndarray  # (R, N)
    memory_gb: np.ndarray  # (R, N)
    allowed: np.ndarray  # (R, N) bool
    node_memory_gb: np.ndarray  # (N,)
    node_concurrency: np.ndarray  # (N,)
    request_site: np.ndarray  # (R,)
    route_links: np.ndarray  # (S, N, K) bool
    upload_megabits: np.ndarray  # (R,)
    link_capacity_megabits: np.ndarray  # (K,)
    min_quality: np.ndarray  # (R,) NaN = none
    deadline_s: np.ndarray  # (R,) inf = none
    objective: Objective
    quality_target: float | None  # an explicit target of quality_floor, else None
    congestion: bool
    components: dict[str, np.ndarray]
    congestion_curves: tuple[CongestionCurve, ...]  # (N,) total extra latency per node count
    externality_s: np.ndarray  # (R, N)
    floor_gain: np.ndarray | None  # (R, N)
    reference_quality: np.ndarray  # (R,) each request's reference quality (NaN: no node allowed)

    @property
    def num_requests(self) -> int:
        return len(self.request_ids)

    @property
    def num_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def deferral_allowed(self) -> bool:
        return self.objective.deferral_penalty_s is not None

    def pair_cost(self, *, masked: bool = True) -> np.ndarray:
        """Objective contribution of each pair (without congestion).

        ``inf`` where not allowed, unless ``masked`` is false (then the formula's value, which is
        still ``inf`` where the latency is: unreachable or forbidden by an override).
        """
        obj = self.objective
        latency = self.latency_s + self.externality_s
        if obj.mode == "weighted":
            with np.errstate(invalid="ignore"):
                cost = (
                    obj.latency_weight * latency / obj.latency_scale_s
                    - obj.quality_weight * self.quality
                )
            # with a latency weight of 0, an infinite latency (unreachable) gives 0 * inf = NaN
            cost = np.where(np.isinf(self.latency_s), np.inf, cost)
        else:
            cost = latency
        return np.where(self.allowed, cost, np.inf) if masked else cost

    @property
    def latency_cost_weight(self) -> float:
        """Objective units per second of latency (``latency_weight / latency_scale_s`` or 1)."""
        obj = self.objective
        return obj.latency_weight / obj.latency_scale_s if obj.mode == "weighted" else 1.0

    def congestion_s(self, counts: np.ndarray) -> np.ndarray:
        """Total extra latency per node for ``counts`` requests on each node."""
        return np.array(
            [float(c(int(m))) for c, m in zip(self.congestion_curves, counts, strict=True)]
        )

    def deferral_cost(self) -> float:
        """Objective cost of deferring one request (inf when deferral is off)."""
        obj = self.objective
        if obj.deferral_penalty_s is None:
            return np.inf
        if obj.mode == "weighted":
            return obj.latency_weight * obj.deferral_penalty_s / obj.latency_scale_s
        return obj.deferral_penalty_s

    def path_links(self, request: int, node: int) -> np.ndarray:
        """Indices of the links request ``request`` crosses to reach ``node``."""
        return np.flatnonzero(self.route_links[self.request_site[request], node])


def build_problem(instance: Instance, predictions: Predictions) -> Problem:
    """Join ``instance`` and ``predictions`` into a :class:`Problem`."""
    shape = (len(instance.requests), len(instance.nodes))
    if predictions.shape != shape:
        raise ValueError(f"predictions have shape {predictions.shape}, instance needs {shape}")
    min_q = np.array(
        [np.nan if r.min_quality is None else r.min_quality for r in instance.requests], dtype=float
    )
    deadline = np.array(
        [np.inf if r.deadline_s is None else r.deadline_s for r in instance.requests], dtype=float
    )
    loads = _pair_loads(instance, predictions)
    latency = predictions.latency_s + loads.delay_s
    allowed = predictions.eligible.copy()
    allowed &= np.isnan(min_q)[:, None] | (predictions.quality >= np.nan_to_num(min_q)[:, None])
    allowed &= latency <= deadline[:, None]
    is_edge = np.array([n.tier == "edge" for n in instance.nodes])
    site_index = {s: i for i, s in enumerate(instance.network.sites)}
    link_cap = np.array(
        [k.bandwidth_mbps * instance.window_s for k in instance.network.links], dtype=float
    )
    problem = Problem(
        name=instance.name,
        request_ids=instance.request_ids,
        node_ids=instance.node_ids,
        link_ids=instance.link_ids,
        is_edge=_ro(is_edge),
        quality=predictions.quality,
        latency_s=_ro(latency),
        memory_gb=predictions.memory_gb,
        allowed=_ro(allowed),
        node_memory_gb=_ro(instance.node_memory_gb),
        node_concurrency=_ro(instance.node_concurrency),
        request_site=_ro(np.array([site_index[r.site] for r in instance.requests], dtype=np.int64)),
        route_links=_ro(instance.network_graph.incidence()),
        upload_megabits=_ro(predictions.upload_bytes * 8.0 / 1e6),
        link_capacity_megabits=_ro(link_cap),
        min_quality=_ro(min_q),
        deadline_s=_ro(deadline),
        objective=instance.objective,
        quality_target=None,
        congestion=predictions.congestion,
        components=dict(predictions.components),
        congestion_curves=_congestion_curves(instance, predictions, allowed),
        externality_s=_ro(loads.externality_s),
        floor_gain=None,
        reference_quality=_ro(np.full(len(instance.requests), np.nan)),
    )
    problem = _with_floor(problem, instance.objective)
    _check_magnitudes(problem, predictions)
    return problem


def _pair_loads(instance: Instance, predictions: Predictions) -> PairLoad:
    """What the nodes' engines and live state add per pair (nothing when the instance gives its
    latencies: they are final)."""
    return state_pair_loads(instance, predictions.components, predictions.congestion)


def reference_quality(problem: Problem) -> np.ndarray:
    """Each request's reference quality: its mean predicted quality over the cloud nodes that may
    take it (what a cloud policy spreading requests evenly over them reaches), else its best
    allowed quality; NaN where no node is allowed.

    It depends on the request only, never on the nodes' state. The first reference, the
    lowest-latency cloud node, moved with the state: each window spent the whole tolerance
    against whichever cloud node was fastest then, not the node a cloud policy gets in its own
    run, and the expected-value oracle's expected TCR fell 0.66-1.36 points below all-cloud's on
    every replay of the development suite (0.5 allowed); on one-cloud deployments, where the
    reference cannot move, it stayed within (docs/results.md). The best-quality cloud node is no
    reference either: with the analytic predictors one cloud model is rated above the other for
    every request, so every cloud-only policy piled onto that node (6.8 s -> 12.0 s of mean
    latency on 300 s of azure-conv) for 0.07 points of expected TCR.
    """
    cloud = problem.allowed & ~problem.is_edge
    has_cloud = cloud.any(axis=1)
    cloud_sum = np.where(cloud, problem.quality, 0.0).sum(axis=1)
    cloud_mean = cloud_sum / np.maximum(cloud.sum(axis=1), 1)
    if problem.num_nodes:
        best = np.where(problem.allowed, problem.quality, -np.inf).max(axis=1)
    else:
        best = np.full(problem.num_requests, -np.inf)
    reference = np.where(has_cloud, cloud_mean, best)
    return np.where(problem.allowed.any(axis=1), reference, np.nan)


def with_target(problem: Problem, target: float) -> Problem:
    """The same problem with an absolute floor: the mean quality of the placed requests at least
    ``target``."""
    gain = np.where(problem.allowed, problem.quality - float(target), 0.0)
    return replace(problem, quality_target=float(target), floor_gain=_ro(gain))


def _with_floor(problem: Problem, objective: Objective) -> Problem:
    """``problem`` with the floor ``objective`` asks for (none in weighted mode)."""
    reference = reference_quality(problem)
    problem = replace(problem, reference_quality=_ro(reference))
    if objective.mode != "quality_floor":
        return problem
    if objective.quality_target is not None:
        return with_target(problem, objective.quality_target)
    gain = problem.quality - np.nan_to_num(reference)[:, None] + objective.quality_tolerance
    gain = np.where(problem.allowed, gain, 0.0)
    return replace(problem, floor_gain=_ro(gain))


def _check_magnitudes(problem: Problem, predictions: Predictions) -> None:
    """Refuse a window whose numbers the solvers cannot work with, naming the worst pair.

    Each check reports its worst case only (one line, not one per pair).

    Raises
    ------
    InputError
        When a usable pair's predicted latency or quality is not finite, or a cost, memory
        demand or congestion latency of the model is larger than :data:`MAX_MAGNITUDE`.
    """
    where = f'instance "{problem.name}"'
    issues: list[Issue] = []
    finite = np.isfinite(predictions.latency_s) & np.isfinite(predictions.quality)
    bad = predictions.eligible & ~finite
    if bad.any():
        r, n = np.argwhere(bad)[0]
        issues.append(
            _pair_issue(
                problem,
                r,
                n,
                f"predicted latency {predictions.latency_s[r, n]} s and quality "
                f"{predictions.quality[r, n]}: not finite numbers ({int(bad.sum())} such "
                "pair(s)); a catalog value, bandwidth or override behind them is out of range",
            )
        )
    checked = problem.allowed & finite
    for label, values, hint in (
        ("objective cost", problem.pair_cost(masked=False), _COST_HINT),
        ("KV-cache memory (GB)", problem.memory_gb, _MEMORY_HINT),
    ):
        size = np.where(checked, np.abs(values), 0.0)
        if size.size and size.max() > MAX_MAGNITUDE:
            r, n = (int(i) for i in np.unravel_index(int(np.argmax(size)), size.shape))
            issues.append(
                _pair_issue(
                    problem, r, n, f"{label} {values[r, n]:.3g} is beyond {MAX_MAGNITUDE:g}; {hint}"
                )
            )
    if problem.deferral_allowed and problem.deferral_cost() > MAX_MAGNITUDE:
        issues.append(
            Issue(
                "objective.deferral_penalty_s",
                f"deferring a request costs {problem.deferral_cost():.3g}, beyond "
                f"{MAX_MAGNITUDE:g}; {_COST_HINT}",
            )
        )
    # the congestion curves reach the MILP in seconds (the rows' slopes and intercepts)
    congestion = np.array([c.values[-1] for c in problem.congestion_curves])
    if congestion.size and not congestion.max() <= MAX_MAGNITUDE:
        n = int(np.argmax(np.nan_to_num(congestion, nan=np.inf)))
        issues.append(
            Issue(
                f'nodes[{n}] (node "{problem.node_ids[n]}")',
                f"congestion latency {congestion[n]:.3g} s for the requests that may use the node "
                f"is beyond {MAX_MAGNITUDE:g} s; check the catalog values behind its service "
                "times",
            )
        )
    if issues:
        raise InputError(issues, where)


_COST_HINT = (
    "lower objective.latency_weight, raise objective.latency_scale_s, or check the catalog "
    "values and bandwidths behind such a latency"
)
_MEMORY_HINT = "check the model's kv_bytes_per_token and image-token rule, and the token counts"


def _pair_issue(problem: Problem, r: int, n: int, message: str) -> Issue:
    return Issue(
        f'requests[{r}] (request "{problem.request_ids[r]}")',
        f'on node "{problem.node_ids[n]}": {message}',
    )


def all_cloud_quality(problem: Problem) -> float:
    """Mean reference quality (:func:`reference_quality`) of the requests some node may take: what
    a cloud policy spreading them evenly over their cloud nodes reaches.

    Requests no node can take at all are left out: they are deferred whatever the decision.
    """
    reference = problem.reference_quality
    placeable = ~np.isnan(reference)
    return float(reference[placeable].mean()) if placeable.any() else 0.0


def _congestion_curves(
    instance: Instance, predictions: Predictions, allowed: np.ndarray
) -> tuple[CongestionCurve, ...]:
    """One convex curve per node, from the stand-alone service times of the requests it may take.

    See :mod:`qlmio_opt.formulations.congestion` for the model.
    """
    counts = allowed.sum(axis=0)
    parts = predictions.components
    needed = ("vision_s", "prefill_s", "decode_s", "image_tokens", "output_tokens")
    if not predictions.congestion or any(k not in parts for k in needed):
        return tuple(zero_curve(int(c)) for c in counts)
    catalog = instance.resolved_catalog
    loads = node_loads(instance)
    compute = parts["vision_s"] + parts["prefill_s"]
    service = compute + parts["decode_s"]
    prompt = np.array([r.prompt_tokens for r in instance.requests], dtype=float)[:, None]
    # a decode step reads, per request, the KV of its context (prompt + image + half the output)
    context = prompt + parts["image_tokens"] + parts["output_tokens"] / 2
    # node-major copies: a node's requests are then read from one contiguous row (the same
    # values in the same order, so the same means), not gathered down a column
    compute, service, context, decode, allowed = (
        np.ascontiguousarray(a.T) for a in (compute, service, context, parts["decode_s"], allowed)
    )
    curves = []
    # nodes of one model and device that may take the same requests have the same curve: it is
    # computed once (its convex envelope is a Python loop over up to R points)
    by_settings: dict[tuple[int, int, float, float, float, int, float, float], CongestionCurve] = {}
    for j, node in enumerate(instance.nodes):
        rows = allowed[j]
        if not rows.any():
            curves.append(zero_curve(0))
            continue
        model = catalog.model(node.model)
        kv_bytes = float(np.mean(context[j][rows])) * model.kv_bytes_per_token
        alpha = kv_bytes / (model.weights_gb * 1e9 + kv_bytes)
        key = (
            int(counts[j]),
            int(instance.node_concurrency[j]),
            float(np.mean(service[j][rows])),
            float(np.mean(decode[j][rows])),
            alpha,
            loads[j].occupied,
            float(np.mean(compute[j][rows])),
            loads[j].interference,
        )
        if key not in by_settings:
            max_count, concurrency, service_s, decode_s, _, active, prefill_s, interference = key
            by_settings[key] = curve(
                max_count=int(max_count),
                concurrency=int(concurrency),
                service_s=service_s,
                decode_s=decode_s,
                alpha=alpha,
                active=int(active),
                prefill_s=prefill_s,
                interference=interference,
            )
        curves.append(by_settings[key])
    return tuple(curves)
