"""Replay a request stream window by window under several policies and measure them in the world.

Window ``k`` collects the requests arriving in ``[k w, (k + 1) w)`` plus those the policy deferred;
at its close the policy's :class:`~qlmio_opt.app.scheduler.Scheduler` (the object a gateway embeds:
solver, predictors, the nodes' state carried between windows) observes every node's state and
decides the window; the dispatched requests upload over the shared links, and the nodes serve them
with their engines (:mod:`qlmio_opt.simulator.engine`; each node's ``engine`` in the workload,
default chunked prefill). Once the trace has ended, windows keep closing with deferral switched off
until every request is dispatched, so every request is served exactly once.

``scheduler_for`` replaces each policy's in-process scheduler by anything that decides as one (a
:class:`SchedulerLike`): the scheduling service's tests replay through HTTP that way
(docs/service.md).

Every policy sees the same stream and the same world (hence the same hidden truth). A request's
latency runs from its arrival to its last output token; it is completed when the node's model
truly completes it (:class:`~qlmio_opt.simulator.world.World`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from qlmio_opt.app.parallel import ParallelConfig, TaskResult, run_tasks
from qlmio_opt.app.scheduler import DEFAULT_MAX_DEFERRALS, Scheduler
from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.errors import QlmioError
from qlmio_opt.domain.instance import EngineSettings, Instance, NodeState, Request
from qlmio_opt.domain.network import Route
from qlmio_opt.domain.solution import Solution
from qlmio_opt.predictors import PREDICTOR_NAMES, Predictor, get_predictor
from qlmio_opt.simulator.engine import NodeJobs, NodeServer, node_server, share_link
from qlmio_opt.simulator.node_state import observed_state
from qlmio_opt.simulator.oracle import OraclePredictor
from qlmio_opt.simulator.workload import Workload
from qlmio_opt.simulator.world import PairTruth, World
from qlmio_opt.solvers import SOLVERS

ORACLE = "oracle"
ORACLE_EXPECTED = "oracle-expected"
ORACLE_OBSERVABLE = "oracle-observable"
ORACLES = (ORACLE, ORACLE_EXPECTED, ORACLE_OBSERVABLE)


class WindowDecision(Protocol):
    """What the replay reads of a window's decision (a :class:`~qlmio_opt.app.scheduler.Decision`
    has it all)."""

    @property
    def solution(self) -> Solution: ...

    @property
    def deferred(self) -> tuple[str, ...]: ...

    @property
    def fallback(self) -> str: ...

    @property
    def message(self) -> str: ...

    @property
    def decision_s(self) -> float: ...


class SchedulerLike(Protocol):
    """What the replay asks of a policy's scheduler: the calls a gateway makes
    (:class:`~qlmio_opt.app.scheduler.Scheduler` is one)."""

    @property
    def window_s(self) -> float: ...

    @property
    def track_state(self) -> bool: ...

    @property
    def pending(self) -> Sequence[object]:
        """What waits for the next window (only whether anything does is read)."""

    def observe(self, node_id: str, state: NodeState, now: float) -> None: ...

    def decide(
        self, requests: Iterable[Request], now: float, *, allow_deferral: bool = True
    ) -> WindowDecision: ...


SchedulerFor = Callable[[str, Scheduler], SchedulerLike]
"""``(policy, the policy's in-process scheduler) -> what the replay decides the policy's windows
with``: for example a client of a scheduling service serving that scheduler."""


@dataclass(frozen=True)
class ReplayConfig:
    """How windows are formed and decided.

    Attributes
    ----------
    window_s
        Window length (seconds).
    policies
        Solver names (``qlmio-opt solvers``) plus ``"oracle"`` (exact with the world's truth:
        drawn outcomes and true latencies), ``"oracle-expected"`` (exact with the world's
        true completion probabilities and expected latencies, no drawn outcome) and
        ``"oracle-observable"`` (as ``oracle-expected`` with each request's hidden difficulty
        averaged out: the best any predictor of the request's features can know;
        :class:`~qlmio_opt.simulator.oracle.OraclePredictor`).
    predictors
        Predictors the non-oracle policies use: ``"analytic"``, ``"oracle"``, or a fitted
        predictor object (for example a learned one).
    time_limit
        Per-window time limit of every solver (seconds).
    seed
        Seed of the randomised solvers.
    observe_load
        Whether each window's instance carries each node's observed ``state`` (the requests of
        earlier windows it runs, holds or has on their way, with their known token counts and
        the KV memory in use: :func:`~qlmio_opt.simulator.node_state.observed_state`); an
        engine's metrics and the gateway's records show it. When false, every window is decided
        as if the nodes were idle.
    max_deferrals
        How often one request may be deferred (:class:`~qlmio_opt.app.scheduler.Scheduler`).
    look_ahead
        Whether the scheduler tells each window the nodes' recent prefill load.
    """

    window_s: float = 2.0
    policies: tuple[str, ...] = ("exact", "greedy", "all-cloud", "per-request", ORACLE)
    predictors: str | Predictor = "analytic"
    time_limit: float | None = 10.0
    seed: int = 0
    observe_load: bool = True
    max_deferrals: int = DEFAULT_MAX_DEFERRALS
    look_ahead: bool = True

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"window_s must be > 0; got {self.window_s}")
        unknown = [p for p in self.policies if p not in ORACLES and p not in SOLVERS]
        if unknown:
            raise ValueError(
                f"unknown polic{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
                f"choose from {', '.join([*SOLVERS, *ORACLES])}"
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
    node_engines: Mapping[str, EngineSettings] = field(default_factory=dict)

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
        self.engines = probe.node_engines
        self.graph = probe.network_graph
        self.link_mbps = np.array([k.bandwidth_mbps for k in probe.network.links])
        self.requests = [Request(arrival_s=0.0, **body) for body in workload.requests]
        self.index = {r.id: i for i, r in enumerate(self.requests)}
        self.arrival = workload.arrival_s
        self.truth: PairTruth = world.pairs(self.requests, probe.nodes)
        self.speeds = [world.speeds(n) for n in probe.nodes]
        self.upload_bits = np.array([8.0 * r.upload_bytes for r in self.requests])
        self.prompt_tokens = np.array([r.prompt_tokens for r in self.requests], dtype=float)

    def route(self, request: int, node: int) -> Route:
        """The path from request ``request``'s site to node ``node`` (indices)."""
        site, node_id = self.requests[request].site, self.node_ids[node]
        route = self.graph.route(site, node_id)
        if route is None:
            raise QlmioError(f'node "{node_id}" is unreachable from site "{site}"')
        return route

    def request_at(self, i: int) -> Request:
        """Request ``i`` as a gateway sees it: arrival on the replay's clock."""
        return self.requests[i].model_copy(update={"arrival_s": float(self.arrival[i])})


def replay(
    workload: Workload,
    world: World | None = None,
    config: ReplayConfig | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    parallel: ParallelConfig | None = None,
    scheduler_for: SchedulerFor | None = None,
) -> ReplayResult:
    """Replay ``workload`` under every policy of ``config`` in ``world``.

    ``progress(policy, windows_done, windows_total)`` is called after every window (in parallel:
    once per policy, when it ends). Policies are independent given the stream and the world, so
    ``parallel`` runs them in separate workers (:mod:`qlmio_opt.app.parallel`) with the same
    results. ``scheduler_for(policy, scheduler)`` gives what decides a policy's windows instead
    of its in-process ``scheduler`` (serial runs only).
    """
    world = world or World()
    config = config or ReplayConfig()
    stream = _Stream(workload, world, world.catalog)
    if parallel is None or parallel.serial:
        runs = {
            policy: _run_policy(stream, world, config, policy, progress, scheduler_for)
            for policy in config.policies
        }
    elif scheduler_for is not None:
        raise ValueError(
            "scheduler_for replays run serially (its schedulers are not sent to workers)"
        )
    else:
        runs = _run_policies_in_parallel(stream, world, config, progress, parallel)
    return ReplayResult(
        runs=runs,
        workload=workload,
        config=config,
        node_tiers=stream.tiers,
        node_engines=dict(zip(stream.node_ids, stream.engines, strict=True)),
    )


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
def _scheduler(stream: _Stream, world: World, config: ReplayConfig, policy: str) -> Scheduler:
    """The :class:`~qlmio_opt.app.scheduler.Scheduler` a policy decides with: its solver (exact
    for the oracles) and predictors (the world's truth for the oracles)."""
    solver = "exact" if policy in ORACLES else policy
    return Scheduler(
        {"window_s": config.window_s, **stream.workload.base},
        solver=solver,
        predictors=_predictor_for(policy, config, world),
        time_limit=config.time_limit,
        seed=config.seed,
        max_deferrals=config.max_deferrals,
        track_state=config.observe_load,
        look_ahead=config.look_ahead,
        catalog=stream.catalog,
    )


def _predictor_for(policy: str, config: ReplayConfig, world: World) -> Predictor:
    if policy == ORACLE_EXPECTED:
        return OraclePredictor(world, knowledge="probability")
    if policy == ORACLE_OBSERVABLE:
        return OraclePredictor(world, knowledge="observable")
    if policy == ORACLE:
        return OraclePredictor(world)
    if not isinstance(config.predictors, str):
        return config.predictors
    if config.predictors == ORACLE:
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
    job_requests: list[list[Request]]  # per node, the request behind each of its jobs

    @staticmethod
    def start(stream: _Stream) -> _PolicyState:
        """Nothing decided yet; every node idle, with its engine."""
        n = len(stream.requests)
        servers = [
            node_server(
                engine.scheduler,
                concurrency=int(stream.concurrency[j]),
                memory_gb=float(stream.memory_gb[j]),
                weights_gb=speed.weights_gb,
                decode_tok_s=speed.decode_tok_s,
                prefill_tok_s=speed.prefill_tok_s,
                max_batched_tokens=engine.max_batched_tokens,
            )
            for j, (speed, engine) in enumerate(zip(stream.speeds, stream.engines, strict=True))
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
            job_requests=[[] for _ in servers],
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
    scheduler_for: SchedulerFor | None = None,
) -> PolicyRun:
    """Replay the stream under ``policy``: decide each window at its close (with the requests
    it deferred), then let the world serve what was dispatched; see the module docstring."""
    in_process = _scheduler(stream, world, config, policy)
    scheduler = in_process if scheduler_for is None else scheduler_for(policy, in_process)
    state = _PolicyState.start(stream)
    new_by_window = _arrivals_by_window(stream.arrival, config.window_s)
    last_window = len(new_by_window) - 1
    windows: list[dict[str, Any]] = []
    k = 0
    while k <= last_window or scheduler.pending:
        new = list(new_by_window[k]) if k <= last_window else []
        if new or scheduler.pending:
            windows.append(_run_window(stream, state, scheduler, k, new, defer=k < last_window))
        k += 1
        if new and progress is not None:
            progress(policy, min(k, last_window + 1), last_window + 1)
    times = _serve_to_the_end(stream, state)
    return PolicyRun(
        policy, _requests_frame(stream, state, times), pd.DataFrame(windows), times.busy_s
    )


def _run_window(
    stream: _Stream,
    state: _PolicyState,
    scheduler: SchedulerLike,
    k: int,
    new: list[int],
    defer: bool,
) -> dict[str, Any]:
    """Observe the nodes at window ``k``'s close, let the scheduler decide the window (its new
    requests ``new`` and those it deferred) and dispatch what it sent; returns the window's
    row."""
    w = scheduler.window_s
    close = (k + 1) * w
    for server in state.servers:
        server.run_until(close)
    if scheduler.track_state:
        observed = _observed_states(state, close)
        for node_id, node_state in zip(stream.node_ids, observed, strict=True):
            scheduler.observe(node_id, node_state, close)
    requests = [stream.request_at(i) for i in new]
    decision = scheduler.decide(requests, close, allow_deferral=defer)
    sent = _record_decision(stream, state, decision, k, w)
    _upload(stream, state, sent, close)
    _hand_to_nodes(stream, state, sent)
    return {
        "window": k,
        "requests": len(decision.solution.requests),
        "dispatched": len(sent),
        "deferred": len(decision.deferred),
        "status": str(decision.solution.status),
        "fallback": decision.fallback,
        "message": decision.message,
        "decision_s": decision.decision_s,
        "predicted_objective": decision.solution.objective,
    }


def _observed_states(state: _PolicyState, now: float) -> list[NodeState]:
    """Every node's state at ``now`` as the scheduler observes it."""
    return [
        observed_state(server, jobs, now)
        for server, jobs in zip(state.servers, state.job_requests, strict=True)
    ]


def _record_decision(
    stream: _Stream, state: _PolicyState, decision: WindowDecision, k: int, w: float
) -> list[int]:
    """Note where each request of the window goes (or that it is deferred) and what the policy
    predicted for it; returns the dispatched requests."""
    close = (k + 1) * w
    sent = []
    for choice in decision.solution.requests:
        i = stream.index[choice.request]
        if choice.node is None:
            state.deferrals[i] += 1
            continue
        state.node[i] = stream.node_ids.index(choice.node)
        state.dispatch_s[i] = close
        sent.append(i)
        waited = max(k * w - stream.arrival[i], 0.0)
        state.predicted_latency_s[i] = (choice.latency_s or np.nan) + waited
        state.predicted_quality[i] = choice.quality if choice.quality is not None else np.nan
    return sent


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
                prompt_tokens=stream.prompt_tokens[order],
                image_tokens=truth.image_tokens[order, j],
            )
        )
        state.job_requests[j].extend(stream.requests[i] for i in order)


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
    completion_prob = np.full(n, np.nan)
    completion_prob[served] = truth.completion_prob[rows_all[served], node[served]]
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
            "completion_prob": completion_prob,
            "deadline_s": deadline,
            "deadline_missed": np.where(np.isnan(deadline), False, latency > deadline),
            "output_tokens": np.where(
                served, truth.output_tokens[rows_all, np.maximum(node, 0)], np.nan
            ),
        }
    )
