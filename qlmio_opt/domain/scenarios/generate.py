"""Generate benchmark windows (instance dicts, format ``qlmio-opt/instance`` version 1).

Window ``k`` of a scenario depends only on ``(scenario, k, seed)``: its random streams come from
``numpy.random.SeedSequence(seed, spawn_key=(k,))`` (the same as ``SeedSequence(seed).spawn``'s
``k``-th child) and its size from a per-seed shuffle of a fixed log-spaced grid, never from how
many windows are generated. The scenario's name is not mixed into the seed, so scenarios that
differ only in capacity knobs see the same requests.

What is drawn, in order (``instances/README.md`` has the sources and the table of the result):

1. topology: sites (5G or Wi-Fi cells), edge servers with a home site, cloud nodes, links;
2. requests: TextVQA prompts and task labels (plus a synthetic captioning share), ServeGen
   Qwen-VL shapes (image count, tokens per image, text and output tokens) for one 10-minute
   window of the day, images sized so Qwen's 28-px rule gives about the sampled token count,
   JPEG bytes from a lognormal bytes-per-pixel;
3. load: one load factor scales the window length, access bandwidths, WAN bandwidth and edge
   memory against the window's demand;
4. arrivals from consecutive rows of the Azure LLM 2023 trace mapped into ``[0, window_s)``,
   per-request quality floors and deadlines, and the objective.

Steps 1 and 2 are :mod:`qlmio_opt.domain.scenarios.draws`, shared with the simulator's workload
and benchmark dataset.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qlmio_opt.domain.catalog import default_catalog
from qlmio_opt.domain.frozen import read_only
from qlmio_opt.domain.scenarios.default import Scenario
from qlmio_opt.domain.scenarios.draws import (
    PROMPT_BYTES_PER_TOKEN,
    CloudDraw,
    EdgeDraw,
    RequestDraw,
    RequestDraws,
    Topology,
    cloud_node,
    draw_requests,
    draw_topology,
    edge_node,
    log_uniform,
    log_uniform_array,
    topology_links,
)

__all__ = [
    "WindowLoad",
    "dumps_instance",
    "estimate_free_memory_gb",
    "estimate_image_tokens",
    "generate_window",
    "generate_windows",
    "get_scenario",
    "sized_window",
    "stats_table",
    "window_name",
    "window_size",
    "window_sizes",
    "window_stats",
    "write_windows",
]


def get_scenario(scenario: str | Scenario) -> Scenario:
    """Look a scenario up by name in :data:`qlmio_opt.domain.scenarios.SCENARIOS`."""
    if isinstance(scenario, Scenario):
        return scenario
    from qlmio_opt.domain.scenarios import SCENARIOS

    try:
        return SCENARIOS[scenario]
    except KeyError:
        known = ", ".join(sorted(SCENARIOS))
        raise ValueError(f"unknown scenario {scenario!r} (known: {known})") from None


def _sig(x: float, digits: int = 4) -> float:
    """Round to ``digits`` significant digits (returns a Python float)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{digits}g}")


def _window_streams(seed: int, index: int) -> list[np.random.Generator]:
    """Window ``index``'s four streams: topology, requests, load, the rest."""
    children = np.random.SeedSequence(seed, spawn_key=(index,)).spawn(4)
    return [np.random.default_rng(c) for c in children]


# --------------------------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------------------------
def _size_grid(sc: Scenario) -> np.ndarray:
    steps = np.arange(sc.size_grid) / max(sc.size_grid - 1, 1)
    return np.round(sc.size_min * (sc.size_max / sc.size_min) ** steps).astype(int)


def _size_permutation(sc: Scenario, seed: int, block: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x5153, block)))
    perm = rng.permutation(sc.size_grid)
    showcase = sc.showcase_index
    if block == 0 and showcase is not None and showcase < sc.size_grid:
        grid = _size_grid(sc)
        target = int(np.argmin(np.abs(np.log(grid / sc.showcase_size))))
        pos = int(np.flatnonzero(perm == target)[0])
        perm[pos], perm[showcase] = perm[showcase], perm[pos]
    return perm


def window_size(scenario: str | Scenario, index: int, seed: int = 0) -> int:
    """Number of requests of window ``index`` (cheap: no window is generated).

    Each block of ``size_grid`` consecutive windows takes every size of the log-spaced grid
    ``size_min .. size_max`` once, in a per-seed shuffled order; the showcase window (42) gets
    the grid size nearest ``showcase_size``.
    """
    sc = get_scenario(scenario)
    block, pos = divmod(int(index), sc.size_grid)
    return int(_size_grid(sc)[_size_permutation(sc, seed, block)[pos]])


def window_sizes(scenario: str | Scenario, count: int, seed: int = 0) -> list[int]:
    """:func:`window_size` of windows ``0 .. count-1``."""
    return [window_size(scenario, k, seed) for k in range(count)]


# --------------------------------------------------------------------------------------------
# load estimates (shared by the generator and the README's table)
# --------------------------------------------------------------------------------------------
def estimate_free_memory_gb(device: str, model: str) -> float:
    """Memory left for KV cache after weights: what ``"auto"`` resolves to (catalog)."""
    cat = default_catalog()
    return cat.device(device).free_memory_gb(cat.model(model))


def estimate_image_tokens(model: str, width: int, height: int) -> int:
    """LLM tokens of one image on ``model`` (the catalog's rule)."""
    return default_catalog().model(model).image_tokens.tokens(width, height)


def _kv_gb_per_token(model: str) -> float:
    return default_catalog().model(model).kv_bytes_per_token / 1e9


def _kv_tokens(
    prompt_tokens: int, images: Iterable[Mapping[str, int]], max_output_tokens: int, model: str
) -> int:
    """Tokens of KV cache a request reserves on ``model``: prompt, images and its allowance."""
    image_tokens = sum(estimate_image_tokens(model, im["width"], im["height"]) for im in images)
    return prompt_tokens + image_tokens + max_output_tokens


def _upload_bytes(req: Mapping[str, Any]) -> int:
    return sum(im["bytes"] for im in req["images"]) + PROMPT_BYTES_PER_TOKEN * req["prompt_tokens"]


def window_stats(instance: dict[str, Any]) -> dict[str, Any]:
    """Size and estimated demand/capacity ratios of one generated window.

    - ``uplink``: all request bytes / (all site->core capacity x window), i.e. if every request
      left its site through the core (all-cloud); ``uplink_max_site``: the busiest site's;
    - ``access``: all request bytes / (all site->core and site->edge capacity x window);
    - ``wan``: all request bytes / (all WAN capacity x window), i.e. if everything went to cloud;
    - ``memory``: KV demand (prompt + image + max output tokens) if the window were spread evenly
      over the edge servers / their memory (``"auto"`` = this generator's free-memory estimate);
    - ``req_per_edge_slot``: requests / total edge ``max_concurrency``.
    """
    nodes = instance["nodes"]
    reqs = instance["requests"]
    sites = instance["network"]["sites"]
    edges = [n for n in nodes if n["tier"] == "edge"]
    clouds = [n for n in nodes if n["tier"] == "cloud"]
    bits = _site_bits(reqs, sites)
    total_bits = sum(bits.values())
    access_bits, uplink_bits, wan_bits = _link_capacity_bits(instance, {n["id"] for n in clouds})
    demand_gb, memory_gb = _edge_memory_demand(edges, reqs)
    return {
        "name": instance["name"],
        "requests": len(reqs),
        "edges": len(edges),
        "clouds": len(clouds),
        "sites": len(sites),
        "window_s": instance["window_s"],
        "images": sum(len(r["images"]) for r in reqs),
        "image_mb": sum(im["bytes"] for r in reqs for im in r["images"]) / 1e6,
        "uplink": total_bits / sum(uplink_bits.values()),
        "uplink_max_site": max(bits[s] / uplink_bits[s] for s in sites),
        "access": total_bits / sum(access_bits.values()),
        "wan": total_bits / wan_bits,
        "memory": demand_gb / memory_gb,
        "req_per_edge_slot": len(reqs) / sum(n["max_concurrency"] for n in edges),
        "mode": instance["objective"]["mode"],
    }


def _site_bits(requests: Sequence[Mapping[str, Any]], sites: Sequence[str]) -> dict[str, float]:
    """Bits each site's requests upload."""
    bits = {s: 0.0 for s in sites}
    for r in requests:
        bits[r["site"]] += 8 * _upload_bytes(r)
    return bits


def _link_capacity_bits(
    instance: Mapping[str, Any], cloud_ids: set[str]
) -> tuple[dict[str, float], dict[str, float], float]:
    """Bits the links carry in the window: per site all its links and its uplink to the core
    alone, and all WAN links together."""
    sites = instance["network"]["sites"]
    access = {s: 0.0 for s in sites}
    uplink = {s: 0.0 for s in sites}
    wan = 0.0
    for link in instance["network"]["links"]:
        capacity_bits = link["bandwidth_mbps"] * 1e6 * instance["window_s"]
        if link["from"] in access:
            access[link["from"]] += capacity_bits
            if link["to"] == "core":
                uplink[link["from"]] += capacity_bits
        elif link["to"] in cloud_ids:
            wan += capacity_bits
    return access, uplink, wan


def _edge_memory_demand(
    edges: Sequence[Mapping[str, Any]], requests: Sequence[Mapping[str, Any]]
) -> tuple[float, float]:
    """KV demand (GB) of the window spread evenly over the edge servers, and their memory."""
    demand_gb = 0.0
    memory_gb = 0.0
    for n in edges:
        tokens = sum(
            _kv_tokens(r["prompt_tokens"], r["images"], r["max_output_tokens"], n["model"])
            for r in requests
        )
        demand_gb += tokens / len(edges) * _kv_gb_per_token(n["model"])
        mem = n["memory_gb"]
        memory_gb += estimate_free_memory_gb(n["device"], n["model"]) if mem == "auto" else mem
    return demand_gb, memory_gb


# --------------------------------------------------------------------------------------------
# the window
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowLoad:
    """The window's load factors, its length and how each site's access links are scaled."""

    rho: float  # the window's load factor
    rho_access: float  # target demand / capacity of the uplinks
    rho_memory: float  # ... of edge memory
    rho_wan: float  # ... of the WAN
    megabits: float  # everything the window's requests upload
    window_s: float
    site_scale: np.ndarray  # per site: factor on its drawn MEC and uplink bandwidths


def _site_megabits(requests: Sequence[RequestDraw], n_sites: int) -> np.ndarray:
    """Megabits the requests of each site upload."""
    site_mbit = np.zeros(n_sites)
    for r in requests:
        site_mbit[r.site_idx] += 8 * r.upload_bytes / 1e6
    return site_mbit


def _draw_load(
    sc: Scenario,
    index: int,
    topology: Topology,
    requests: Sequence[RequestDraw],
    rng: np.random.Generator,
) -> WindowLoad:
    """One load factor, jittered per resource; the window length that puts the uplinks at their
    target; each site's uplink scaled to its own jittered target (see ``Scenario``)."""
    if index == sc.showcase_index and sc.showcase_load is not None:
        rho = sc.showcase_load
    else:
        rho = log_uniform(rng, *sc.load_range)
    rho_access, rho_memory, rho_wan = rho * np.exp(rng.normal(0.0, sc.load_jitter, 3))
    site_mbit = _site_megabits(requests, len(topology.sites))
    mbit = float(site_mbit.sum())
    uplink_base = np.asarray(topology.uplink_mbps)
    shortest = log_uniform(rng, *sc.window_s_min)
    natural_s = mbit / (uplink_base.sum() * rho_access)
    window_s = _sig(float(np.clip(natural_s, shortest, sc.window_s_max)), 2)
    site_rho = rho_access * np.exp(rng.normal(0.0, sc.load_jitter, len(topology.sites)))
    site_scale = site_mbit / (uplink_base * window_s * site_rho)
    return WindowLoad(
        rho=rho,
        rho_access=float(rho_access),
        rho_memory=float(rho_memory),
        rho_wan=float(rho_wan),
        megabits=mbit,
        window_s=window_s,
        site_scale=read_only(site_scale),
    )


def _edge_memory_gb(
    sc: Scenario, edges: Sequence[EdgeDraw], requests: Sequence[RequestDraw], rho_memory: float
) -> list[float | str]:
    """Per edge server: memory so that 1/E of the window's KV demand fills ``rho_memory`` of it,
    ``"auto"`` (the device's free memory) when that is more than the device has."""
    out: list[float | str] = []
    for e in edges:
        tokens = sum(
            _kv_tokens(r.prompt_tokens, r.images, r.max_output_tokens, e.model) for r in requests
        )
        demand = tokens * _kv_gb_per_token(e.model) / len(edges)
        target = demand / rho_memory
        free = estimate_free_memory_gb(e.device, e.model)
        out.append("auto" if target >= free else _sig(max(sc.memory_floor_gb, target), 3))
    return out


def _cloud_wan_mbps(sc: Scenario, clouds: Sequence[CloudDraw], load: WindowLoad) -> list[float]:
    """WAN bandwidths that put the whole window at ``rho_wan``, split in proportion to the
    clouds' drawn bases."""
    wan_total = load.megabits / (load.window_s * load.rho_wan)
    wan_base = sum(c.wan_base_mbps for c in clouds)
    return [
        _sig(float(np.clip(wan_total * c.wan_base_mbps / wan_base, *sc.wan_mbps))) for c in clouds
    ]


def _draw_arrivals(
    sc: Scenario, n: int, window_s: float, rng: np.random.Generator
) -> tuple[list[float], int]:
    """Arrival times from ``n + 1`` consecutive rows of the Azure trace scaled into the window,
    and the first row's index."""
    from qlmio_opt.domain.traces import load_azure

    trace = load_azure(sc.arrival_trace)["arrival_s"].to_numpy()
    if n + 1 > len(trace):
        raise ValueError(f"window of {n} requests is longer than the {sc.arrival_trace} trace")
    offset = int(rng.integers(0, len(trace) - n))
    seg = trace[offset : offset + n + 1]
    span = float(seg[-1] - seg[0])
    rel = (seg[:n] - seg[0]) / span if span > 0 else np.arange(n) / max(n, 1)
    return [min(_sig(float(a) * window_s), window_s) for a in rel], offset


def _requests_json(
    sc: Scenario,
    requests: Sequence[RequestDraw],
    sites: Sequence[str],
    arrivals: Sequence[float],
    window_s: float,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """The instance JSON of the requests, with a drawn share of quality floors and deadlines."""
    n = len(requests)
    has_floor = rng.random(n) < sc.min_quality_share
    floors = rng.choice(sc.min_quality_values, n)
    has_deadline = rng.random(n) < sc.deadline_share
    slack = log_uniform_array(rng, *sc.deadline_slack_s, n)
    out = []
    for i, r in enumerate(requests):
        req = r.body(f"r{i:04d}", sites[r.site_idx], arrivals[i])
        if has_floor[i]:
            req["min_quality"] = float(floors[i])
        if has_deadline[i]:
            req["deadline_s"] = _sig(window_s - arrivals[i] + float(slack[i]))
        out.append(req)
    return out


def _objective(sc: Scenario, index: int, rng: np.random.Generator) -> dict[str, Any]:
    """Weighted (a drawn quality weight), or quality-floor in every third window."""
    quality_weight: float | None
    if index == sc.showcase_index:
        mode, quality_weight = "weighted", 10.0
    elif index % 3 == 1 and sc.quality_floor_share > 0:  # every third window
        mode, quality_weight = "quality_floor", None
    else:
        mode, quality_weight = "weighted", float(rng.choice(sc.quality_weights))
    objective: dict[str, Any] = {"mode": mode}
    if mode == "weighted":
        objective.update(latency_weight=sc.latency_weight, quality_weight=quality_weight)
    else:
        objective.update(quality_target=None, quality_tolerance=sc.quality_tolerance)
    objective.update(latency_scale_s=sc.latency_scale_s, deferral_penalty_s=sc.deferral_penalty_s)
    return objective


def _description(
    sc: Scenario,
    seed: int,
    index: int,
    topology: Topology,
    drawn: RequestDraws,
    load: WindowLoad,
    trace_rows: tuple[int, int],
) -> str:
    sites = topology.sites
    site_desc = ", ".join(f"{s} ({k})" for s, k in zip(sites, topology.kinds, strict=True))
    hh, mm = divmod(drawn.window_of_day_s // 60, 60)
    first, last = trace_rows
    return (
        f"Scenario '{sc.name}', seed {seed}, window {index}: {len(drawn.requests)} requests in "
        f"{load.window_s:g} s from {len(sites)} sites [{site_desc}], {len(topology.edges)} edge "
        f"+ {len(topology.clouds)} cloud nodes. Load factor {load.rho:.2f} (targets: uplink "
        f"{load.rho_access:.2f}, edge memory {load.rho_memory:.2f}, WAN {load.rho_wan:.2f}). "
        f"Prompts: TextVQA val (CC BY 4.0); {drawn.n_caption} captioning requests are a "
        f"synthetic mix. Shapes: ServeGen mm-image, clients active at {hh:02d}:{mm:02d}. "
        f"Arrivals: Azure LLM 2023 {sc.arrival_trace} trace rows {first}-{last} scaled into the "
        "window."
    )


def generate_window(
    scenario: str | Scenario = "default", index: int = 0, seed: int = 0
) -> dict[str, Any]:
    """Window ``index`` of ``scenario`` for ``seed``: a JSON-ready instance dict.

    The steps, each from its own random stream: the topology, the requests, the load (window
    length and capacities against the requests' demand), then arrivals, per-request floors and
    deadlines and the objective.
    """
    sc = get_scenario(scenario)
    index, seed = int(index), int(seed)
    if index < 0:
        raise ValueError("index must be >= 0")
    n = window_size(sc, index, seed)
    topo_rng, req_rng, load_rng, misc_rng = _window_streams(seed, index)

    topology = draw_topology(sc, topo_rng)
    drawn = draw_requests(sc, req_rng, n, len(topology.sites))
    load = _draw_load(sc, index, topology, drawn.requests, load_rng)
    edge_memory = _edge_memory_gb(sc, topology.edges, drawn.requests, load.rho_memory)
    arrivals, offset = _draw_arrivals(sc, n, load.window_s, misc_rng)
    requests = _requests_json(sc, drawn.requests, topology.sites, arrivals, load.window_s, misc_rng)
    objective = _objective(sc, index, misc_rng)

    def access_mbps(base_mbps: float, site: int) -> float:
        return _sig(float(np.clip(base_mbps * load.site_scale[site], *sc.access_mbps_bounds)))

    links = topology_links(
        topology,
        access_mbps=access_mbps,
        backhaul_mbps=lambda base_mbps: base_mbps,
        wan_mbps=_cloud_wan_mbps(sc, topology.clouds, load),
    )
    nodes = [
        edge_node(e, memory, e.max_concurrency)
        for e, memory in zip(topology.edges, edge_memory, strict=True)
    ] + [cloud_node(c) for c in topology.clouds]
    return {
        "format": "qlmio-opt/instance",
        "version": 1,
        "name": window_name(index),
        "description": _description(
            sc, seed, index, topology, drawn, load, (offset, offset + n - 1)
        ),
        "window_s": load.window_s,
        "objective": objective,
        "nodes": nodes,
        "network": {"sites": list(topology.sites), "links": links},
        "requests": requests,
    }


def generate_windows(
    scenario: str | Scenario = "default", count: int = 100, seed: int = 0
) -> list[dict[str, Any]]:
    """Windows ``0 .. count-1``; window k is the same whatever ``count`` is."""
    return [generate_window(scenario, k, seed) for k in range(int(count))]


def dumps_instance(instance: dict[str, Any]) -> str:
    """Compact but readable JSON: one line per node, link and request."""

    def one(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    def items(values: Sequence[Any], indent: str) -> str:
        if not values:
            return "[]"
        inner = f",\n{indent} ".join(one(v) for v in values)
        return f"[\n{indent} {inner}\n{indent}]"

    parts = []
    for key, value in instance.items():
        if key in ("nodes", "requests"):
            text = items(value, " ")
        elif key == "network":
            rest = {k: v for k, v in value.items() if k != "links"}
            inner = "".join(f"\n  {one(k)}: {one(v)}," for k, v in rest.items())
            text = f'{{{inner}\n  "links": {items(value["links"], "  ")}\n }}'
        else:
            text = one(value)
        parts.append(f" {one(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def window_name(index: int) -> str:
    """``window_000``, ``window_001``, ...: the name (and file stem) of generated window k."""
    return f"window_{index:03d}"


def write_windows(
    out_dir: str | Path, scenario: str | Scenario = "default", count: int = 100, seed: int = 0
) -> list[Path]:
    """Write ``window_000.json`` ... into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(int(count)):
        inst = generate_window(scenario, k, seed)
        path = out / f"{inst['name']}.json"
        path.write_text(dumps_instance(inst), encoding="utf-8")
        paths.append(path)
    return paths


def stats_table(instances: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`window_stats` for each window, then min / median / max."""
    rows = [window_stats(inst) for inst in instances]
    cols = [
        ("name", "window", "{}"),
        ("requests", "requests", "{:d}"),
        ("edges", "edge", "{:d}"),
        ("clouds", "cloud", "{:d}"),
        ("sites", "sites", "{:d}"),
        ("window_s", "window_s", "{:g}"),
        ("images", "images", "{:d}"),
        ("image_mb", "image MB", "{:.1f}"),
        ("uplink", "uplink", "{:.2f}"),
        ("uplink_max_site", "uplink max site", "{:.2f}"),
        ("access", "access", "{:.2f}"),
        ("wan", "WAN", "{:.2f}"),
        ("memory", "edge memory", "{:.2f}"),
        ("req_per_edge_slot", "req / edge slot", "{:.1f}"),
        ("mode", "objective", "{}"),
    ]
    lines = [
        "| " + " | ".join(title for _, title, _ in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in cols) + " |")
    for label, fn in (("min", np.min), ("median", np.median), ("max", np.max)):
        cells = []
        for key, _, fmt in cols:
            if key == "name":
                cells.append(f"**{label}**")
            elif key == "mode":
                cells.append("")
            else:
                value = fn([row[key] for row in rows])
                cells.append(fmt.format(value) if "d" not in fmt else f"{value:g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sized_window(
    requests: int, nodes: int, seed: int = 0, scenario: str = "default"
) -> dict[str, Any]:
    """A window of ``scenario`` with exactly ``requests`` requests and ``nodes`` nodes (1 cloud
    node up to 6 nodes, else 2), as an instance dict: the scaling benchmarks' and tests' windows,
    varying one thing at a time."""
    from qlmio_opt.domain.scenarios import SCENARIOS

    clouds = 1 if nodes <= 6 else 2
    sized = dataclasses.replace(
        SCENARIOS[scenario],
        name=f"sized-{requests}x{nodes}",
        size_min=requests,
        size_max=requests,
        size_grid=1,
        showcase_index=None,
        n_edges=(nodes - clouds, nodes - clouds),
        n_clouds=(clouds, clouds),
    )
    data = generate_window(sized, 0, seed)
    data["name"] = f"sized_{requests}x{nodes}_s{seed}"
    return data
