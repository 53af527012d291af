"""The random draws a scenario makes: a topology and a batch of requests, and their JSON.

Three users share them, so that a benchmark window, a replay's workload and the benchmark
dataset see requests and deployments drawn the same way:

- :func:`qlmio_opt.domain.scenarios.generate.generate_window` (the committed windows);
- :func:`qlmio_opt.simulator.workload.workload` (a replay's deployment and stream);
- :func:`qlmio_opt.simulator.dataset.bench_data` (the benchmark dataset).

Every draw takes its generator explicitly and calls it in a fixed order: the committed windows
are reproducible byte for byte only while that order is kept (``tests/domain/scenarios``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qlmio_opt.domain.frozen import FrozenDict
from qlmio_opt.domain.scenarios.default import Scenario

__all__ = [
    "CloudDraw",
    "EdgeDraw",
    "RequestDraw",
    "RequestDraws",
    "Topology",
    "cloud_node",
    "draw_requests",
    "draw_topology",
    "edge_node",
    "log_uniform",
    "log_uniform_array",
    "output_cap",
    "topology_links",
]

QWEN_PATCH_PX = 28
QWEN_MIN_TOKENS, QWEN_MAX_TOKENS = 4, 1280
MODALITIES = ("text", "image")
PROMPT_BYTES_PER_TOKEN = 4  # as in Request.upload_bytes
SERVEGEN_WINDOW_S = 600  # ServeGen publishes one client mix per 10-minute window of the day


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """One draw, log-uniform in ``[low, high]``."""
    return float(np.exp(rng.uniform(math.log(low), math.log(high))))


def log_uniform_array(rng: np.random.Generator, low: float, high: float, size: int) -> np.ndarray:
    """``size`` draws, log-uniform in ``[low, high]``."""
    return np.exp(rng.uniform(math.log(low), math.log(high), size))


def _pick_index(rng: np.random.Generator, weights: Sequence[float]) -> int:
    """One index drawn with probabilities proportional to ``weights``."""
    p = np.asarray(weights, dtype=float)
    return int(rng.choice(len(p), p=p / p.sum()))


def _pick_indices(rng: np.random.Generator, weights: Sequence[float], size: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(p), size=size, p=p / p.sum())


# --------------------------------------------------------------------------------------------
# topology
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EdgeDraw:
    """One drawn edge server, with its home site's index and its links' base figures."""

    id: str
    device: str
    model: str
    max_concurrency: int
    home_site: int
    mec_mbps: float  # home site -> this server (MEC breakout), before load scaling
    backhaul_mbps: float  # core -> this server
    backhaul_rtt_ms: float


@dataclass(frozen=True)
class CloudDraw:
    """One drawn cloud node and its WAN link's base figures."""

    id: str
    device: str
    model: str
    max_concurrency: int
    wan_base_mbps: float  # core -> this node, before load scaling
    wan_rtt_ms: float


@dataclass(frozen=True)
class Topology:
    """Sites (cells), edge servers and cloud nodes of one deployment; per-site lists by index."""

    sites: tuple[str, ...]
    kinds: tuple[str, ...]  # "5g" or "wifi" per site
    mec_rtt_ms: tuple[float, ...]  # site -> its edge servers
    core_rtt_ms: tuple[float, ...]  # site -> core
    uplink_mbps: tuple[float, ...]  # site -> core, before load scaling
    edges: tuple[EdgeDraw, ...]
    clouds: tuple[CloudDraw, ...]


def draw_topology(sc: Scenario, rng: np.random.Generator) -> Topology:
    """Sites, edge servers (each homed at a site, round-robin over a shuffled site order) and
    cloud nodes of ``sc``, all from ``rng``."""
    n_sites = int(rng.integers(sc.n_sites[0], sc.n_sites[1] + 1))
    n_edges = int(rng.integers(sc.n_edges[0], sc.n_edges[1] + 1))
    n_clouds = int(rng.integers(sc.n_clouds[0], sc.n_clouds[1] + 1))
    kind_names = [k for k, _ in sc.site_kinds]
    kind_idx = _pick_indices(rng, [w for _, w in sc.site_kinds], n_sites)
    kinds = tuple(kind_names[i] for i in kind_idx)
    mec_rtt_range = dict(sc.mec_rtt_ms)
    mec_rtt = tuple(float(rng.uniform(*mec_rtt_range[k])) for k in kinds)
    core_rtt = tuple(m + float(rng.uniform(*sc.core_extra_rtt_ms)) for m in mec_rtt)
    uplink = tuple(log_uniform(rng, *sc.cell_uplink_mbps) for _ in range(n_sites))
    home_order = rng.permutation(n_sites)
    edges = tuple(_draw_edge(sc, rng, j, int(home_order[j % n_sites])) for j in range(n_edges))
    clouds = tuple(_draw_cloud(sc, rng, c) for c in range(n_clouds))
    return Topology(
        sites=tuple(f"cell-{i}" for i in range(n_sites)),
        kinds=kinds,
        mec_rtt_ms=mec_rtt,
        core_rtt_ms=core_rtt,
        uplink_mbps=uplink,
        edges=edges,
        clouds=clouds,
    )


def _draw_edge(sc: Scenario, rng: np.random.Generator, j: int, home_site: int) -> EdgeDraw:
    option = sc.edge_options[_pick_index(rng, [o.weight for o in sc.edge_options])]
    model = option.models[_pick_index(rng, [w for _, w in option.models])][0]
    return EdgeDraw(
        id=f"edge-{j}",
        device=option.device,
        model=model,
        max_concurrency=int(rng.choice(option.max_concurrency)),
        home_site=home_site,
        mec_mbps=log_uniform(rng, *sc.mec_mbps),
        backhaul_mbps=float(rng.choice(sc.backhaul_mbps)),
        backhaul_rtt_ms=float(rng.uniform(*sc.backhaul_rtt_ms)),
    )


def _draw_cloud(sc: Scenario, rng: np.random.Generator, c: int) -> CloudDraw:
    option = sc.cloud_options[_pick_index(rng, [o.weight for o in sc.cloud_options])]
    model = option.models[_pick_index(rng, [w for _, w in option.models])][0]
    return CloudDraw(
        id=f"cloud-{c}",
        device=option.device,
        model=model,
        max_concurrency=int(rng.choice(option.max_concurrency)),
        wan_base_mbps=log_uniform(rng, *sc.wan_mbps),
        wan_rtt_ms=float(rng.uniform(*sc.wan_rtt_ms)),
    )


# --------------------------------------------------------------------------------------------
# topology -> instance JSON
# --------------------------------------------------------------------------------------------
def edge_node(edge: EdgeDraw, memory_gb: float | str, max_concurrency: int) -> dict[str, Any]:
    """The instance JSON of a drawn edge server, with the memory and concurrency given."""
    return {
        "id": edge.id,
        "tier": "edge",
        "model": edge.model,
        "device": edge.device,
        "memory_gb": memory_gb,
        "max_concurrency": max_concurrency,
        "modalities": list(MODALITIES),
    }


def cloud_node(cloud: CloudDraw) -> dict[str, Any]:
    """The instance JSON of a drawn cloud node (unbounded memory)."""
    return {
        "id": cloud.id,
        "tier": "cloud",
        "model": cloud.model,
        "device": cloud.device,
        "memory_gb": None,
        "max_concurrency": cloud.max_concurrency,
        "modalities": list(MODALITIES),
    }


def topology_links(
    topology: Topology,
    *,
    access_mbps: Callable[[float, int], float],
    backhaul_mbps: Callable[[float], float],
    wan_mbps: Sequence[float],
) -> list[dict[str, Any]]:
    """The instance JSON of every link: per site its edge servers' MEC links then its uplink to
    ``core``, then core -> each edge server, then core -> each cloud node (``wan-<c>``).

    ``access_mbps(base, site)`` gives a site's MEC or uplink bandwidth from its drawn base,
    ``backhaul_mbps(base)`` a core -> edge bandwidth, ``wan_mbps[c]`` cloud ``c``'s.
    """
    links = []
    for s, site in enumerate(topology.sites):
        for e in topology.edges:
            if e.home_site == s:
                mbps = access_mbps(e.mec_mbps, s)
                links.append(_link(f"{site}/{e.id}", site, e.id, mbps, topology.mec_rtt_ms[s]))
        mbps = access_mbps(topology.uplink_mbps[s], s)
        links.append(_link(f"{site}/core", site, "core", mbps, topology.core_rtt_ms[s]))
    for e in topology.edges:
        mbps = backhaul_mbps(e.backhaul_mbps)
        links.append(_link(f"core/{e.id}", "core", e.id, mbps, e.backhaul_rtt_ms))
    for c, cloud in enumerate(topology.clouds):
        links.append(_link(f"wan-{c}", "core", cloud.id, wan_mbps[c], cloud.wan_rtt_ms))
    return links


def _link(ident: str, source: str, target: str, mbps: float, rtt_ms: float) -> dict[str, Any]:
    return {
        "id": ident,
        "from": source,
        "to": target,
        "bandwidth_mbps": mbps,
        "rtt_ms": round(float(rtt_ms), 1),
    }


# --------------------------------------------------------------------------------------------
# requests
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestDraw:
    """One drawn request body (no id, site name or arrival time yet)."""

    site_idx: int
    task: str
    prompt: str
    prompt_tokens: int
    images: tuple[FrozenDict[str, int], ...]  # each {"width", "height", "bytes"}
    max_output_tokens: int

    @property
    def upload_bytes(self) -> int:
        """Bytes sent to a node: images plus the prompt (as ``Request.upload_bytes``)."""
        return sum(im["bytes"] for im in self.images) + PROMPT_BYTES_PER_TOKEN * self.prompt_tokens

    def images_json(self) -> list[dict[str, int]]:
        """The images as fresh instance JSON."""
        return [dict(im) for im in self.images]

    def body(self, ident: str, site: str, arrival_s: float | None = None) -> dict[str, Any]:
        """The request as instance JSON (``arrival_s`` left out when None), keys in the
        instance format's order."""
        out: dict[str, Any] = {"id": ident, "site": site}
        if arrival_s is not None:
            out["arrival_s"] = arrival_s
        out.update(
            task=self.task,
            prompt=self.prompt,
            prompt_tokens=self.prompt_tokens,
            images=self.images_json(),
            max_output_tokens=self.max_output_tokens,
        )
        return out


@dataclass(frozen=True)
class RequestDraws:
    """A batch of drawn requests and where in the day their ServeGen shapes come from."""

    requests: tuple[RequestDraw, ...]
    window_of_day_s: int
    n_caption: int  # requests turned into synthetic captioning requests


def draw_requests(sc: Scenario, rng: np.random.Generator, n: int, n_sites: int) -> RequestDraws:
    """``n`` request bodies of ``sc`` from ``rng``: TextVQA prompts (a share of them turned into
    captioning requests), ServeGen shapes of one 10-minute window of the day, a site each
    (Dirichlet site weights) and images sized by Qwen's 28-px rule."""
    texts, tasks, n_caption = _draw_prompts(sc, rng, n)
    shapes, window_of_day = _draw_shapes(rng, n)
    site_weights = rng.dirichlet(np.full(n_sites, 2.0))
    site_idx = rng.choice(n_sites, size=n, p=site_weights)
    per_image = np.concatenate(list(shapes["image_tokens"])) if n else np.zeros(0, dtype=np.int64)
    images = _draw_images(sc, rng, per_image)
    starts = np.concatenate([[0], np.cumsum(shapes["image_count"].to_numpy())])
    text_tokens = shapes["text_tokens"].to_numpy()
    output_tokens = shapes["output_tokens"].to_numpy()
    requests = []
    for i in range(n):
        prompt = str(texts[i])
        min_tokens = math.ceil(len(prompt) / sc.chars_per_token)
        requests.append(
            RequestDraw(
                site_idx=int(site_idx[i]),
                task=str(tasks[i]),
                prompt=prompt,
                prompt_tokens=max(int(text_tokens[i]), min_tokens),
                images=images[starts[i] : starts[i + 1]],
                max_output_tokens=output_cap(sc, int(output_tokens[i])),
            )
        )
    return RequestDraws(tuple(requests), window_of_day, n_caption)


def _draw_prompts(
    sc: Scenario, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Prompts and task labels; a ``caption_share`` of them become captioning requests that keep
    their OCR line."""
    from qlmio_opt.domain.traces import load_textvqa_prompts

    prompts = load_textvqa_prompts()
    rows = rng.choice(len(prompts), size=n, replace=n > len(prompts))
    texts = prompts["prompt"].to_numpy()[rows].astype(object)
    tasks = prompts["task"].to_numpy()[rows].astype(object)
    caption = rng.random(n) < sc.caption_share
    templates = rng.integers(0, len(sc.caption_prompts), n)
    for i in np.flatnonzero(caption):
        lines = texts[i].split("\n")
        ocr = [ln for ln in lines[1:] if ln.startswith("Reference OCR token:")]
        texts[i] = "\n".join([sc.caption_prompts[templates[i]], *ocr])
        tasks[i] = "captioning"
    return texts, tasks, int(caption.sum())


def _draw_shapes(rng: np.random.Generator, n: int) -> tuple[Any, int]:
    """ServeGen shapes of ``n`` requests from one 10-minute window of the day, and its start."""
    from qlmio_opt.domain.traces import load_servegen

    sampler = load_servegen()
    window_of_day = int(rng.integers(0, len(sampler.window_start_s))) * SERVEGEN_WINDOW_S
    return sampler.sample(rng, n, window_of_day_s=window_of_day), window_of_day


def _draw_images(
    sc: Scenario, rng: np.random.Generator, tokens: np.ndarray
) -> tuple[FrozenDict[str, int], ...]:
    """One image per entry of ``tokens``: sized so Qwen's rule gives about that many tokens, an
    aspect ratio from the scenario's mix, JPEG bytes from a lognormal bytes-per-pixel."""
    k = len(tokens)
    t = np.clip(tokens, QWEN_MIN_TOKENS, QWEN_MAX_TOKENS).astype(float)
    ratios = np.array([a for a, _ in sc.aspect_ratios])
    aspect = ratios[_pick_indices(rng, [w for _, w in sc.aspect_ratios], k)]
    area = t * QWEN_PATCH_PX**2 * np.exp(rng.normal(0.0, sc.pixels_jitter, k))
    height = np.maximum(QWEN_PATCH_PX, np.round(np.sqrt(area / aspect))).astype(int)
    width = np.maximum(QWEN_PATCH_PX, np.round(np.sqrt(area * aspect))).astype(int)
    bpp = np.clip(
        sc.bytes_per_pixel_median * np.exp(rng.normal(0.0, sc.bytes_per_pixel_sigma, k)),
        *sc.bytes_per_pixel_bounds,
    )
    nbytes = np.round(width * height * bpp).astype(int) + sc.image_header_bytes
    return tuple(
        FrozenDict({"width": int(w), "height": int(h), "bytes": int(b)})
        for w, h, b in zip(width, height, nbytes, strict=True)
    )


def output_cap(sc: Scenario, output_tokens: int) -> int:
    """A request's ``max_output_tokens``: the smallest value of the scenario's ladder at least
    ``output_cap_headroom`` times the sampled output length (the ladder's top if none is)."""
    need = math.ceil(sc.output_cap_headroom * max(1, output_tokens))
    for cap in sc.output_cap_ladder:
        if cap >= need:
            return cap
    return sc.output_cap_ladder[-1]
