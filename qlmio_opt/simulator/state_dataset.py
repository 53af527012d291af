"""Bench rows under load: each request run on each node in a sampled live state, under both
serving engines, with the latency decomposed and the state recorded as a scheduler observes it.

The stand-alone table of :mod:`qlmio_opt.simulator.dataset` (format ``qlmio-opt/bench-data``
version 1) stays as it is; this is a separate table, format :data:`STATE_BENCH_FORMAT`, written
beside it (``bench-state.csv.gz``), for the latency model that reads a node's state
(:mod:`qlmio_opt.predictors.learned_load_latency`).

**Requests and nodes** are those of :func:`~qlmio_opt.simulator.dataset.bench_data` for the same
seed and scenario (ids ``mb<seed>-<i:06d>``, one node per device-model pair), and so are the
splits (a hash of the request id).

**The live state.** Each (request, node) pair draws, from a generator seeded by ``(seed,
"STAT")``: with probability :attr:`StateConfig.idle_share` an idle node, else a background
arrival rate ``u * capacity`` with ``u`` uniform in ``0 .. max_utilisation`` (``capacity``: the
node's estimated requests per second, :func:`~qlmio_opt.simulator.dataset.node_capacity`).
Background requests (other requests of the dataset, with their own truth on the node) arrive as
a Poisson process over the :attr:`~StateConfig.before_s` seconds before the decision at ``t0``
and the :attr:`~StateConfig.after_s` seconds after it (later windows keep sending work). The
same background serves both engines, so a pair's two rows differ only by the engine.

**Observation.** At ``t0`` the node is run with the background dispatched so far and observed by
:func:`~qlmio_opt.simulator.node_state.observed_state`: running and waiting requests with their
prompt and image tokens, the output tokens streamed so far, their task and output allowance, the
KV memory in use; never a remaining output length. ``prefill_load`` is the scheduler's own
estimate (:class:`~qlmio_opt.app.scheduler.Scheduler`): the catalog's prefill work of every
dispatch, weighted by ``ln 2 / h * 2^(-age / h)`` with the scheduler's half-life ``h``. The
state is kept whole (``state_json``, the instance's ``NodeState``) and summarised in columns.

**The target** is dispatched at ``t0`` after a window wait (uniform in ``0 .. window_s``): it
uploads alone at the path's bandwidth (log-uniform, as the stand-alone table draws it; link
sharing among a window's requests is the formulation's link constraint, not a latency term),
reaches the node one RTT later and is served by the engine with everything else::

    latency_s = wait_s + transfer_s + rtt_s + queue_s + prefill_s + decode_s
    queue_s = admit - arrival, prefill_s = prefill end - admit, decode_s = finish - prefill end

**Load level** (observable, for evaluation by load): ``idle`` when nothing runs or waits,
``saturated`` when requests wait for admission or the prefill load is at least
:data:`SATURATED_LOAD`, else ``busy``.

Deterministic: the same ``(n_requests, seed, scenario, world, config)`` gives an identical table.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qlmio_opt.app.scheduler import LOAD_HALF_LIFE_S
from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.engine_load import prefill_work_s
from qlmio_opt.domain.frozen import FrozenDict
from qlmio_opt.domain.instance import ENGINE_SCHEDULERS, InFlight, Node, NodeState, Request
from qlmio_opt.domain.scenarios.generate import get_scenario
from qlmio_opt.domain.version import VERSION
from qlmio_opt.simulator.dataset import (
    bench_nodes,
    check_bench_args,
    draw_bench_requests,
    node_capacity,
    other_requests,
    split_of,
)
from qlmio_opt.simulator.engine import NodeJobs, node_server
from qlmio_opt.simulator.node_state import observed_state
from qlmio_opt.simulator.world import PairTruth, World

__all__ = [
    "LOAD_LEVELS",
    "SATURATED_LOAD",
    "STATE_BENCH_FORMAT",
    "STATE_BENCH_VERSION",
    "STATE_COLUMNS",
    "STATE_TABLE_FILE",
    "StateBenchData",
    "StateConfig",
    "load_level",
    "read_state_table",
    "state_bench_data",
    "state_summary",
    "write_state_bench_data",
]

STATE_BENCH_FORMAT = "qlmio-opt/bench-state"
STATE_BENCH_VERSION = 1
STATE_TABLE_FILE = "bench-state.csv.gz"
STATE_META_FILE = "meta-state.json"
LOAD_LEVELS = ("idle", "busy", "saturated")

SATURATED_LOAD = 0.8
"""Prefill load (seconds of prefill work per second) from which a node counts as saturated for
the evaluation by load level: past it the engine-aware look-ahead stretch is over
``1 / (1 - 0.8) = 5`` on a serial-prefill node. Chosen by hand, not tuned."""

STATE_STREAM = 0x53544154  # "STAT"


@dataclass(frozen=True)
class StateConfig:
    """How each pair's live state is drawn (assumptions of this dataset).

    Attributes
    ----------
    idle_share
        Share of pairs whose node is idle (no background).
    max_utilisation
        The background arrival rate is ``u * capacity``, ``u`` uniform in ``0 ..
        max_utilisation``: beyond 1 the node falls behind (saturated states).
    before_s, after_s
        Background arrivals before the decision (building the state) and after it.
    window_s
        The window: the target waits uniform ``0 .. window_s`` for it to close, and the
        engine-aware analytic model's look-ahead reads it.
    max_background
        At most this many background requests per pair (bounds the simulation's cost).
    edge_mbps, cloud_mbps, edge_rtt_ms, cloud_rtt_ms
        Ranges of the path bandwidth (log-uniform) and RTT (uniform), as the stand-alone table's.
    """

    idle_share: float = 0.2
    max_utilisation: float = 1.3
    before_s: float = 10.0
    after_s: float = 10.0
    window_s: float = 2.0
    max_background: int = 160
    edge_mbps: tuple[float, float] = (10.0, 1000.0)
    cloud_mbps: tuple[float, float] = (100.0, 1000.0)
    edge_rtt_ms: tuple[float, float] = (5.0, 15.0)
    cloud_rtt_ms: tuple[float, float] = (20.0, 60.0)


STATE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("request", "id", "Request id (`mb<seed>-<index>`)."),
    ("split", "id", "train / validation / test, by a hash of the request id."),
    ("node", "id", "Node id (`<device>:<model>`)."),
    ("engine", "node", "Serving engine: chunked-prefill or serial-prefill."),
    ("max_batched_tokens", "node", "Token budget per step (chunked prefill)."),
    ("task", "request", "Task family."),
    ("prompt", "request", "Prompt text."),
    ("prompt_tokens", "request", "Text tokens of the prompt."),
    ("n_images", "request", "Images attached."),
    ("upload_bytes", "request", "Bytes uploaded."),
    ("max_output_tokens", "request", "Output allowance."),
    ("tier", "node", "edge or cloud."),
    ("model", "node", "Catalog key of the node's model."),
    ("device", "node", "Catalog key of the node's device."),
    ("max_concurrency", "node", "Requests the node serves at once."),
    ("memory_gb", "node", "Memory free for KV cache (inf = unbounded)."),
    ("image_tokens", "node", "LLM tokens the model spends on the images."),
    ("bandwidth_mbps", "load", "Path bandwidth to the node."),
    ("rtt_ms", "load", "Path round-trip time."),
    ("window_s", "load", "The window's length."),
    ("state_json", "state", "The node's observed state (an instance `NodeState`, JSON)."),
    ("n_running", "state", "Requests admitted (prefilling or decoding)."),
    ("n_prefilling", "state", "Running requests with no output yet."),
    ("n_waiting", "state", "Requests queued for admission."),
    ("running_input_tokens", "state", "Prompt + image tokens of the running requests."),
    ("running_output_tokens", "state", "Output tokens the running requests streamed so far."),
    ("waiting_input_tokens", "state", "Prompt + image tokens of the waiting requests."),
    ("kv_used_gb", "state", "KV memory in use."),
    ("prefill_load", "state", "Scheduler's recent prefill load (s of work per s)."),
    ("load_level", "state", "idle / busy / saturated (module docstring)."),
    ("wait_s", "truth", "Wait for the window to close."),
    ("transfer_s", "truth", "Upload time."),
    ("rtt_s", "truth", "Round-trip time."),
    ("queue_s", "truth", "Wait at the node before admission."),
    ("prefill_s", "truth", "Vision + prefill, incl. sharing the engine."),
    ("decode_s", "truth", "Decoding, incl. batching and prefill interference."),
    ("latency_s", "truth", "wait + transfer + rtt + queue + prefill + decode."),
    ("output_tokens", "truth", "Tokens the model generated."),
    ("utilisation", "hidden", "The drawn background rate over capacity (design, never a feature)."),
)
"""``(name, role, meaning)`` of every column. Roles as in the stand-alone table, plus ``state``
(the node's observed live state: a scheduler knows it) and ``hidden`` (never a feature)."""


@dataclass(frozen=True, eq=False)
class StateBenchData:
    """A generated state table and its metadata (see the module docstring)."""

    table: pd.DataFrame
    seed: int
    n_requests: int
    nodes: tuple[Node, ...]
    engines: tuple[str, ...]
    scenario: str
    world_config: Mapping[str, Any]
    config: StateConfig = field(default_factory=StateConfig)
    version: str = ""
    capacity_rps: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "world_config", FrozenDict(self.world_config))

    def meta(self) -> dict[str, Any]:
        """Metadata as written to ``meta-state.json``."""
        return {
            "format": STATE_BENCH_FORMAT,
            "version": STATE_BENCH_VERSION,
            "generator": f"qlmio_opt {self.version}",
            "seed": self.seed,
            "scenario": self.scenario,
            "n_requests": self.n_requests,
            "engines": list(self.engines),
            "n_rows": len(self.table),
            "load_levels": {k: int(v) for k, v in self.table["load_level"].value_counts().items()},
            "nodes": [
                {**node.model_dump(mode="json"), "capacity_rps": cap}
                for node, cap in zip(self.nodes, self.capacity_rps, strict=True)
            ],
            "world_config": self.world_config,
            "config": asdict(self.config),
            "columns": [{"name": n, "role": r, "description": d} for n, r, d in STATE_COLUMNS],
        }


def load_level(state: NodeState, max_concurrency: int) -> str:
    """``idle``, ``busy`` or ``saturated`` (module docstring) from an observed state."""
    del max_concurrency  # admission limits show as waiting requests
    if not state.running and not state.waiting:
        return "idle"
    if state.waiting or (state.prefill_load or 0.0) >= SATURATED_LOAD:
        return "saturated"
    return "busy"


# --------------------------------------------------------------------------------------------
# drawing and simulating
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairBackground:
    """One pair's draws, shared by its engines."""

    utilisation: float
    before: np.ndarray  # background request indices dispatched before t0
    before_at: np.ndarray
    after: np.ndarray
    after_at: np.ndarray
    wait_s: float
    bandwidth_mbps: float
    rtt_ms: float


def draw_pair_load(
    rng: np.random.Generator, n: int, i: int, node: Node, capacity: float, cfg: StateConfig
) -> PairBackground:
    idle = rng.random() < cfg.idle_share
    u = 0.0 if idle or n < 2 else float(rng.uniform(0.0, cfg.max_utilisation))
    rate = u * capacity
    n_before = min(int(rng.poisson(rate * cfg.before_s)), cfg.max_background)
    n_after = min(int(rng.poisson(rate * cfg.after_s)), cfg.max_background - n_before)
    before = other_requests(rng, n, i, n_before) if n_before else np.zeros(0, np.int64)
    after = other_requests(rng, n, i, n_after) if n_after else np.zeros(0, np.int64)
    before_at = np.sort(rng.uniform(0.0, cfg.before_s, n_before))
    after_at = cfg.before_s + np.sort(rng.uniform(0.0, cfg.after_s, n_after))
    edge = node.tier == "edge"
    lo, hi = cfg.edge_mbps if edge else cfg.cloud_mbps
    bandwidth = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
    rtt_lo, rtt_hi = cfg.edge_rtt_ms if edge else cfg.cloud_rtt_ms
    rtt = float(rng.uniform(rtt_lo, rtt_hi))
    wait = float(rng.uniform(0.0, cfg.window_s))
    return PairBackground(u, before, before_at, after, after_at, wait, bandwidth, rtt)


@dataclass(frozen=True)
class NodeContext:
    """What simulating one node needs: the node, its true speeds and the truth of every request
    on it, and the catalog's speeds for the scheduler's prefill-load estimate."""

    j: int
    node: Node
    truth: PairTruth
    weights_gb: float
    decode_tok_s: float
    prefill_tok_s: float
    budget: int
    work_s: np.ndarray  # (R,) catalog prefill work of each request on the node

    def server(self, engine: str):
        """A fresh simulated server of this node under ``engine``."""
        return node_server(
            engine,
            concurrency=int(self.node.max_concurrency or 1),
            memory_gb=math.inf if self.node.memory_gb is None else float(self.node.memory_gb),
            weights_gb=self.weights_gb,
            decode_tok_s=self.decode_tok_s,
            prefill_tok_s=self.prefill_tok_s,
            max_batched_tokens=self.budget,
        )


def node_jobs(ctx: NodeContext, idx: np.ndarray, at: np.ndarray, prompts: np.ndarray) -> NodeJobs:
    j = ctx.j
    return NodeJobs(
        arrive_s=at,
        compute_s=ctx.truth.compute_s[idx, j],
        tokens=ctx.truth.output_tokens[idx, j],
        kv_reserve_gb=ctx.truth.kv_reserve_gb[idx, j],
        kv_read_gb=ctx.truth.kv_read_gb[idx, j],
        prompt_tokens=prompts[idx].astype(float),
        image_tokens=ctx.truth.image_tokens[idx, j],
    )


def serve_target(
    ctx: NodeContext,
    engine: str,
    draw: PairBackground,
    i: int,
    requests: Sequence[Request],
    prompts: np.ndarray,
    cfg: StateConfig,
) -> tuple[NodeState, dict[str, float]]:
    """One row: the node's observed state at ``t0`` and the target's times."""
    server = ctx.server(engine)
    t0 = cfg.before_s
    server.add(node_jobs(ctx, draw.before, draw.before_at, prompts))
    jobs_requests = [requests[k] for k in draw.before]
    state = observed_state(server, jobs_requests, t0)
    age = t0 - draw.before_at
    weight = math.log(2) / LOAD_HALF_LIFE_S * 2.0 ** (-age / LOAD_HALF_LIFE_S)
    load = float(np.sum(ctx.work_s[draw.before] * weight))
    state = state.model_copy(update={"prefill_load": load})
    transfer = 8.0 * requests[i].upload_bytes / (draw.bandwidth_mbps * 1e6)
    rtt = draw.rtt_ms / 1000.0
    target = server.add(node_jobs(ctx, np.array([i]), np.array([t0 + transfer + rtt]), prompts))[0]
    if len(draw.after):
        server.add(node_jobs(ctx, draw.after, draw.after_at, prompts))
    server.run_until()
    times = server.times(np.array([target]))
    arrive = t0 + transfer + rtt
    queue = float(times.admit_s[0] - arrive)
    prefill = float(times.prefill_end_s[0] - times.admit_s[0])
    decode = float(times.finish_s[0] - times.prefill_end_s[0])
    parts = {
        "wait_s": draw.wait_s,
        "transfer_s": transfer,
        "rtt_s": rtt,
        "queue_s": queue,
        "prefill_s": prefill,
        "decode_s": decode,
    }
    parts["latency_s"] = float(sum(parts.values()))
    return state, parts


def _state_columns(state: NodeState) -> dict[str, Any]:
    running, waiting = state.running, state.waiting
    return {
        "state_json": json.dumps(state.model_dump(mode="json"), separators=(",", ":")),
        "n_running": len(running),
        "n_prefilling": sum(1 for r in running if r.output_tokens == 0),
        "n_waiting": len(waiting),
        "running_input_tokens": sum(r.prompt_tokens + r.image_tokens for r in running),
        "running_output_tokens": sum(r.output_tokens for r in running),
        "waiting_input_tokens": sum(r.prompt_tokens + r.image_tokens for r in waiting),
        "kv_used_gb": float(state.kv_used_gb or 0.0),
        "prefill_load": float(state.prefill_load or 0.0),
    }


def node_contexts(
    nodes: Sequence[Node], world: World, truth: PairTruth, requests: Sequence[Request]
) -> list[NodeContext]:
    catalog: Catalog = world.catalog
    out = []
    for j, node in enumerate(nodes):
        speed = world.speeds(node)
        model, device = catalog.model(node.model), catalog.device(node.device)
        work = np.array(
            [
                prefill_work_s(
                    InFlight(
                        prompt_tokens=r.prompt_tokens,
                        image_tokens=int(truth.image_tokens[k, j]),
                        max_output_tokens=r.max_output_tokens,
                    ),
                    model,
                    device,
                )
                for k, r in enumerate(requests)
            ]
        )
        out.append(
            NodeContext(
                j=j,
                node=node,
                truth=truth,
                weights_gb=speed.weights_gb,
                decode_tok_s=speed.decode_tok_s,
                prefill_tok_s=speed.prefill_tok_s,
                budget=device.engine_token_budget,
                work_s=work,
            )
        )
    return out


def state_bench_data(
    n_requests: int,
    seed: int = 0,
    *,
    scenario: str = "default",
    world: World | None = None,
    engines: Sequence[str] = ENGINE_SCHEDULERS,
    config: StateConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> StateBenchData:
    """Generate the state table (see the module docstring): ``n_requests x nodes x engines``
    rows.

    Raises
    ------
    ValueError
        If ``n_requests < 1``, ``seed < 0``, the scenario or an engine is unknown.
    """
    check_bench_args(n_requests, seed)
    unknown = [e for e in engines if e not in ENGINE_SCHEDULERS]
    if unknown or not engines:
        raise ValueError(f"engines must be some of {list(ENGINE_SCHEDULERS)}; got {list(engines)}")
    n, seed = int(n_requests), int(seed)
    cfg = config or StateConfig()
    sc = get_scenario(scenario)
    world = world or World()
    nodes = bench_nodes(sc, world)
    requests = draw_bench_requests(sc, n, seed)
    truth = world.pairs(requests, nodes)
    capacity = [
        node_capacity(truth, j, nodes[j], world.speeds(nodes[j])) for j in range(len(nodes))
    ]
    contexts = node_contexts(nodes, world, truth, requests)
    prompts = np.array([r.prompt_tokens for r in requests], dtype=np.int64)
    rng = np.random.default_rng([seed, STATE_STREAM])
    rows: list[dict[str, Any]] = []
    for i, request in enumerate(requests):
        for ctx in contexts:
            draw = draw_pair_load(rng, n, i, ctx.node, capacity[ctx.j], cfg)
            for engine in engines:
                state, parts = serve_target(ctx, engine, draw, i, requests, prompts, cfg)
                rows.append(_row(i, request, ctx, engine, draw, state, parts, cfg))
        if progress is not None:
            progress(i + 1, n)
    table = pd.DataFrame(rows)[[name for name, _, _ in STATE_COLUMNS]]
    return StateBenchData(
        table=table,
        seed=seed,
        n_requests=n,
        nodes=tuple(nodes),
        engines=tuple(engines),
        scenario=sc.name,
        world_config=asdict(world.config),
        config=cfg,
        version=VERSION,
        capacity_rps=tuple(float(c) for c in capacity),
    )


def _row(
    k: int,
    request: Request,
    ctx: NodeContext,
    engine: str,
    draw: PairBackground,
    state: NodeState,
    parts: Mapping[str, float],
    cfg: StateConfig,
) -> dict[str, Any]:
    """The table row of request ``k`` on ``ctx``'s node under ``engine``."""
    node, j = ctx.node, ctx.j
    conc = int(node.max_concurrency or 1)
    return {
        "request": request.id,
        "split": split_of(request.id),
        "node": node.id,
        "engine": engine,
        "max_batched_tokens": ctx.budget,
        "task": request.task,
        "prompt": request.prompt or "",
        "prompt_tokens": request.prompt_tokens,
        "n_images": len(request.images),
        "upload_bytes": request.upload_bytes,
        "max_output_tokens": request.max_output_tokens,
        "tier": node.tier,
        "model": node.model,
        "device": node.device,
        "max_concurrency": conc,
        "memory_gb": math.inf if node.memory_gb is None else float(node.memory_gb),
        "image_tokens": int(ctx.truth.image_tokens[k, j]),
        "bandwidth_mbps": draw.bandwidth_mbps,
        "rtt_ms": draw.rtt_ms,
        "window_s": cfg.window_s,
        **_state_columns(state),
        "load_level": load_level(state, conc),
        **parts,
        "output_tokens": int(ctx.truth.output_tokens[k, j]),
        "utilisation": draw.utilisation,
    }


# --------------------------------------------------------------------------------------------
# files and summary
# --------------------------------------------------------------------------------------------
_STRING_COLUMNS = (
    "request", "split", "node", "engine", "task", "prompt", "tier", "model", "device",
    "state_json", "load_level",
)  # fmt: skip


def write_state_bench_data(data: StateBenchData, out_dir: Path | str) -> list[Path]:
    """Write ``bench-state.csv.gz`` (gzip with mtime 0: byte-reproducible) and
    ``meta-state.json`` (with the table's SHA-256) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path = out_dir / STATE_TABLE_FILE
    data.table.to_csv(
        table_path, index=False, compression={"method": "gzip", "mtime": 0}, lineterminator="\n"
    )
    meta = data.meta()
    meta["files"] = {
        STATE_TABLE_FILE: {"sha256": hashlib.sha256(table_path.read_bytes()).hexdigest()}
    }
    meta_path = out_dir / STATE_META_FILE
    meta_path.write_text(json.dumps(meta, indent=2, allow_nan=False, default=str) + "\n")
    return [table_path, meta_path]


def read_state_table(path: Path | str) -> pd.DataFrame:
    """Read a written ``bench-state.csv.gz`` (or its directory) back."""
    path = Path(path)
    if path.is_dir():
        path = path / STATE_TABLE_FILE
    return pd.read_csv(
        path, keep_default_na=False, na_values=[], dtype=dict.fromkeys(_STRING_COLUMNS, str)
    )


def state_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Rows and median latency and parts by engine and load level."""
    parts = ["latency_s", "queue_s", "prefill_s", "decode_s"]
    grouped = table.groupby(["engine", "load_level"])
    out = grouped[parts].median()
    out.insert(0, "rows", grouped.size())
    return out
