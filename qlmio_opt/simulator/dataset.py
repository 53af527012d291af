"""The benchmark dataset: every request measured on every node, under a recorded random load.

This is the analogue of the QLMIO paper's MIOBench: a table with one row per (request, node) pair
that learned quality and latency predictors train and are evaluated on. Like MIOBench it runs
*every* request on *every* node; unlike MIOBench the measurements come from the simulator's
ground-truth :class:`~qlmio_opt.simulator.world.World`, not from real hardware.

**Requests.** Bodies are drawn exactly as the window generator draws them
(:func:`qlmio_opt.domain.scenarios.draws.draw_requests`): TextVQA prompts and task labels (plus the
scenario's synthetic captioning share), ServeGen Qwen-VL shapes (image count, tokens per image,
text tokens, output allowance), images sized by Qwen's 28-px rule, JPEG bytes from a lognormal
bytes-per-pixel. They are drawn in chunks of :data:`CHUNK` requests, each chunk from its own
random stream and its own 10-minute window of ServeGen's day, so a large dataset spans the day's
mix. Request ``i`` of seed ``s`` has the id ``mb<s>-<i:06d>``; the world keys every hidden
draw (difficulty, output length, completion) by that id, so ids never collide with a replay's.

**Nodes.** One node per distinct (device, model) pair of the scenario's ``edge_options`` and
``cloud_options`` (14 for ``default``), with the first listed ``max_concurrency`` of its option
and the device's free memory for the model (cloud nodes: unbounded).

**Load.** Each (request, node) pair is measured under its own random load so that predictors can
learn load effects. From a generator seeded by ``(seed, 0x4C4F4144)``, the pair draws a number of
background requests ``b`` uniform in ``0 .. b_max`` of its node, taken (with replacement) from
the *other* requests of the dataset, arriving uniformly in the :attr:`LoadConfig.horizon_s`
(5) seconds before the target request. ``b_max = min(2 * max_concurrency, ceil(1.5 * capacity *
horizon_s))``: twice the node's concurrency, but never an arrival rate beyond 1.5 times what the
node can serve, so loads span idle to moderately overloaded. ``capacity`` (requests/s) is
estimated from the dataset's own truth on the node: one request costs its mean stand-alone
vision + prefill time (prefills run one at a time) plus its mean output length times a decode
step of a full batch, divided by the batch size (the concurrency, or fewer if the node's memory
holds fewer mean KV reservations), so it varies a little with the dataset's size and seed; it is
recorded per node in ``meta.json``. Without the cap a 72B cloud node (concurrency 64, but about
3-5 requests per second, its prefills being serial) would see up to 128 arrivals in 5 s, five to
nine times what it serves. The node is simulated with
:func:`~qlmio_opt.simulator.engine.serve_node` (FCFS admission under the concurrency and memory
limits, prefill-first scheduling, batched decode slowing with the batch's KV reads), using the
background requests' own truth on that node. The target's times give::

    queue_s   = admit - arrival                (waiting for a slot or memory)
    compute_s = prefill_end - admit            (vision + prefill, incl. waiting for other prefills)
    decode_s  = finish - prefill_end           (batched decode, incl. pauses for other prefills)

**Upload.** The pair also draws a path bandwidth (log-uniform, 10-1000 Mbps to an edge node,
100-1000 Mbps to a cloud node), an RTT (uniform, 5-15 ms edge, 20-60 ms cloud) and ``k`` uniform
in ``0 .. 8`` concurrent uploads of other dataset requests on the same link, starting together
with the target's; :func:`~qlmio_opt.simulator.engine.share_link` (processor sharing) gives the
target's ``transfer_s``. ``latency_s = transfer_s + rtt_s + queue_s + compute_s + decode_s``.

**Outcome.** ``completed`` and ``output_tokens`` are the world's drawn truth; the world's
``completion_prob`` is kept as ``true_completion_prob``, hidden truth for evaluating predictors,
never a feature.

**Splits.** 70/15/15 train/validation/test by request (every node of a request in the same
split), from a BLAKE2b hash of the request id, so a request's split never depends on what else
is in the dataset.

The draws are deterministic: the same ``(n_requests, seed, scenario, world)`` gives an identical
table. :func:`write_bench_data` writes ``bench.csv.gz`` (byte-reproducible gzip), ``meta.json``
and a ``DATA_CARD.md``; :func:`read_bench_table` reads the table back.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from qlmio_opt.app.parallel import ParallelConfig, TaskResult, run_tasks
from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.frozen import FrozenDict
from qlmio_opt.domain.instance import Image, Node, Request
from qlmio_opt.domain.scenarios.default import CloudOption, EdgeOption, Scenario
from qlmio_opt.domain.scenarios.draws import draw_requests
from qlmio_opt.domain.scenarios.generate import get_scenario
from qlmio_opt.domain.version import VERSION
from qlmio_opt.simulator.engine import NodeJobs, serve_node, share_link
from qlmio_opt.simulator.speeds import TrueSpeeds
from qlmio_opt.simulator.world import PairTruth, World

__all__ = [
    "BENCH_FORMAT",
    "BENCH_VERSION",
    "CHUNK",
    "COLUMNS",
    "SPLITS",
    "BenchData",
    "Column",
    "LoadConfig",
    "bench_data",
    "bench_nodes",
    "draw_bench_requests",
    "node_capacity",
    "read_bench_table",
    "split_of",
    "write_bench_data",
]

BENCH_FORMAT = "qlmio-opt/bench-data"
BENCH_VERSION = 1
CHUNK = 200  # requests per request-drawing stream (and per ServeGen window of the day)
SPLITS: tuple[tuple[str, float], ...] = (("train", 0.70), ("validation", 0.15), ("test", 0.15))
TABLE_FILE = "bench.csv.gz"
CARD_FILE = "DATA_CARD.md"
META_FILE = "meta.json"

_REQUEST_STREAM = 0x52455153  # "REQS"
_LOAD_STREAM = 0x4C4F4144  # "LOAD"
_LINK_STREAM = 0x4C494E4B  # "LINK"


@dataclass(frozen=True)
class LoadConfig:
    """How the random load of each (request, node) pair is drawn (assumptions of this dataset).

    Attributes
    ----------
    background_factor, max_utilisation
        Background requests per pair are uniform in ``0 .. b_max`` with ``b_max =
        min(background_factor * max_concurrency, ceil(max_utilisation * capacity * horizon_s))``
        (at least 1), ``capacity`` the node's estimated requests per second.
    horizon_s
        Background requests arrive uniformly in this many seconds before the target.
    edge_mbps, cloud_mbps
        Log-uniform range of the path bandwidth to an edge / cloud node.
    edge_rtt_ms, cloud_rtt_ms
        Uniform range of the path round-trip time to an edge / cloud node.
    max_link_flows
        Concurrent uploads sharing the target's link are uniform in ``0 .. max_link_flows``.
    """

    background_factor: int = 2
    max_utilisation: float = 1.5
    horizon_s: float = 5.0
    edge_mbps: tuple[float, float] = (10.0, 1000.0)
    cloud_mbps: tuple[float, float] = (100.0, 1000.0)
    edge_rtt_ms: tuple[float, float] = (5.0, 15.0)
    cloud_rtt_ms: tuple[float, float] = (20.0, 60.0)
    max_link_flows: int = 8


@dataclass(frozen=True)
class Column:
    """One column of the table: name, unit, role and meaning.

    ``role`` is ``id`` (keys), ``request`` / ``node`` (features known before dispatch), ``load``
    (the recorded load, observable by a router), ``truth`` (measured outcome, a training target)
    or ``hidden`` (world truth for evaluation only, never a feature).
    """

    name: str
    unit: str
    role: str
    description: str


COLUMNS: tuple[Column, ...] = (
    Column("request", "", "id", "Request id (`mb<seed>-<index>`)."),
    Column("split", "", "id", "train / validation / test, by a hash of the request id."),
    Column("node", "", "id", "Node id (`<device>:<model>`)."),
    Column("task", "", "request", "Task family (ocr, document, chart, general-vqa, ...)."),
    Column("prompt", "", "request", "Full prompt text (question, OCR line, instruction)."),
    Column("prompt_tokens", "tokens", "request", "Text tokens of the prompt (images excluded)."),
    Column("n_images", "count", "request", "Images attached to the request."),
    Column("image_pixels", "pixels", "request", "Total pixels (width x height) of its images."),
    Column("image_bytes", "bytes", "request", "Encoded (JPEG) bytes of its images."),
    Column("upload_bytes", "bytes", "request", "Bytes uploaded: images + 4 bytes per token."),
    Column("max_output_tokens", "tokens", "request", "Output allowance of the request."),
    Column("tier", "", "node", "edge or cloud."),
    Column("model", "", "node", "Catalog key of the node's model."),
    Column("model_family", "", "node", "Model family (Qwen2-VL, InternVL2, ...)."),
    Column("params_b", "1e9 params", "node", "Total parameters of the model."),
    Column("weights_gb", "GB", "node", "bf16 weight memory of the model."),
    Column("device", "", "node", "Catalog key of the node's device."),
    Column("max_concurrency", "requests", "node", "Requests the node serves at once."),
    Column("memory_gb", "GB", "node", "Memory free for KV cache (inf = unbounded)."),
    Column("image_tokens", "tokens", "node", "LLM tokens the model spends on the images."),
    Column("bg_requests", "count", "load", "Background requests sent to the node (b)."),
    Column("bg_active", "count", "load", "Background requests still in the node at arrival."),
    Column("bg_input_tokens", "tokens", "load", "Prompt + image tokens of the background."),
    Column("bg_max_output_tokens", "tokens", "load", "Output allowances of the background."),
    Column("bandwidth_mbps", "Mbit/s", "load", "Path bandwidth to the node."),
    Column("rtt_ms", "ms", "load", "Path round-trip time to the node."),
    Column("link_flows", "count", "load", "Other uploads sharing the link (k)."),
    Column("link_bytes", "bytes", "load", "Bytes of those other uploads."),
    Column("transfer_s", "s", "truth", "Upload time on the shared link."),
    Column("rtt_s", "s", "truth", "Round-trip time (rtt_ms / 1000)."),
    Column("queue_s", "s", "truth", "Wait at the node before admission."),
    Column("compute_s", "s", "truth", "Vision + prefill, incl. waiting for other prefills."),
    Column("decode_s", "s", "truth", "Decoding, incl. batching and prefill pauses."),
    Column("latency_s", "s", "truth", "transfer_s + rtt_s + queue_s + compute_s + decode_s."),
    Column("output_tokens", "tokens", "truth", "Tokens the model generated."),
    Column("completed", "0/1", "truth", "1 if the model completed the task."),
    Column(
        "true_completion_prob",
        "probability",
        "hidden",
        "World's completion probability: hidden truth for evaluation only, never a feature.",
    ),
)


@dataclass(frozen=True, eq=False)
class BenchData:
    """A generated benchmark dataset.

    Attributes
    ----------
    table
        One row per (request, node); columns as in :data:`COLUMNS`. A pandas DataFrame cannot be
        made read-only: copy it (``table.copy()``) before changing it.
    seed
        Seed of the request and load draws.
    n_requests
        Requests (the table has ``n_requests * len(nodes)`` rows).
    nodes
        The nodes every request ran on.
    scenario
        Name of the scenario the requests and nodes come from.
    world_config
        The world's hidden parameters (``dataclasses.asdict`` of its ``WorldConfig``, read-only).
    load_config
        How the loads were drawn.
    version
        ``qlmio_opt.__version__`` that generated the data.
    capacity_rps, max_background
        Per node: estimated requests per second at full load, and ``b_max``.
    """

    table: pd.DataFrame
    seed: int
    n_requests: int
    nodes: tuple[Node, ...]
    scenario: str
    world_config: Mapping[str, Any]
    load_config: LoadConfig = field(default_factory=LoadConfig)
    version: str = ""
    capacity_rps: tuple[float, ...] = ()
    max_background: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "world_config", FrozenDict(self.world_config))

    def split_counts(self) -> dict[str, dict[str, int]]:
        """Requests and rows per split."""
        out = {}
        for name, _ in SPLITS:
            rows = self.table[self.table["split"] == name]
            out[name] = {"requests": int(rows["request"].nunique()), "rows": len(rows)}
        return out

    def meta(self) -> dict[str, Any]:
        """Metadata as written to ``meta.json``."""
        return {
            "format": BENCH_FORMAT,
            "version": BENCH_VERSION,
            "generator": f"qlmio_opt {self.version}",
            "seed": self.seed,
            "scenario": self.scenario,
            "n_requests": self.n_requests,
            "n_nodes": len(self.nodes),
            "n_rows": len(self.table),
            "splits": self.split_counts(),
            "nodes": [
                {
                    **node.model_dump(mode="json"),
                    "capacity_rps": cap,
                    "max_background": b_max,
                }
                for node, cap, b_max in zip(
                    self.nodes, self.capacity_rps, self.max_background, strict=True
                )
            ],
            "world_config": self.world_config,
            "load_config": asdict(self.load_config),
            "columns": [asdict(c) for c in COLUMNS],
        }


# --------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------
def split_of(request_id: str) -> str:
    """The split of a request: a pure function of its id (70/15/15 train/validation/test)."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, person=b"qlmio-split").digest()
    u = (int.from_bytes(digest, "little") + 0.5) * 2.0**-64
    edge = 0.0
    for name, share in SPLITS:
        edge += share
        if u < edge:
            return name
    return SPLITS[-1][0]


def bench_nodes(scenario: str | Scenario = "default", world: World | None = None) -> list[Node]:
    """One node per distinct (device, model) of the scenario's edge and cloud options.

    Each gets the first listed ``max_concurrency`` of its option; an edge node the device's free
    memory for the model, a cloud node unbounded memory (``memory_gb=None``).
    """
    sc = get_scenario(scenario)
    catalog = (world or World()).catalog
    tiers: tuple[tuple[Literal["edge", "cloud"], Sequence[EdgeOption | CloudOption]], ...] = (
        ("edge", sc.edge_options),
        ("cloud", sc.cloud_options),
    )
    nodes: dict[tuple[str, str], Node] = {}
    for tier, options in tiers:
        for opt in options:
            device = catalog.device(opt.device)
            for model_key, _ in opt.models:
                if (opt.device, model_key) in nodes:
                    continue
                free = device.free_memory_gb(catalog.model(model_key))
                if tier == "edge" and free <= 0:
                    continue  # the model does not fit on the device
                nodes[(opt.device, model_key)] = Node(
                    id=f"{opt.device}:{model_key}",
                    tier=tier,
                    model=model_key,
                    device=opt.device,
                    memory_gb=float(free) if tier == "edge" else None,
                    max_concurrency=int(opt.max_concurrency[0]),
                    modalities=("text", "image"),
                )
    return list(nodes.values())


def draw_bench_requests(sc: Scenario, n: int, seed: int) -> list[Request]:
    """The dataset's ``n`` requests for ``seed`` (``mb<seed>-<i:06d>``), drawn as the window
    generator draws them, in chunks of :data:`CHUNK`, each chunk from its own stream."""
    out: list[Request] = []
    for chunk, start in enumerate(range(0, n, CHUNK)):
        size = min(CHUNK, n - start)
        rng = np.random.default_rng(
            np.random.SeedSequence(seed, spawn_key=(_REQUEST_STREAM, chunk))
        )
        drawn = draw_requests(sc, rng, size, 1).requests
        for k, body in enumerate(drawn):
            out.append(
                Request(
                    id=f"mb{seed}-{start + k:06d}",
                    site="s0",
                    arrival_s=0.0,
                    task=body.task,
                    prompt=body.prompt,
                    prompt_tokens=body.prompt_tokens,
                    images=tuple(Image(**im) for im in body.images),
                    max_output_tokens=body.max_output_tokens,
                )
            )
    return out


def node_capacity(truth: PairTruth, j: int, node: Node, speed: TrueSpeeds) -> float:
    """Estimated requests per second node ``j`` serves at full load (see the module docstring)."""
    memory = math.inf if node.memory_gb is None else float(node.memory_gb)
    concurrency = int(node.max_concurrency or 1)
    reserve = float(truth.kv_reserve_gb[:, j].mean())
    if reserve > 0 and math.isfinite(memory):
        concurrency = max(1, min(concurrency, int(memory // reserve)))
    step = speed.step_s(concurrency * float(truth.kv_read_gb[:, j].mean()))
    per_request = float(truth.compute_s[:, j].mean())
    per_request += float(truth.output_tokens[:, j].mean()) * step / concurrency
    return 1.0 / per_request


def other_requests(rng: np.random.Generator, n: int, i: int, size: int) -> np.ndarray:
    """``size`` indices of requests other than ``i`` (with replacement)."""
    idx = rng.integers(0, n - 1, size=size)
    return idx + (idx >= i)


def check_bench_args(n_requests: Any, seed: Any) -> None:
    """Refuse a request count below 1 or a negative seed (ValueError)."""
    if isinstance(n_requests, bool) or not isinstance(n_requests, int | np.integer):
        raise ValueError(f"n_requests must be an integer >= 1; got {n_requests!r}")
    if n_requests < 1:
        raise ValueError(f"n_requests must be >= 1; got {n_requests}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}")


# --------------------------------------------------------------------------------------------
# drawing the pairs' loads
# --------------------------------------------------------------------------------------------
@dataclass
class _LinkDraws:
    """Per pair ``(R, N)``: path bandwidth and RTT and the uploads sharing the link; ``rng``
    goes on to draw which requests those uploads are."""

    rng: np.random.Generator
    bandwidth_mbps: np.ndarray
    rtt_ms: np.ndarray
    flows: np.ndarray


def _draw_links(n: int, nodes: Sequence[Node], load: LoadConfig, seed: int) -> _LinkDraws:
    """Bandwidth, RTT and competing uploads of every pair, vectorised over pairs."""
    m = len(nodes)
    is_edge = np.array([node.tier == "edge" for node in nodes])
    rng = np.random.default_rng([seed, _LINK_STREAM])
    lo_bw = np.where(is_edge, load.edge_mbps[0], load.cloud_mbps[0])
    hi_bw = np.where(is_edge, load.edge_mbps[1], load.cloud_mbps[1])
    bandwidth = np.exp(rng.uniform(np.log(lo_bw), np.log(hi_bw), (n, m)))
    lo_rtt = np.where(is_edge, load.edge_rtt_ms[0], load.cloud_rtt_ms[0])
    hi_rtt = np.where(is_edge, load.edge_rtt_ms[1], load.cloud_rtt_ms[1])
    rtt_ms = rng.uniform(lo_rtt, hi_rtt, (n, m))
    flows = rng.integers(0, load.max_link_flows + 1, (n, m)) if n > 1 else np.zeros((n, m))
    return _LinkDraws(rng, bandwidth, rtt_ms, flows.astype(np.int64))


@dataclass
class _BackgroundDraws:
    """Per node ``b_max`` and per pair the number of background requests; ``rng`` goes on to
    draw which requests they are and when they arrive."""

    rng: np.random.Generator
    max_background: np.ndarray
    background: np.ndarray


def _draw_background(
    n: int, nodes: Sequence[Node], capacity: np.ndarray, load: LoadConfig, seed: int
) -> _BackgroundDraws:
    """How many background requests each pair's node serves (module docstring: **Load**)."""
    m = len(nodes)
    rng = np.random.default_rng([seed, _LOAD_STREAM])
    conc = np.array([node.max_concurrency for node in nodes], dtype=np.int64)
    b_max = np.minimum(
        load.background_factor * conc,
        np.ceil(load.max_utilisation * capacity * load.horizon_s).astype(np.int64),
    )
    b_max = np.maximum(b_max, 1) if n > 1 else np.zeros(m, dtype=np.int64)
    bg = rng.integers(0, b_max + 1, (n, m)) if n > 1 else np.zeros((n, m))
    return _BackgroundDraws(rng, b_max, bg.astype(np.int64))


# --------------------------------------------------------------------------------------------
# measuring the pairs, block by block
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Server:
    concurrency: int
    memory_gb: float
    weights_gb: float
    decode_tok_s: float


def _servers(nodes: Sequence[Node], speeds: Sequence[TrueSpeeds]) -> tuple[_Server, ...]:
    return tuple(
        _Server(
            int(node.max_concurrency or 1),
            math.inf if node.memory_gb is None else float(node.memory_gb),
            speed.weights_gb,
            speed.decode_tok_s,
        )
        for node, speed in zip(nodes, speeds, strict=True)
    )


@dataclass(frozen=True)
class _Block:
    """Requests ``start ..`` on every node with their draws: all a worker needs to simulate.

    Pairs are request-major (``p = row * nodes + node``); pair ``p``'s uploads are
    ``upload_bits[link_bounds[p]:link_bounds[p + 1]]`` (the target first, then the uploads sharing
    its link) and its node jobs ``jobs_*[job_bounds[p]:job_bounds[p + 1]]`` (the background
    requests, then the target last).
    """

    start: int
    upload_bits: np.ndarray
    link_bounds: np.ndarray
    bandwidth_mbps: np.ndarray  # (rows, nodes)
    arrive_s: np.ndarray
    compute_s: np.ndarray
    tokens: np.ndarray
    kv_reserve_gb: np.ndarray
    kv_read_gb: np.ndarray
    job_bounds: np.ndarray
    horizon: float
    servers: tuple[_Server, ...]


@dataclass(frozen=True)
class _Measured:
    """Simulated times of a block (rows = requests, columns = nodes)."""

    transfer: np.ndarray
    queue: np.ndarray
    compute: np.ndarray
    decode: np.ndarray
    bg_active: np.ndarray

    @staticmethod
    def concat(parts: Sequence[_Measured]) -> _Measured:
        return _Measured(
            transfer=np.concatenate([p.transfer for p in parts]),
            queue=np.concatenate([p.queue for p in parts]),
            compute=np.concatenate([p.compute for p in parts]),
            decode=np.concatenate([p.decode for p in parts]),
            bg_active=np.concatenate([p.bg_active for p in parts]),
        )


@dataclass
class _PairDraws:
    """The dataset's random state; :meth:`block` draws the next block, in the serial order.

    The link and load generators are called pair by pair (request-major) exactly as one loop
    over every pair would call them, whatever the block size; the cheap sums (``link_bytes``,
    ``bg_input``, ``bg_out``) are filled in here, the simulation is left to
    :func:`_measure_block`.
    """

    links: _LinkDraws
    loads: _BackgroundDraws
    horizon: float
    upload: np.ndarray
    upload_bits: np.ndarray
    truth: PairTruth
    input_tokens: np.ndarray
    max_out: np.ndarray
    servers: tuple[_Server, ...]
    link_bytes: np.ndarray = field(init=False)
    bg_input: np.ndarray = field(init=False)
    bg_out: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        shape = self.links.flows.shape
        self.link_bytes = np.zeros(shape, dtype=np.int64)
        self.bg_input = np.zeros(shape, dtype=np.int64)
        self.bg_out = np.zeros(shape, dtype=np.int64)

    @property
    def n_requests(self) -> int:
        return int(self.links.flows.shape[0])

    def block(self, start: int, stop: int) -> _Block:
        n, m = self.links.flows.shape
        k = self.links.flows[start:stop].ravel()
        b = self.loads.background[start:stop].ravel()
        peers, background, arrive = [], [], []
        for p in range(len(k)):  # the only serial part: the generators' order
            peers.append(other_requests(self.links.rng, n, start + p // m, int(k[p])))
            background.append(other_requests(self.loads.rng, n, start + p // m, int(b[p])))
            arrive.append(self.loads.rng.uniform(0.0, self.horizon, int(b[p])))
        pair_i = np.repeat(np.arange(start, stop), m)
        pair_j = np.tile(np.arange(m), stop - start)
        peers_flat, bg_flat = np.concatenate(peers), np.concatenate(background)
        rows = slice(start, stop)
        self.link_bytes[rows] = _segment_sums(self.upload[peers_flat], k).reshape(-1, m)
        bg_j = np.repeat(pair_j, b)
        self.bg_input[rows] = _segment_sums(self.input_tokens[bg_flat, bg_j], b).reshape(-1, m)
        self.bg_out[rows] = _segment_sums(self.max_out[bg_flat], b).reshape(-1, m)
        uploads = _with_targets(self.upload_bits[peers_flat], k, self.upload_bits[pair_i], True)
        idx = _with_targets(bg_flat, b, pair_i, False)
        node = np.repeat(pair_j, b + 1)
        horizon = np.full(len(b), self.horizon)
        return _Block(
            start=start,
            upload_bits=uploads,
            link_bounds=np.concatenate([[0], np.cumsum(k + 1)]),
            bandwidth_mbps=self.links.bandwidth_mbps[rows],
            arrive_s=_with_targets(np.concatenate(arrive), b, horizon, False),
            compute_s=self.truth.compute_s[idx, node],
            tokens=self.truth.output_tokens[idx, node],
            kv_reserve_gb=self.truth.kv_reserve_gb[idx, node],
            kv_read_gb=self.truth.kv_read_gb[idx, node],
            job_bounds=np.concatenate([[0], np.cumsum(b + 1)]),
            horizon=self.horizon,
            servers=self.servers,
        )


def _segment_sums(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Sums of consecutive segments of ``values`` of the given lengths (exact for integers)."""
    cumulative = np.concatenate([np.zeros(1, dtype=values.dtype), np.cumsum(values)])
    ends = np.cumsum(lengths)
    return cumulative[ends] - cumulative[ends - lengths]


def _with_targets(
    values: np.ndarray, lengths: np.ndarray, targets: np.ndarray, first: bool
) -> np.ndarray:
    """Segments of ``values`` with one target each put first (or last)."""
    ends = np.cumsum(lengths + 1)
    at = ends - lengths - 1 if first else ends - 1
    out = np.empty(len(values) + len(lengths), dtype=np.result_type(values, targets))
    rest = np.ones(len(out), dtype=bool)
    rest[at] = False
    out[at] = targets
    out[rest] = values
    return out


def _measure_block(block: _Block, progress: Callable[[int], None] | None = None) -> _Measured:
    """Simulate every pair of a block; ``progress(row)`` after each request (row from 0)."""
    rows, m = block.bandwidth_mbps.shape
    transfer, queue, compute, decode = (np.empty((rows, m)) for _ in range(4))
    bg_active = np.zeros((rows, m), np.int64)
    horizon = block.horizon
    for r in range(rows):
        for j, server in enumerate(block.servers):
            p = r * m + j
            uploads = block.upload_bits[block.link_bounds[p] : block.link_bounds[p + 1]]
            transfer[r, j] = share_link(uploads, block.bandwidth_mbps[r, j] * 1e6, 0.0)[0]
            lo, hi = block.job_bounds[p], block.job_bounds[p + 1]
            times = serve_node(
                NodeJobs(
                    arrive_s=block.arrive_s[lo:hi],
                    compute_s=block.compute_s[lo:hi],
                    tokens=block.tokens[lo:hi],
                    kv_reserve_gb=block.kv_reserve_gb[lo:hi],
                    kv_read_gb=block.kv_read_gb[lo:hi],
                ),
                concurrency=server.concurrency,
                memory_gb=server.memory_gb,
                weights_gb=server.weights_gb,
                decode_tok_s=server.decode_tok_s,
            )
            b = hi - lo - 1  # the target is the block's last job
            queue[r, j] = times.admit_s[b] - horizon
            compute[r, j] = times.prefill_end_s[b] - times.admit_s[b]
            decode[r, j] = times.finish_s[b] - times.prefill_end_s[b]
            bg_active[r, j] = int(np.count_nonzero(times.finish_s[:b] > horizon))
        if progress is not None:
            progress(r)
    return _Measured(transfer, queue, compute, decode, bg_active)


def _measure_pairs(
    draws: _PairDraws,
    progress: Callable[[int, int], None] | None,
    parallel: ParallelConfig | None,
) -> _Measured:
    """Every pair's simulated times, block by block, here or in parallel workers."""
    n = draws.n_requests
    if parallel is None or parallel.serial:
        parts = []
        for start in range(0, n, CHUNK):
            block = draws.block(start, min(start + CHUNK, n))
            report = None if progress is None else _block_progress(progress, start, n)
            parts.append(_measure_block(block, report))
        return _Measured.concat(parts)
    size = max(1, min(CHUNK, -(-n // (4 * parallel.jobs))))
    starts = range(0, n, size)
    done = 0

    def finished(result: TaskResult[_Measured]) -> None:
        nonlocal done
        done += len(result.value.transfer) if result.value is not None else 0
        if progress is not None:
            progress(done, n)

    results = run_tasks(
        _measure_block,
        (draws.block(start, min(start + size, n)) for start in starts),
        labels=[f"requests {s}-{min(s + size, n) - 1}" for s in starts],
        config=parallel,
        on_result=finished,
    )
    parts = []
    for result in results:
        if not result.ok or result.value is None:
            raise RuntimeError(f"bench-data block {result.error}")
        parts.append(result.value)
    return _Measured.concat(parts)


def _block_progress(
    progress: Callable[[int, int], None], start: int, n: int
) -> Callable[[int], None]:
    """``progress(done, n)`` for the rows of the block starting at ``start``."""
    return lambda row: progress(start + row + 1, n)


# --------------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------------
def bench_data(
    n_requests: int,
    seed: int = 0,
    *,
    scenario: str | Scenario = "default",
    world: World | None = None,
    progress: Callable[[int, int], None] | None = None,
    load: LoadConfig | None = None,
    parallel: ParallelConfig | None = None,
) -> BenchData:
    """Generate the benchmark dataset (see the module docstring).

    Parameters
    ----------
    n_requests
        Requests to draw; each runs on every node.
    seed
        Seeds the request bodies and the loads (not the world: its truth is keyed by request id).
    scenario
        Scenario (name or object) whose request distribution and node options to use.
    world
        The ground truth; default ``World()`` (seed 0, the replay's default world).
    progress
        Called as ``progress(done, n_requests)`` after each request (in parallel: after each
        block of requests).
    load
        How the random loads are drawn; default :class:`LoadConfig`.
    parallel
        Simulate blocks of requests in parallel workers (:mod:`qlmio_opt.app.parallel`). Every
        random draw is still made here, in the serial order, so the table is identical to a serial
        run.

    Returns
    -------
    BenchData
        The table (``n_requests * len(nodes)`` rows) and its metadata.

    Raises
    ------
    ValueError
        If ``n_requests < 1``, ``seed < 0`` or the scenario is unknown.
    """
    check_bench_args(n_requests, seed)
    n, seed = int(n_requests), int(seed)
    sc = get_scenario(scenario)
    world = world or World()
    load = load or LoadConfig()
    nodes = bench_nodes(sc, world)
    requests = draw_bench_requests(sc, n, seed)
    truth = world.pairs(requests, nodes)
    speeds = [world.speeds(node) for node in nodes]
    links = _draw_links(n, nodes, load, seed)
    capacity = np.array([node_capacity(truth, j, nodes[j], speeds[j]) for j in range(len(nodes))])
    loads = _draw_background(n, nodes, capacity, load, seed)
    # every pair: drawn here in order, simulated in blocks (in parallel if asked)
    upload = np.array([r.upload_bytes for r in requests], dtype=np.int64)
    prompt_tokens = np.array([r.prompt_tokens for r in requests], dtype=np.int64)
    draws = _PairDraws(
        links=links,
        loads=loads,
        horizon=float(load.horizon_s),
        upload=upload,
        upload_bits=8.0 * upload,
        truth=truth,
        input_tokens=prompt_tokens[:, None] + truth.image_tokens,  # (R, N)
        max_out=np.array([r.max_output_tokens for r in requests], dtype=np.int64),
        servers=_servers(nodes, speeds),
    )
    measured = _measure_pairs(draws, progress, parallel)
    table = _table(requests, nodes, world.catalog, truth, _measured_columns(draws, measured))
    return BenchData(
        table=table,
        seed=seed,
        n_requests=n,
        nodes=tuple(nodes),
        scenario=sc.name,
        world_config=asdict(world.config),
        load_config=load,
        version=VERSION,
        capacity_rps=tuple(float(c) for c in capacity),
        max_background=tuple(int(b) for b in loads.max_background),
    )


def _measured_columns(draws: _PairDraws, measured: _Measured) -> dict[str, np.ndarray]:
    """The ``load`` and ``truth`` columns of :data:`COLUMNS` that the measurement gives."""
    rtt_s = draws.links.rtt_ms / 1000.0
    latency = measured.transfer + rtt_s + measured.queue + measured.compute + measured.decode
    return {
        "bg_requests": draws.loads.background,
        "bg_active": measured.bg_active,
        "bg_input_tokens": draws.bg_input,
        "bg_max_output_tokens": draws.bg_out,
        "bandwidth_mbps": draws.links.bandwidth_mbps,
        "rtt_ms": draws.links.rtt_ms,
        "link_flows": draws.links.flows,
        "link_bytes": draws.link_bytes,
        "transfer_s": measured.transfer,
        "rtt_s": rtt_s,
        "queue_s": measured.queue,
        "compute_s": measured.compute,
        "decode_s": measured.decode,
        "latency_s": latency,
    }


def _table(
    requests: Sequence[Request],
    nodes: Sequence[Node],
    catalog: Catalog,
    truth: PairTruth,
    columns: Mapping[str, np.ndarray],
) -> pd.DataFrame:
    """Assemble the long table (request-major: all nodes of request 0, then request 1, ...)."""
    n, m = len(requests), len(nodes)

    def per_request(values: list[Any], dtype: Any = None) -> np.ndarray:
        return np.repeat(np.asarray(values, dtype=dtype), m)

    def per_node(values: list[Any], dtype: Any = None) -> np.ndarray:
        return np.tile(np.asarray(values, dtype=dtype), n)

    models = [catalog.model(node.model) for node in nodes]
    data: dict[str, Any] = {
        "request": per_request([r.id for r in requests], object),
        "split": per_request([split_of(r.id) for r in requests], object),
        "node": per_node([node.id for node in nodes], object),
        "task": per_request([r.task for r in requests], object),
        "prompt": per_request([r.prompt or "" for r in requests], object),
        "prompt_tokens": per_request([r.prompt_tokens for r in requests], np.int64),
        "n_images": per_request([len(r.images) for r in requests], np.int64),
        "image_pixels": per_request(
            [sum(im.width * im.height for im in r.images) for r in requests], np.int64
        ),
        "image_bytes": per_request([sum(im.bytes for im in r.images) for r in requests], np.int64),
        "upload_bytes": per_request([r.upload_bytes for r in requests], np.int64),
        "max_output_tokens": per_request([r.max_output_tokens for r in requests], np.int64),
        "tier": per_node([node.tier for node in nodes], object),
        "model": per_node([node.model for node in nodes], object),
        "model_family": per_node([mo.family for mo in models], object),
        "params_b": per_node([mo.params_b for mo in models], float),
        "weights_gb": per_node([mo.weights_gb for mo in models], float),
        "device": per_node([node.device for node in nodes], object),
        "max_concurrency": per_node([node.max_concurrency for node in nodes], np.int64),
        "memory_gb": per_node(
            [math.inf if node.memory_gb is None else node.memory_gb for node in nodes], float
        ),
        "image_tokens": truth.image_tokens.astype(np.int64).ravel(),
    }
    for name, values in columns.items():
        data[name] = np.asarray(values).ravel()
    data["output_tokens"] = truth.output_tokens.astype(np.int64).ravel()
    data["completed"] = truth.completed.astype(np.int64).ravel()
    data["true_completion_prob"] = truth.completion_prob.ravel()
    table = pd.DataFrame(data)
    return table[[c.name for c in COLUMNS]]


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------
_STRING_COLUMNS = ("request", "split", "node", "task", "prompt", "tier", "model", "model_family")


def read_bench_table(path: Path | str) -> pd.DataFrame:
    """Read a written ``bench.csv.gz`` (or its directory) back into the table."""
    path = Path(path)
    if path.is_dir():
        path = path / TABLE_FILE
    return pd.read_csv(
        path,
        keep_default_na=False,
        na_values=[],
        dtype={name: str for name in (*_STRING_COLUMNS, "device")},
    )


def write_bench_data(data: BenchData, out_dir: Path) -> list[Path]:
    """Write ``bench.csv.gz``, ``DATA_CARD.md`` and ``meta.json`` into ``out_dir``.

    The gzip is written with ``mtime=0``, so the same data gives byte-identical files.

    Returns
    -------
    list of Path
        The written files, in that order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path = out_dir / TABLE_FILE
    data.table.to_csv(
        table_path, index=False, compression={"method": "gzip", "mtime": 0}, lineterminator="\n"
    )
    meta = data.meta()
    meta["files"] = {
        TABLE_FILE: {"sha256": hashlib.sha256(table_path.read_bytes()).hexdigest()},
    }
    card_path = out_dir / CARD_FILE
    card_path.write_text(_data_card(data, meta), encoding="utf-8")
    meta_path = out_dir / META_FILE
    meta_path.write_text(json.dumps(meta, indent=2, allow_nan=False, default=str) + "\n")
    return [table_path, card_path, meta_path]


def _data_card(data: BenchData, meta: Mapping[str, Any]) -> str:
    """``DATA_CARD.md``: how the data was made, its nodes, splits and columns, a summary, its
    files, sources and caveats."""
    sections = [
        _CARD_INTRO,
        _card_generation(data, meta),
        _card_nodes(data),
        _card_splits(meta),
        _card_columns(),
        _card_summary(data.table),
        _CARD_FILES,
        _CARD_SOURCES,
        _CARD_CAVEATS,
    ]
    return "\n".join(line for section in sections for line in section)


_CARD_INTRO = [
    "# qlmio-opt benchmark dataset (MIOBench analogue)",
    "",
    "One row per (request, node): every request was run on every node, each pair under its "
    "own random but recorded load, as MIOBench was collected on real hardware. Here the "
    "measurements come from the simulator's ground-truth world (`qlmio_opt.simulator.world`), "
    "so the dataset is **synthetic**. It is what the learned quality and latency predictors "
    "train on (`train`), tune on (`validation`) and are scored on (`test`).",
    "",
]


def _card_generation(data: BenchData, meta: Mapping[str, Any]) -> list[str]:
    lc = data.load_config
    return [
        "## How it was generated",
        "",
        f"- Generator: `qlmio_opt.simulator.dataset.bench_data` ({meta['generator']}), "
        f"format `{BENCH_FORMAT}` version {BENCH_VERSION}.",
        f"- Seed {data.seed}, scenario `{data.scenario}`, {data.n_requests:,} requests x "
        f"{len(data.nodes)} nodes = {len(data.table):,} rows.",
        "- World: " + ", ".join(f"`{k}={v}`" for k, v in data.world_config.items()) + ".",
        "- Requests: TextVQA prompts and task labels (plus the scenario's synthetic captioning "
        "share), ServeGen Qwen-VL shapes (image count, tokens per image, text tokens, output "
        f"allowance); drawn in chunks of {CHUNK}, each from its own 10-minute window of "
        "ServeGen's day.",
        "- Node load: b background requests, uniform in 0..b max with b max = "
        f"min({lc.background_factor} x max_concurrency, ceil({lc.max_utilisation:g} x capacity "
        f"x {lc.horizon_s:g} s)), drawn with replacement from the other requests of the dataset, "
        f"arriving uniformly in the {lc.horizon_s:g} s before the target; the node is simulated "
        "with `qlmio_opt.simulator.engine.serve_node` (FCFS admission under concurrency and "
        "memory, prefill-first, batched decode).",
        f"- Upload: path bandwidth log-uniform {lc.edge_mbps[0]:g}-{lc.edge_mbps[1]:g} Mbit/s "
        f"(edge) / {lc.cloud_mbps[0]:g}-{lc.cloud_mbps[1]:g} Mbit/s (cloud), RTT uniform "
        f"{lc.edge_rtt_ms[0]:g}-{lc.edge_rtt_ms[1]:g} ms (edge) / "
        f"{lc.cloud_rtt_ms[0]:g}-{lc.cloud_rtt_ms[1]:g} ms (cloud), k uniform in "
        f"0..{lc.max_link_flows} other uploads sharing the link (processor sharing, "
        "`share_link`).",
        "- Regenerate: `qlmio-opt bench-data --requests "
        f"{data.n_requests} --seed {data.seed} --out DIR` (identical table).",
        "",
    ]


def _card_nodes(data: BenchData) -> list[str]:
    lines = [
        "## Nodes",
        "",
        "Capacity: estimated requests/s at full load; b max: most background requests per pair.",
        "",
        "| node | tier | device | model | family | params (B) | concurrency | memory (GB) "
        "| capacity (req/s) | b max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    first = data.table.drop_duplicates("node").set_index("node")
    for node, cap, b_max in zip(data.nodes, data.capacity_rps, data.max_background, strict=True):
        row = first.loc[node.id]
        mem = "unbounded" if node.memory_gb is None else f"{node.memory_gb:.1f}"
        lines.append(
            f"| `{node.id}` | {node.tier} | {node.device} | {node.model} | "
            f"{row['model_family']} | {row['params_b']:g} | {node.max_concurrency} | {mem} "
            f"| {cap:.2f} | {b_max} |"
        )
    return [*lines, ""]


def _card_splits(meta: Mapping[str, Any]) -> list[str]:
    splits = meta["splits"]
    lines = [
        "## Splits",
        "",
        "By request (all nodes of a request in one split), from a BLAKE2b hash of the request id: "
        "70 / 15 / 15 % in expectation, stable whatever else is in the dataset.",
        "",
        "| split | requests | rows |",
        "|---|---|---|",
    ]
    for name, _ in SPLITS:
        lines.append(f"| {name} | {splits[name]['requests']:,} | {splits[name]['rows']:,} |")
    return [*lines, ""]


def _card_columns() -> list[str]:
    return [
        "## Columns",
        "",
        "Roles: `id` keys; `request` and `node` features known before dispatch; `load` the "
        "recorded load (observable by a router); `truth` measured outcomes (training targets); "
        "`hidden` world truth for **evaluation only, never a feature**.",
        "",
        "| column | unit | role | meaning |",
        "|---|---|---|---|",
        *(f"| `{c.name}` | {c.unit} | {c.role} | {c.description} |" for c in COLUMNS),
        "",
    ]


def _card_summary(table: pd.DataFrame) -> list[str]:
    done = table.groupby("task")["completed"].mean()
    latency = table.groupby("tier")["latency_s"].median()
    return [
        "## Summary",
        "",
        "Completion rate by task: "
        + ", ".join(f"{task} {rate:.2f}" for task, rate in done.items())
        + ". Median latency by tier: "
        + ", ".join(f"{tier} {value:.2f} s" for tier, value in latency.items())
        + ".",
        "",
    ]


_CARD_FILES = [
    "## Files",
    "",
    f"- `{TABLE_FILE}`: the table, CSV (comma, UTF-8, header row, `\\n` line ends, prompts "
    "quoted), gzip with mtime 0; floats at full precision. Read it with "
    "`qlmio_opt.simulator.dataset.read_bench_table` or `pandas.read_csv(path, "
    "keep_default_na=False)`; `memory_gb` is `inf` for cloud nodes.",
    f"- `{META_FILE}`: the same metadata as JSON (seed, counts, nodes, world and load "
    "configuration, column dictionary, the table's SHA-256).",
    "",
]

_CARD_SOURCES = [
    "## Data sources and licences",
    "",
    "- **TextVQA** v0.5.1 validation questions (prompts, task labels by a keyword heuristic), "
    'as packaged by LLaVA: **CC BY 4.0**. Singh et al., "Towards VQA Models That Can '
    'Read", CVPR 2019; Liu et al., "Improved Baselines with Visual Instruction Tuning" '
    "(LLaVA-1.5, repository Apache-2.0). Images are not included; image sizes and bytes "
    "are synthetic.",
    "- **ServeGen** multimodal (mm-image) client distributions, Alibaba Cloud Model Studio: "
    '**Apache-2.0**. Xiang et al., "ServeGen: Workload Characterization and Generation of '
    'Large Language Model Serving in Production", arXiv:2505.09999.',
    "- Model accuracies and device speeds: the catalog "
    "(`qlmio_opt/domain/catalog/data/*.toml`), each value with its published source.",
    "- See `qlmio_opt/data/README.md` for the shipped copies and how they were derived. The "
    "generated table itself may be used under the same terms (attribute TextVQA and "
    "ServeGen).",
    "",
]

_CARD_CAVEATS = [
    "## Caveats",
    "",
    "- Every outcome is **synthetic truth from the world model**, not a measurement: "
    "completion follows an item-response model calibrated so that each model's mean "
    "completion per task matches its published benchmark accuracy; speeds are rooflines "
    "corrected to published serving-engine throughput figures. Predictors that do well "
    "here do well against this world, which is calibrated to, not identical with, real "
    "hardware.",
    "- Nodes running the same model share one `completed` draw and nearly the same "
    "`output_tokens` per request (the world draws them per model, not per device).",
    "- Loads are drawn independently per pair and do not come from a real arrival process; "
    "background requests are resampled from the dataset itself.",
    "- Prompt difficulty enters the hidden truth through the prompt text: a predictor may "
    "read the prompt, but `true_completion_prob` must never be used as a feature.",
    "- Task labels are a keyword heuristic over TextVQA questions; captioning requests are "
    "synthetic.",
    "",
]
