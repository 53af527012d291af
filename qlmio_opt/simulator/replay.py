"""Replay a request stream window by window under several policies and measure them in the world.

Window ``k`` collects the requests arriving in ``[k w, (k + 1) w)`` plus those the policy
deferred from window ``k - 1``; at its close the policy assigns it (solver + predictors), the
dispatched requests upload over the shared links, and the nodes serve them
(:mod:`qlmio_opt.simulator.engine`). Once the trace has ended, windows keep closing with deferral
switched off until every request is dispatched, so every request is served exactly once.

Every policy sees the same stream and the same world (hence the same hidden truth). A request's
latency runs from its arrival to its last output token; it is completed when the node's model
truly completes it (:class:`~qlmio_opt.simulator.world.World`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qlmio_opt.app.parallel import ParallelConfig, run_tasks
from qlmio_opt.app.solve import solve
from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.errors import QlmioError
from qlmio_opt.domain.instance import Instance, Request
from qlmio_opt.domain.solution import RequestDecision, Solution, Status
from qlmio_opt.predictors import PREDICTOR_NAMES, Predictor, get_predictor, predict
from qlmio_opt.simulator.engine import NodeJobs, NodeServer, share_link
from qlmio_opt.simulator.oracle import OraclePredictor
from qlmio_opt.simulator.workload import Workload
from qlmio_opt.simulator.world import PairTruth, World
from qlmio_opt.solvers import SOLVERS

ORACLE = "oracle"


@dataclass(frozen=True)
class ReplayConfig:
    """How windows are formed and decided.

    Attributes
    ----------
    window_s
        Window length (seconds).
    policies
        Solver names (``qlmio-opt solvers``) plus ``"oracle"`` (exact with the world's truth).
    predictors
        Predictors the non-oracle policies use: ``"analytic"``, ``"oracle"``, or a fitted
        predictor object (for example a learned one).
    time_limit
        Per-window time limit of every solver (seconds).
    seed
        Seed of the randomised solvers.
    observe_load
        Whether each window's instance tells the policy how many requests of earlier windows are
        still on each node (``active_requests``): a scheduler sees its responses come back, so it
        knows. When false, every window is decided as if the nodes were idle.
    """

    window_s: float = 2.0
    policies: tuple[str, ...] = ("exact", "greedy", "all-cloud", "per-request", ORACLE)
    predictors: str | Predictor = "analytic"
    time_limit: float | None = 10.0
    seed: int = 0
    observe_load: bool = True

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"window_s must be > 0; got {self.window_s}")
        unknown = [p for p in self.policies if p != ORACLE and p not in SOLVERS]
        if unknown:
            raise ValueError(
                f"unknown polic{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
                f"choose from {', '.join([*SOLVERS, ORACLE])}"
            )
        if not self.policies:
            raise ValueError("no policies given")
        if isinstance(self.predictors, str):
            if self.predictors not in (*PREDICTOR_NAMES, ORACLE):
                raise ValueError(
                    f'unknown predictors "{self.predictors}"; use '
                    f"{', '.join([*PREDICTOR_NAMES, ORACLE])} or a fitted predictor object"
                )
        elif not isinstance(self.predictors, Predictor):
            raise ValueError("predictors must be a name or an object with fit() and predict()")


@dataclass
class PolicyRun:
    """One policy's replay: a row per request and a row per window."""

    policy: str
    requests: pd.DataFrame
    windows: pd.DataFrame
    edge_busy_s: dict[str, float] = field(default_factory=dict)


@dataclass
class ReplayResult:
    runs: dict[str, PolicyRun]
    workload: Workload
    config: ReplayConfig
    node_tiers: dict[str, str]

    def summary(self) -> pd.DataFrame:
        """One row per policy (see :func:`qlmio_opt.simulator.metrics.summarise`)."""
        from qlmio_opt.simulator.metrics import summarise

        return summarise(self)


class _Stream:
    """The workload as validated requests with their world truth, shared by every policy."""

    def __init__(self, workload: Workload, world: World, catalog: Catalog) -> None:
        self.workload = workload
        probe = Instance.from_dict(
            {"name": "probe", "window_s": 1.0, **workload.base}, catalog=catalog
        )
        self.catalog = probe.resolved_catalog
        self.nodes = probe.nodes
        self.node_ids = probe.node_ids
        self.tiers = {n.id: n.tier for n in probe.nodes}
        self.memory_gb = probe.node_memory_gb
        self.concurrency = probe.node_concurrency
        self.graph = probe.network_graph
        self.link_mbps = np.array([k.bandwidth_mbps for k in probe.network.links])
        self.site_index = {s: i for i, s in enumerate(probe.network.sites)}
        self.requests = [Request(arrival_s=0.0, **body) for body in workload.requests]
        self.index = {r.id: i for i, r in enumerate(self.requests)}
        self.arrival = workload.arrival_s
        self.truth: PairTruth = world.pairs(self.requests, probe.nodes)
        self.speeds = [world.speeds(n) for n in probe.nodes]
        self._routes: dict[tuple[str, str], Any] = {}
        self.upload_bits = np.array([8.0 * r.upload_bytes for r in self.requests])

    def route(self, site: str, node: str):
        key = (site, node)
        if key not in self._routes:
            self._routes[key] = self.graph.route(site, node)
        return self._routes[key]

    def window_instance(
        self,
        k: int,
        rows: Sequence[int],
        window_s: float,
        defer: bool,
        active: Sequence[int] | None = None,
    ) -> Instance:
        start = k * window_s
        reqs = []
        for i in rows:
            body = dict(self.workload.requests[i])
            waited = start - self.arrival[i]
            if waited > 0:  # carried over from an earlier window
                body["arrival_s"] = 0.0
                if "deadline_s" in body:
                    left = body["deadline_s"] - waited
                    if left > 0:
                        body["deadline_s"] = left
                    else:
                        del body["deadline_s"]
            else:
                body["arrival_s"] = min(float(-waited), window_s)
            reqs.append(body)
        base = dict(self.workload.base)
        if not defer:
            base["objective"] = {**base["objective"], "deferral_penalty_s": None}
        if active is not None:
            base["nodes"] = [
                {**node, "active_requests": int(a)}
                for node, a in zip(base["nodes"], active, strict=True)
            ]
        return Instance.from_dict(
            {"name": f"window_{k}", "window_s": window_s, **base, "requests": reqs},
            catalog=self.catalog,
        )


def replay(
    workload: Workload,
    world: World | None = None,
    config: ReplayConfig | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    parallel: ParallelConfig | None = None,
) -> ReplayResult:
    """Replay ``workload`` under every policy of ``config`` in ``world``.

    ``progress(policy, windows_done, windows_total)`` is called after every window (in parallel:
    once per policy, when it ends). Policies are independent given the stream and the world, so
    ``parallel`` runs them in separate workers (:mod:`qlmio_opt.app.parallel`) with the same
    results.
    """
    world = world or World()
    config = config or ReplayConfig()
    stream = _Stream(workload, world, world.catalog)
    if parallel is None or parallel.serial:
        runs = {
            policy: _run_policy(stream, world, config, policy, progress)
            for policy in config.policies
        }
    else:
        runs = _run_policies_in_parallel(stream, world, config, progress, parallel)
    return ReplayResult(runs=runs, workload=workload, config=config, node_tiers=stream.tiers)


def _policy_task(args: tuple[_Stream, World, ReplayConfig, str]) -> PolicyRun:
    stream, world, config, policy = args
    return _run_policy(stream, world, config, policy, None)


def _run_policies_in_parallel(
    stream: _Stream,
    world: World,
    config: ReplayConfig,
    progress: Callable[[str, int, int], None] | None,
    parallel: ParallelConfig,
) -> dict[str, PolicyRun]:
    policies = list(config.policies)

    def finished(result) -> None:
        if progress is not None:
            progress(result.label, 1, 1)

    results = run_tasks(
        _policy_task,
        [(stream, world, config, policy) for policy in policies],
        labels=policies,
        config=parallel,
        on_result=finished,
    )
    failed = [r for r in results if not r.ok]
    if failed:
        error = QlmioError if failed[0].error_kind == "input" else RuntimeError
        raise error(f"policy {failed[0].error}")
    return {policy: r.value for policy, r in zip(policies, results, strict=True)}


def _predictor_for(policy: str, config: ReplayConfig, world: World):
    if not isinstance(config.predictors, str):
        return OraclePredictor(world) if policy == ORACLE else config.predictors
    if policy == ORACLE or config.predictors == ORACLE:
        return OraclePredictor(world)
    return get_predictor(config.predictors)


def _run_policy(
    stream: _Stream,
    world: World,
    config: ReplayConfig,
    policy: str,
    progress: Callable[[str, int, int], None] | None,
) -> PolicyRun:
    w = config.window_s
    n_req = len(stream.requests)
    n_nodes = len(stream.node_ids)
    solver = "exact" if policy == ORACLE else policy
    predictor = _predictor_for(policy, config, world)
    window_of = np.floor(stream.arrival / w).astype(np.int64)
    last_window = int(window_of.max()) if n_req else -1
    new_by_window = np.split(
        np.arange(n_req), np.searchsorted(window_of, np.arange(1, last_window + 1))
    )

    node = np.full(n_req, -1, dtype=np.int64)
    dispatch = np.full(n_req, np.nan)
    upload_end = np.full(n_req, np.nan)
    node_arrive = np.full(n_req, np.nan)
    deferrals = np.zeros(n_req, dtype=np.int64)
    predicted = np.full(n_req, np.nan)
    predicted_quality = np.full(n_req, np.nan)
    link_free = np.zeros(len(stream.link_mbps))
    servers = [
        NodeServer(
            concurrency=int(stream.concurrency[j]),
            memory_gb=float(stream.memory_gb[j]),
            weights_gb=stream.speeds[j].weights_gb,
            decode_tok_s=stream.speeds[j].decode_tok_s,
        )
        for j in range(n_nodes)
    ]
    job_of = np.full(n_req, -1, dtype=np.int64)
    truth = stream.truth
    windows: list[dict[str, Any]] = []
    carried: list[int] = []
    k = 0
    total = last_window + 1
    while k <= last_window or carried:
        new = list(new_by_window[k]) if k <= last_window else []
        rows = carried + new
        close = (k + 1) * w
        if not rows:
            k += 1
            continue
        defer = k < last_window
        for server in servers:
            server.run_until(close)
        active = [server.outstanding for server in servers] if config.observe_load else None
        inst = stream.window_instance(k, rows, w, defer, active)
        start = time.perf_counter()
        sol = solve(
            inst, solver, predictors=predictor, time_limit=config.time_limit, seed=config.seed
        )
        fallback, why = "", sol.message or ""
        if not sol.assignment and not sol.deferred:
            sol, fallback = _fallback(inst, solver, predictor, config)
        decide_s = time.perf_counter() - start
        carried, sent = [], []
        by_link: dict[int, list[int]] = {}
        for pos, i in enumerate(rows):
            rid = stream.requests[i].id
            target = sol.assignment.get(rid)
            if target is None:
                carried.append(i)
                deferrals[i] += 1
                continue
            j = stream.node_ids.index(target)
            node[i] = j
            dispatch[i] = close
            sent.append(i)
            decision = sol.requests[pos]
            waited = max(k * w - stream.arrival[i], 0.0)
            predicted[i] = (decision.latency_s or np.nan) + waited
            predicted_quality[i] = decision.quality if decision.quality is not None else np.nan
            route = stream.route(stream.requests[i].site, target)
            for link in route.link_idx:
                by_link.setdefault(int(link), []).append(i)
        done_upload = {i: close for i in sent}
        for link, members in by_link.items():
            begin = max(close, link_free[link])
            finish = share_link(stream.upload_bits[members], stream.link_mbps[link] * 1e6, begin)
            link_free[link] = float(finish.max())
            for i, t in zip(members, finish, strict=True):
                done_upload[i] = max(done_upload[i], float(t))
        for i in sent:
            route = stream.route(stream.requests[i].site, stream.node_ids[node[i]])
            upload_end[i] = done_upload[i]
            node_arrive[i] = done_upload[i] + route.rtt_ms / 1000.0
        for j in range(n_nodes):
            mine = np.array([i for i in sent if node[i] == j], dtype=np.int64)
            if len(mine) == 0:
                continue
            order = mine[np.lexsort((mine, node_arrive[mine]))]
            job_of[order] = servers[j].add(
                NodeJobs(
                    arrive_s=node_arrive[order],
                    compute_s=truth.compute_s[order, j],
                    tokens=truth.output_tokens[order, j],
                    kv_reserve_gb=truth.kv_reserve_gb[order, j],
                    kv_read_gb=truth.kv_read_gb[order, j],
                )
            )
        windows.append(
            {
                "window": k,
                "requests": len(rows),
                "dispatched": len(sent),
                "deferred": len(carried),
                "status": str(sol.status),
                "fallback": fallback,
                "message": why,
                "decision_s": decide_s,
                "predicted_objective": sol.objective,
            }
        )
        k += 1
        if progress is not None:
            progress(policy, min(k, total), total)

    rows_all = np.arange(n_req)
    admit = np.full(n_req, np.nan)
    prefill_end = np.full(n_req, np.nan)
    finish = np.full(n_req, np.nan)
    busy: dict[str, float] = {}
    for j, server in enumerate(servers):
        server.run_until()
        mine = rows_all[node == j]
        times = server.times(job_of[mine])
        admit[mine], prefill_end[mine], finish[mine] = (
            times.admit_s,
            times.prefill_end_s,
            times.finish_s,
        )
        busy[stream.node_ids[j]] = times.busy_s
    served = node >= 0
    completed = np.zeros(n_req, dtype=bool)
    completed[served] = truth.completed[rows_all[served], node[served]]
    deadline = np.array([np.nan if r.deadline_s is None else r.deadline_s for r in stream.requests])
    latency = finish - stream.arrival
    frame = pd.DataFrame(
        {
            "request": [r.id for r in stream.requests],
            "task": [r.task for r in stream.requests],
            "arrival_s": stream.arrival,
            "node": [stream.node_ids[j] if j >= 0 else None for j in node],
            "tier": [stream.tiers[stream.node_ids[j]] if j >= 0 else None for j in node],
            "deferrals": deferrals,
            "dispatch_s": dispatch,
            "upload_end_s": upload_end,
            "node_arrival_s": node_arrive,
            "admit_s": admit,
            "prefill_end_s": prefill_end,
            "finish_s": finish,
            "latency_s": latency,
            "predicted_latency_s": predicted,
            "predicted_quality": predicted_quality,
            "completed": completed,
            "deadline_s": deadline,
            "deadline_missed": np.where(np.isnan(deadline), False, latency > deadline),
            "output_tokens": np.where(
                served, truth.output_tokens[rows_all, np.maximum(node, 0)], np.nan
            ),
        }
    )
    return PolicyRun(policy, frame, pd.DataFrame(windows), busy)


def _fallback(inst: Instance, solver: str, predictor, config: ReplayConfig):
    """A decision for a window the policy found infeasible: the same solver without the
    per-request quality floors and deadlines, then greedy without them, then every request on its
    fastest reachable node (ignoring capacities). The world still counts the missed deadlines."""
    relaxed = inst.replace(
        requests=[
            {
                k: v
                for k, v in r.model_dump(mode="json", exclude_unset=True).items()
                if k not in ("min_quality", "deadline_s")
            }
            for r in inst.requests
        ]
    )
    for name in dict.fromkeys((solver, "greedy")):
        sol = solve(
            relaxed, name, predictors=predictor, time_limit=config.time_limit, seed=config.seed
        )
        if sol.assignment or sol.deferred:
            return sol, f"{name} without floors and deadlines"
    predictions = predict(inst, predictor)
    fastest = np.argmin(np.where(predictions.eligible, predictions.latency_s, np.inf), axis=1)
    decisions = [
        RequestDecision(
            request=r.id,
            node=inst.nodes[n].id,
            quality=float(predictions.quality[i, n]),
            latency_s=float(predictions.latency_s[i, n]),
        )
        for i, (r, n) in enumerate(zip(inst.requests, fastest, strict=True))
    ]
    sol = Solution(
        instance=inst.name,
        solver="fastest-node",
        predictors=predictions.source,
        status=Status.FEASIBLE,
        message="no feasible assignment: every request sent to its fastest reachable node",
        assignment={d.request: d.node for d in decisions},
        requests=tuple(decisions),
    )
    return sol, "fastest node"
