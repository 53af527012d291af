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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qlmio_opt.app.parallel import ParallelConfig, TaskResult, run_tasks
from qlmio_opt.app.solve import solve
from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.errors import QlmioError
from qlmio_opt.domain.instance import Instance, Request
from qlmio_opt.domain.network import Route
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
    """Every policy's run over one workload, and how the replay was configured."""

    runs: dict[str, PolicyRun]
    workload: Workload
    config: ReplayConfig
    node_tiers: Mapping[str, str]

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
        self.node_ids = probe.node_ids
        self.tiers = {n.id: n.tier for n in probe.nodes}
        self.memory_gb = probe.node_memory_gb
        self.concurrency = probe.node_concurrency
        self.graph = probe.network_graph
        self.link_mbps = np.array([k.bandwidth_mbps for k in probe.network.links])
        self.requests = [Request(arrival_s=0.0, **body) for body in workload.requests]
        self.arrival = workload.arrival_s
        self.truth: PairTruth = world.pairs(self.requests, probe.nodes)
        self.speeds = [world.speeds(n) for n in probe.nodes]
        self.upload_bits = np.array([8.0 * r.upload_bytes for r in self.requests])

    def route(self, request: int, node: int) -> Route:
        """The path from request ``request``'s site to node ``node`` (indices)."""
        site, node_id = self.requests[request].site, self.node_ids[node]
        route = self.graph.route(site, node_id)
        if route is None:
            raise QlmioError(f'node "{node_id}" is unreachable from site "{site}"')
        return route

    def window_instance(
        self,
        k: int,
        rows: Sequence[int],
        window_s: float,
        defer: bool,
        active: Sequence[int] | None = None,
    ) -> Instance:
        """Window ``k``'s instance: its requests with arrival times (and deadlines) relative to
        its start, deferral allowed or not, and each node's requests still in service."""
        start = k * window_s
        reqs = [self._window_body(i, start, window_s) for i in rows]
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

    def _window_body(self, i: int, start: float, window_s: float) -> dict[str, Any]:
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
        return body


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

    def finished(result: TaskResult[PolicyRun]) -> None:
        if progress is not None:
            progress(result.label, 1, 1)

    results = run_tasks(
        _policy_task,
        [(stream, world, config, policy) for policy in policies],
        labels=policies,
        config=parallel,
        on_result=finished,
    )
    runs: dict[str, PolicyRun] = {}
    for policy, result in zip(policies, results, strict=True):
        if not result.ok or result.value is None:
            error = QlmioError if result.error_kind == "input" else RuntimeError
            raise error(f"policy {result.error}")
        runs[policy] = result.value
    return runs


# --------------------------------------------------------------------------------------------
# one policy, window by window
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Policy:
    """How one policy decides a window: its solver with its predictor."""

    solver: str
    predictor: Predictor
    config: ReplayConfig

    @staticmethod
    def of(policy: str, config: ReplayConfig, world: World) -> _Policy:
        """``policy`` as configured: the oracle is the exact solver with the world's truth."""
        solver = "exact" if policy == ORACLE else policy
        return _Policy(solver, _predictor_for(policy, config, world), config)

    def decide(self, inst: Instance) -> _Decision:
        """The solver's decision, or :func:`_fallback`'s when it has none; timed."""
        start = time.perf_counter()
        sol = self.run_solver(inst, self.solver)
        fallback, message = "", sol.message or ""
        if not sol.assignment and not sol.deferred:
            sol, fallback = _fallback(inst, self)
        return _Decision(sol, fallback, message, time.perf_counter() - start)

    def run_solver(self, inst: Instance, solver: str) -> Solution:
        """``solver``'s solution of ``inst`` with this policy's predictor and limits."""
        return solve(
            inst,
            solver,
            predictors=self.predictor,
            time_limit=self.config.time_limit,
            seed=self.config.seed,
        )


@dataclass(frozen=True)
class _Decision:
    solution: Solution
    fallback: str  # which fallback decided the window ("" when the policy itself did)
    message: str  # the policy's own message (why it found no assignment)
    decision_s: float


def _predictor_for(policy: str, config: ReplayConfig, world: World) -> Predictor:
    if not isinstance(config.predictors, str):
        return OraclePredictor(world) if policy == ORACLE else config.predictors
    if policy == ORACLE or config.predictors == ORACLE:
        return OraclePredictor(world)
    return get_predictor(config.predictors)


@dataclass
class _PolicyState:
    """What one policy's replay has decided and measured so far; arrays by request index."""

    node: np.ndarray  # node index, -1 until dispatched
    dispatch_s: np.ndarray
    upload_end_s: np.ndarray
    node_arrival_s: np.ndarray
    deferrals: np.ndarray
    predicted_latency_s: np.ndarray
    predicted_quality: np.ndarray
    job: np.ndarray  # job number on its node's server
    link_free_s: np.ndarray  # per link: when its uploads so far have finished
    servers: list[NodeServer]

    @staticmethod
    def start(stream: _Stream) -> _PolicyState:
        """Nothing decided yet; every node idle."""
        n = len(stream.requests)
        servers = [
            NodeServer(
                concurrency=int(stream.concurrency[j]),
                memory_gb=float(stream.memory_gb[j]),
                weights_gb=speed.weights_gb,
                decode_tok_s=speed.decode_tok_s,
            )
            for j, speed in enumerate(stream.speeds)
        ]
        return _PolicyState(
            node=np.full(n, -1, dtype=np.int64),
            dispatch_s=np.full(n, np.nan),
            upload_end_s=np.full(n, np.nan),
            node_arrival_s=np.full(n, np.nan),
            deferrals=np.zeros(n, dtype=np.int64),
            predicted_latency_s=np.full(n, np.nan),
            predicted_quality=np.full(n, np.nan),
            job=np.full(n, -1, dtype=np.int64),
            link_free_s=np.zeros(len(stream.link_mbps)),
            servers=servers,
        )


def _arrivals_by_window(arrival_s: np.ndarray, window_s: float) -> list[np.ndarray]:
    """Indices of the requests arriving in each window ``k`` (``[k w, (k + 1) w)``)."""
    window_of = np.floor(arrival_s / window_s).astype(np.int64)
    last_window = int(window_of.max()) if len(arrival_s) else -1
    bounds = np.searchsorted(window_of, np.arange(1, last_window + 1))
    return np.split(np.arange(len(arrival_s)), bounds) if len(arrival_s) else []


def _run_policy(
    stream: _Stream,
    world: World,
    config: ReplayConfig,
    policy: str,
    progress: Callable[[str, int, int], None] | None,
) -> PolicyRun:
    """Replay the stream under ``policy``: decide each window at its close (with the requests
    it deferred), then let the world serve what was dispatched; see the module docstring."""
    decider = _Policy.of(policy, config, world)
    state = _PolicyState.start(stream)
    new_by_window = _arrivals_by_window(stream.arrival, config.window_s)
    last_window = len(new_by_window) - 1
    windows: list[dict[str, Any]] = []
    carried: list[int] = []
    k = 0
    while k <= last_window or carried:
        rows = carried + (list(new_by_window[k]) if k <= last_window else [])
        if rows:
            row, carried = _run_window(stream, state, decider, k, rows, defer=k < last_window)
            windows.append(row)
        k += 1
        if rows and progress is not None:
            progress(policy, min(k, last_window + 1), last_window + 1)
    times = _serve_to_the_end(stream, state)
    return PolicyRun(
        policy, _requests_frame(stream, state, times), pd.DataFrame(windows), times.busy_s
    )


def _run_window(
    stream: _Stream, state: _PolicyState, decider: _Policy, k: int, rows: list[int], defer: bool
) -> tuple[dict[str, Any], list[int]]:
    """Decide window ``k`` at its close and dispatch its requests; returns the window's row and
    the requests carried to the next window."""
    w = decider.config.window_s
    close = (k + 1) * w
    for server in state.servers:
        server.run_until(close)
    active = [s.outstanding for s in state.servers] if decider.config.observe_load else None
    decision = decider.decide(stream.window_instance(k, rows, w, defer, active))
    sent, carried = _record_decision(stream, state, decision.solution, k, w, rows)
    _upload(stream, state, sent, close)
    _hand_to_nodes(stream, state, sent)
    row = {
        "window": k,
        "requests": len(rows),
        "dispatched": len(sent),
        "deferred": len(carried),
        "status": str(decision.solution.status),
        "fallback": decision.fallback,
        "message": decision.message,
        "decision_s": decision.decision_s,
        "predicted_objective": decision.solution.objective,
    }
    return row, carried


def _record_decision(
    stream: _Stream, state: _PolicyState, sol: Solution, k: int, w: float, rows: list[int]
) -> tuple[list[int], list[int]]:
    """Note where each request of the window goes (or that it is deferred) and what the policy
    predicted for it; returns the dispatched and the deferred requests."""
    close = (k + 1) * w
    sent, carried = [], []
    for pos, i in enumerate(rows):
        target = sol.assignment.get(stream.requests[i].id)
        if target is None:
            carried.append(i)
            state.deferrals[i] += 1
            continue
        state.node[i] = stream.node_ids.index(target)
        state.dispatch_s[i] = close
        sent.append(i)
        decision = sol.requests[pos]
        waited = max(k * w - stream.arrival[i], 0.0)
        state.predicted_latency_s[i] = (decision.latency_s or np.nan) + waited
        quality = decision.quality
        state.predicted_quality[i] = quality if quality is not None else np.nan
    return sent, carried


def _upload(stream: _Stream, state: _PolicyState, sent: list[int], close: float) -> None:
    """Upload the dispatched requests over their paths' links (each link shared by the uploads
    crossing it, after its earlier uploads); note when each reaches its node."""
    by_link: dict[int, list[int]] = {}
    for i in sent:
        for link in stream.route(i, int(state.node[i])).link_idx:
            by_link.setdefault(int(link), []).append(i)
    done_upload = {i: close for i in sent}
    for link, members in by_link.items():
        begin = max(close, state.link_free_s[link])
        finish = share_link(stream.upload_bits[members], stream.link_mbps[link] * 1e6, begin)
        state.link_free_s[link] = float(finish.max())
        for i, t in zip(members, finish, strict=True):
            done_upload[i] = max(done_upload[i], float(t))
    for i in sent:
        route = stream.route(i, int(state.node[i]))
        state.upload_end_s[i] = done_upload[i]
        state.node_arrival_s[i] = done_upload[i] + route.rtt_ms / 1000.0


def _hand_to_nodes(stream: _Stream, state: _PolicyState, sent: list[int]) -> None:
    """Give each node its dispatched requests, in order of arrival there, with their truth."""
    truth = stream.truth
    for j, server in enumerate(state.servers):
        mine = np.array([i for i in sent if state.node[i] == j], dtype=np.int64)
        if len(mine) == 0:
            continue
        order = mine[np.lexsort((mine, state.node_arrival_s[mine]))]
        state.job[order] = server.add(
            NodeJobs(
                arrive_s=state.node_arrival_s[order],
                compute_s=truth.compute_s[order, j],
                tokens=truth.output_tokens[order, j],
                kv_reserve_gb=truth.kv_reserve_gb[order, j],
                kv_read_gb=truth.kv_read_gb[order, j],
            )
        )


@dataclass
class _ServiceTimes:
    """When each request was admitted, finished prefill and finished; each node's busy time."""

    admit_s: np.ndarray
    prefill_end_s: np.ndarray
    finish_s: np.ndarray
    busy_s: dict[str, float]


def _serve_to_the_end(stream: _Stream, state: _PolicyState) -> _ServiceTimes:
    """Run every node until its last request finishes."""
    n = len(stream.requests)
    rows_all = np.arange(n)
    out = _ServiceTimes(np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan), {})
    for j, server in enumerate(state.servers):
        server.run_until()
        mine = rows_all[state.node == j]
        times = server.times(state.job[mine])
        out.admit_s[mine] = times.admit_s
        out.prefill_end_s[mine] = times.prefill_end_s
        out.finish_s[mine] = times.finish_s
        out.busy_s[stream.node_ids[j]] = times.busy_s
    return out


def _requests_frame(stream: _Stream, state: _PolicyState, times: _ServiceTimes) -> pd.DataFrame:
    """One row per request: where it went, when, what was predicted and what truly happened."""
    truth = stream.truth
    n = len(stream.requests)
    rows_all = np.arange(n)
    node = state.node
    served = node >= 0
    completed = np.zeros(n, dtype=bool)
    completed[served] = truth.completed[rows_all[served], node[served]]
    deadline = np.array([np.nan if r.deadline_s is None else r.deadline_s for r in stream.requests])
    latency = times.finish_s - stream.arrival
    return pd.DataFrame(
        {
            "request": [r.id for r in stream.requests],
            "task": [r.task for r in stream.requests],
            "arrival_s": stream.arrival,
            "node": [stream.node_ids[j] if j >= 0 else None for j in node],
            "tier": [stream.tiers[stream.node_ids[j]] if j >= 0 else None for j in node],
            "deferrals": state.deferrals,
            "dispatch_s": state.dispatch_s,
            "upload_end_s": state.upload_end_s,
            "node_arrival_s": state.node_arrival_s,
            "admit_s": times.admit_s,
            "prefill_end_s": times.prefill_end_s,
            "finish_s": times.finish_s,
            "latency_s": latency,
            "predicted_latency_s": state.predicted_latency_s,
            "predicted_quality": state.predicted_quality,
            "completed": completed,
            "deadline_s": deadline,
            "deadline_missed": np.where(np.isnan(deadline), False, latency > deadline),
            "output_tokens": np.where(
                served, truth.output_tokens[rows_all, np.maximum(node, 0)], np.nan
            ),
        }
    )


def _fallback(inst: Instance, decider: _Policy) -> tuple[Solution, str]:
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
    for name in dict.fromkeys((decider.solver, "greedy")):
        sol = decider.run_solver(relaxed, name)
        if sol.assignment or sol.deferred:
            return sol, f"{name} without floors and deadlines"
    return _fastest_nodes(inst, decider.predictor), "fastest node"


def _fastest_nodes(inst: Instance, predictor: Predictor) -> Solution:
    """Every request on its fastest reachable node by the predictions, capacities ignored."""
    predictions = predict(inst, predictor)
    fastest = np.argmin(np.where(predictions.eligible, predictions.latency_s, np.inf), axis=1)
    decisions = []
    assignment = {}
    for i, (r, n) in enumerate(zip(inst.requests, fastest, strict=True)):
        node_id = inst.nodes[n].id
        assignment[r.id] = node_id
        decisions.append(
            RequestDecision(
                request=r.id,
                node=node_id,
                quality=float(predictions.quality[i, n]),
                latency_s=float(predictions.latency_s[i, n]),
            )
        )
    return Solution(
        instance=inst.name,
        solver="fastest-node",
        predictors=predictions.source,
        status=Status.FEASIBLE,
        message="no feasible assignment: every request sent to its fastest reachable node",
        assignment=assignment,
        requests=tuple(decisions),
    )
