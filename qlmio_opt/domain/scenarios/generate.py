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
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qlmio_opt.domain.catalog import default_catalog
from qlmio_opt.domain.scenarios.default import Scenario

__all__ = [
    "dumps_instance",
    "generate_window",
    "generate_windows",
    "get_scenario",
    "stats_table",
    "window_size",
    "window_sizes",
    "window_stats",
    "write_windows",
]

QWEN_PATCH_PX = 28
QWEN_MIN_TOKENS, QWEN_MAX_TOKENS = 4, 1280
PROMPT_BYTES_PER_TOKEN = 4  # as in Request.upload_bytes


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


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _sig(x: float, digits: int = 4) -> float:
    """Round to ``digits`` significant digits (returns a Python float)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{digits}g}")


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size: Any = None) -> Any:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def _weighted_index(rng: np.random.Generator, weights: Sequence[float], size: Any = None) -> Any:
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(p), size=size, p=p / p.sum())


def _window_streams(seed: int, index: int) -> list[np.random.Generator]:
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


def _request_tokens(req: dict[str, Any], model: str) -> int:
    images = sum(estimate_image_tokens(model, im["width"], im["height"]) for im in req["images"])
    return req["prompt_tokens"] + images + req["max_output_tokens"]


def _upload_bytes(req: dict[str, Any]) -> int:
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
    links = instance["network"]["links"]
    sites = instance["network"]["sites"]
    window_s = instance["window_s"]
    edges = [n for n in nodes if n["tier"] == "edge"]
    clouds = [n for n in nodes if n["tier"] == "cloud"]
    bits = {s: 0.0 for s in sites}
    for r in reqs:
        bits[r["site"]] += 8 * _upload_bytes(r)
    total_bits = sum(bits.values())
    cap = {s: 0.0 for s in sites}
    uplink = {s: 0.0 for s in sites}
    wan = 0.0
    cloud_ids = {n["id"] for n in clouds}
    for link in links:
        capacity_bits = link["bandwidth_mbps"] * 1e6 * window_s
        if link["from"] in cap:
            cap[link["from"]] += capacity_bits
            if link["to"] == "core":
                uplink[link["from"]] += capacity_bits
        elif link["to"] in cloud_ids:
            wan += capacity_bits
    demand_gb = 0.0
    memory_gb = 0.0
    for n in edges:
        demand_gb += (
            sum(_request_tokens(r, n["model"]) for r in reqs)
            / len(edges)
            * _kv_gb_per_token(n["model"])
        )
        mem = n["memory_gb"]
        memory_gb += estimate_free_memory_gb(n["device"], n["model"]) if mem == "auto" else mem
    n_images = sum(len(r["images"]) for r in reqs)
    return {
        "name": instance["name"],
        "requests": len(reqs),
        "edges": len(edges),
        "clouds": len(clouds),
        "sites": len(sites),
        "window_s": window_s,
        "images": n_images,
        "image_mb": sum(im["bytes"] for r in reqs for im in r["images"]) / 1e6,
        "uplink": total_bits / sum(uplink.values()),
        "uplink_max_site": max(bits[s] / uplink[s] for s in sites),
        "access": total_bits / sum(cap.values()),
        "wan": total_bits / wan,
        "memory": demand_gb / memory_gb,
        "req_per_edge_slot": len(reqs) / sum(n["max_concurrency"] for n in edges),
        "mode": instance["objective"]["mode"],
    }


# --------------------------------------------------------------------------------------------
# the window
# --------------------------------------------------------------------------------------------
def _topology(sc: Scenario, rng: np.random.Generator) -> dict[str, Any]:
    n_sites = int(rng.integers(sc.n_sites[0], sc.n_sites[1] + 1))
    n_edges = int(rng.integers(sc.n_edges[0], sc.n_edges[1] + 1))
    n_clouds = int(rng.integers(sc.n_clouds[0], sc.n_clouds[1] + 1))
    kind_names = [k for k, _ in sc.site_kinds]
    kinds = [kind_names[i] for i in _weighted_index(rng, [w for _, w in sc.site_kinds], n_sites)]
    mec_rtt_range = dict(sc.mec_rtt_ms)
    sites = [f"cell-{i}" for i in range(n_sites)]
    mec_rtt = [float(rng.uniform(*mec_rtt_range[k])) for k in kinds]
    core_rtt = [m + float(rng.uniform(*sc.core_extra_rtt_ms)) for m in mec_rtt]
    uplink = [float(_log_uniform(rng, *sc.cell_uplink_mbps)) for _ in sites]

    order = rng.permutation(n_sites)
    edges = []
    for j in range(n_edges):
        opt = sc.edge_options[_weighted_index(rng, [o.weight for o in sc.edge_options])]
        model = opt.models[_weighted_index(rng, [w for _, w in opt.models])][0]
        edges.append(
            {
                "id": f"edge-{j}",
                "device": opt.device,
                "model": model,
                "max_concurrency": int(rng.choice(opt.max_concurrency)),
                "home": int(order[j % n_sites]),
                "mec_mbps": float(_log_uniform(rng, *sc.mec_mbps)),
                "backhaul_mbps": float(rng.choice(sc.backhaul_mbps)),
                "backhaul_rtt_ms": float(rng.uniform(*sc.backhaul_rtt_ms)),
            }
        )
    clouds = []
    for c in range(n_clouds):
        opt = sc.cloud_options[_weighted_index(rng, [o.weight for o in sc.cloud_options])]
        model = opt.models[_weighted_index(rng, [w for _, w in opt.models])][0]
        clouds.append(
            {
                "id": f"cloud-{c}",
                "device": opt.device,
                "model": model,
                "max_concurrency": int(rng.choice(opt.max_concurrency)),
                "wan_base_mbps": float(_log_uniform(rng, *sc.wan_mbps)),
                "wan_rtt_ms": float(rng.uniform(*sc.wan_rtt_ms)),
            }
        )
    return {
        "sites": sites,
        "kinds": kinds,
        "mec_rtt": mec_rtt,
        "core_rtt": core_rtt,
        "uplink": uplink,
        "edges": edges,
        "clouds": clouds,
    }


def _images(sc: Scenario, rng: np.random.Generator, tokens: np.ndarray) -> list[dict[str, int]]:
    k = len(tokens)
    t = np.clip(tokens, QWEN_MIN_TOKENS, QWEN_MAX_TOKENS).astype(float)
    ratios = np.array([a for a, _ in sc.aspect_ratios])
    aspect = ratios[_weighted_index(rng, [w for _, w in sc.aspect_ratios], k)]
    area = t * QWEN_PATCH_PX**2 * np.exp(rng.normal(0.0, sc.pixels_jitter, k))
    height = np.maximum(QWEN_PATCH_PX, np.round(np.sqrt(area / aspect))).astype(int)
    width = np.maximum(QWEN_PATCH_PX, np.round(np.sqrt(area * aspect))).astype(int)
    bpp = np.clip(
        sc.bytes_per_pixel_median * np.exp(rng.normal(0.0, sc.bytes_per_pixel_sigma, k)),
        *sc.bytes_per_pixel_bounds,
    )
    nbytes = np.round(width * height * bpp).astype(int) + sc.image_header_bytes
    return [
        {"width": int(w), "height": int(h), "bytes": int(b)}
        for w, h, b in zip(width, height, nbytes, strict=True)
    ]


def _output_cap(sc: Scenario, output_tokens: int) -> int:
    need = math.ceil(sc.output_cap_headroom * max(1, output_tokens))
    for cap in sc.output_cap_ladder:
        if cap >= need:
            return cap
    return sc.output_cap_ladder[-1]


def _requests(sc: Scenario, rng: np.random.Generator, n: int, n_sites: int) -> dict[str, Any]:
    from qlmio_opt.domain.traces import load_servegen, load_textvqa_prompts

    prompts = load_textvqa_prompts()
    rows = rng.choice(len(prompts), size=n, replace=n > len(prompts))
    texts = prompts["prompt"].to_numpy()[rows]
    tasks = prompts["task"].to_numpy()[rows].astype(object)
    caption = rng.random(n) < sc.caption_share
    templates = rng.integers(0, len(sc.caption_prompts), n)
    texts = texts.astype(object)
    for i in np.flatnonzero(caption):
        lines = texts[i].split("\n")
        ocr = [ln for ln in lines[1:] if ln.startswith("Reference OCR token:")]
        texts[i] = "\n".join([sc.caption_prompts[templates[i]], *ocr])
        tasks[i] = "captioning"

    sampler = load_servegen()
    window_of_day = int(rng.integers(0, len(sampler.window_start_s))) * 600
    shapes = sampler.sample(rng, n, window_of_day_s=window_of_day)
    site_weights = rng.dirichlet(np.full(n_sites, 2.0))
    site_idx = rng.choice(n_sites, size=n, p=site_weights)
    per_image = np.concatenate(list(shapes["image_tokens"])) if n else np.zeros(0, dtype=np.int64)
    images = _images(sc, rng, per_image)
    counts = shapes["image_count"].to_numpy()
    starts = np.concatenate([[0], np.cumsum(counts)])
    reqs = []
    for i in range(n):
        prompt = str(texts[i])
        min_tokens = math.ceil(len(prompt) / sc.chars_per_token)
        reqs.append(
            {
                "site_idx": int(site_idx[i]),
                "task": str(tasks[i]),
                "prompt": prompt,
                "prompt_tokens": max(int(shapes["text_tokens"].iat[i]), min_tokens),
                "images": images[starts[i] : starts[i + 1]],
                "max_output_tokens": _output_cap(sc, int(shapes["output_tokens"].iat[i])),
            }
        )
    return {
        "requests": reqs,
        "window_of_day_s": window_of_day,
        "n_caption": int(caption.sum()),
    }


def generate_window(scenario: str | Scenario = "default", index: int = 0, seed: int = 0) -> dict:
    """Window ``index`` of ``scenario`` for ``seed``: a JSON-ready instance dict."""
    from qlmio_opt.domain.traces import load_azure

    sc = get_scenario(scenario)
    index, seed = int(index), int(seed)
    if index < 0:
        raise ValueError("index must be >= 0")
    n = window_size(sc, index, seed)
    topo_rng, req_rng, load_rng, misc_rng = _window_streams(seed, index)

    topo = _topology(sc, topo_rng)
    sites, edges, clouds = topo["sites"], topo["edges"], topo["clouds"]
    drawn = _requests(sc, req_rng, n, len(sites))
    reqs = drawn["requests"]

    # -- load: window length and capacities against this window's demand -----------------------
    if index == sc.showcase_index and sc.showcase_load is not None:
        rho = sc.showcase_load
    else:
        rho = float(_log_uniform(load_rng, *sc.load_range))
    rho_access, rho_memory, rho_wan = rho * np.exp(load_rng.normal(0.0, sc.load_jitter, 3))
    site_mbit = np.zeros(len(sites))
    for r in reqs:
        site_mbit[r["site_idx"]] += 8 * _upload_bytes(r) / 1e6
    mbit = float(site_mbit.sum())
    uplink_base = np.asarray(topo["uplink"])
    shortest = float(_log_uniform(load_rng, *sc.window_s_min))
    natural_s = mbit / (uplink_base.sum() * rho_access)
    window_s = _sig(float(np.clip(natural_s, shortest, sc.window_s_max)), 2)
    # each site's uplink (and its MEC links) scaled to its own target ratio
    site_rho = rho_access * np.exp(load_rng.normal(0.0, sc.load_jitter, len(sites)))
    site_scale = site_mbit / (uplink_base * window_s * site_rho)

    def access(bw: float, site: int) -> float:
        return _sig(float(np.clip(bw * site_scale[site], *sc.access_mbps_bounds)))

    wan_total = mbit / (window_s * rho_wan)
    wan_base = sum(c["wan_base_mbps"] for c in clouds)
    for c in clouds:
        c["wan_mbps"] = _sig(
            float(np.clip(wan_total * c["wan_base_mbps"] / wan_base, *sc.wan_mbps))
        )
    for e in edges:
        kv_gb = _kv_gb_per_token(e["model"])
        demand = sum(_request_tokens(r, e["model"]) for r in reqs) * kv_gb / len(edges)
        target = demand / rho_memory
        free = estimate_free_memory_gb(e["device"], e["model"])
        e["memory_gb"] = "auto" if target >= free else _sig(max(sc.memory_floor_gb, target), 3)

    # -- arrivals, per-request constraints, objective -----------------------------------------
    trace = load_azure(sc.arrival_trace)["arrival_s"].to_numpy()
    if n + 1 > len(trace):
        raise ValueError(f"window of {n} requests is longer than the {sc.arrival_trace} trace")
    offset = int(misc_rng.integers(0, len(trace) - n))
    seg = trace[offset : offset + n + 1]
    span = float(seg[-1] - seg[0])
    rel = (seg[:n] - seg[0]) / span if span > 0 else np.arange(n) / max(n, 1)
    arrivals = [min(_sig(float(a) * window_s), window_s) for a in rel]
    has_floor = misc_rng.random(n) < sc.min_quality_share
    floors = misc_rng.choice(sc.min_quality_values, n)
    has_deadline = misc_rng.random(n) < sc.deadline_share
    slack = _log_uniform(misc_rng, *sc.deadline_slack_s, n)

    requests = []
    for i, r in enumerate(reqs):
        req: dict[str, Any] = {
            "id": f"r{i:04d}",
            "site": sites[r["site_idx"]],
            "arrival_s": arrivals[i],
            "task": r["task"],
            "prompt": r["prompt"],
            "prompt_tokens": r["prompt_tokens"],
            "images": r["images"],
            "max_output_tokens": r["max_output_tokens"],
        }
        if has_floor[i]:
            req["min_quality"] = float(floors[i])
        if has_deadline[i]:
            req["deadline_s"] = _sig(window_s - arrivals[i] + float(slack[i]))
        requests.append(req)

    if index == sc.showcase_index:
        mode, quality_weight = "weighted", 10.0
    elif index % 3 == 1 and sc.quality_floor_share > 0:  # every third window
        mode, quality_weight = "quality_floor", None
    else:
        mode, quality_weight = "weighted", float(misc_rng.choice(sc.quality_weights))
    objective: dict[str, Any] = {"mode": mode}
    if mode == "weighted":
        objective.update(latency_weight=sc.latency_weight, quality_weight=quality_weight)
    else:
        objective.update(quality_target=None, quality_tolerance=sc.quality_tolerance)
    objective.update(latency_scale_s=sc.latency_scale_s, deferral_penalty_s=sc.deferral_penalty_s)

    # -- nodes and links ------------------------------------------------------------------------
    nodes = [
        {
            "id": e["id"],
            "tier": "edge",
            "model": e["model"],
            "device": e["device"],
            "memory_gb": e["memory_gb"],
            "max_concurrency": e["max_concurrency"],
            "modalities": ["text", "image"],
        }
        for e in edges
    ] + [
        {
            "id": c["id"],
            "tier": "cloud",
            "model": c["model"],
            "device": c["device"],
            "memory_gb": None,
            "max_concurrency": c["max_concurrency"],
            "modalities": ["text", "image"],
        }
        for c in clouds
    ]
    links = []
    for s, site in enumerate(sites):
        for e in edges:
            if e["home"] == s:
                links.append(
                    {
                        "id": f"{site}/{e['id']}",
                        "from": site,
                        "to": e["id"],
                        "bandwidth_mbps": access(e["mec_mbps"], s),
                        "rtt_ms": round(topo["mec_rtt"][s], 1),
                    }
                )
        links.append(
            {
                "id": f"{site}/core",
                "from": site,
                "to": "core",
                "bandwidth_mbps": access(topo["uplink"][s], s),
                "rtt_ms": round(topo["core_rtt"][s], 1),
            }
        )
    for e in edges:
        links.append(
            {
                "id": f"core/{e['id']}",
                "from": "core",
                "to": e["id"],
                "bandwidth_mbps": e["backhaul_mbps"],
                "rtt_ms": round(e["backhaul_rtt_ms"], 1),
            }
        )
    for c, cloud in enumerate(clouds):
        links.append(
            {
                "id": f"wan-{c}",
                "from": "core",
                "to": cloud["id"],
                "bandwidth_mbps": cloud["wan_mbps"],
                "rtt_ms": round(cloud["wan_rtt_ms"], 1),
            }
        )

    site_desc = ", ".join(f"{s} ({k})" for s, k in zip(sites, topo["kinds"], strict=True))
    hh, mm = divmod(drawn["window_of_day_s"] // 60, 60)
    description = (
        f"Scenario '{sc.name}', seed {seed}, window {index}: {n} requests in {window_s:g} s "
        f"from {len(sites)} sites [{site_desc}], {len(edges)} edge + {len(clouds)} cloud nodes. "
        f"Load factor {rho:.2f} (targets: uplink {rho_access:.2f}, edge memory "
        f"{rho_memory:.2f}, WAN {rho_wan:.2f}). Prompts: TextVQA val (CC BY 4.0); "
        f"{drawn['n_caption']} captioning requests are a synthetic mix. Shapes: ServeGen "
        f"mm-image, clients active at {hh:02d}:{mm:02d}. Arrivals: Azure LLM 2023 "
        f"{sc.arrival_trace} trace rows {offset}-{offset + n - 1} scaled into the window."
    )
    return {
        "format": "qlmio-opt/instance",
        "version": 1,
        "name": window_name(index),
        "description": description,
        "window_s": window_s,
        "objective": objective,
        "nodes": nodes,
        "network": {"sites": sites, "links": links},
        "requests": requests,
    }


def generate_windows(
    scenario: str | Scenario = "default", count: int = 100, seed: int = 0
) -> list[dict]:
    """Windows ``0 .. count-1``; window k is the same whatever ``count`` is."""
    return [generate_window(scenario, k, seed) for k in range(int(count))]


def dumps_instance(instance: dict[str, Any]) -> str:
    """Compact but readable JSON: one line per node, link and request."""

    def one(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    def items(values: list, indent: str) -> str:
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


def sized_window(requests: int, nodes: int, seed: int = 0, scenario: str = "default") -> dict:
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
