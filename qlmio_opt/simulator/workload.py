"""What a replay runs: a fixed deployment (nodes and network) and a stream of requests.

The deployment is one draw of a scenario's topology (``qlmio_opt.domain.scenarios``) with its base
bandwidths, full edge devices and the scenario's objective; ``edge_capacity`` scales every edge
node's free memory and concurrency (0.25 = a quarter of each edge box is available).

The request stream takes its arrival times from a trace:

* ``azure-conv`` / ``azure-code``: Azure LLM inference trace 2023; ``mooncake``: Mooncake
  conversation trace. Their generated-token counts set each request's output allowance
  (``max_output_tokens``, on the scenario's ladder);
* ``servegen``: a Poisson process at ServeGen's aggregate multimodal rate of the hour.

Prompts and task labels come from TextVQA, image counts and sizes, text tokens and (for
``servegen``) output allowances from ServeGen's Qwen-VL distributions, exactly as the window
generator draws them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qlmio_opt.domain.scenarios.default import Scenario
from qlmio_opt.domain.scenarios.generate import _output_cap, _requests, _topology, get_scenario

TRACES = ("azure-conv", "azure-code", "mooncake", "servegen")
BLOCK = 256  # requests drawn per random stream


@dataclass(frozen=True)
class Workload:
    """A deployment and the requests that reach it.

    Attributes
    ----------
    base
        Instance fields shared by every window: ``nodes``, ``network``, ``objective``.
    requests
        Request bodies (instance JSON without ``arrival_s``), in arrival order.
    arrival_s
        Global arrival time of each request, seconds from the replay's start.
    trace
        Where the arrivals come from.
    """

    base: dict[str, Any]
    requests: tuple[dict[str, Any], ...]
    arrival_s: np.ndarray
    trace: str

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1]) if len(self.arrival_s) else 0.0


def deployment(
    scenario: str | Scenario = "default",
    seed: int = 0,
    *,
    edge_capacity: float = 1.0,
    objective: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Nodes, network and objective of one drawn deployment (see the module docstring)."""
    if not 0 < edge_capacity <= 1:
        raise ValueError(f"edge_capacity must be in (0, 1]; got {edge_capacity}")
    from qlmio_opt.domain.catalog import default_catalog

    sc = get_scenario(scenario)
    topo = _topology(sc, np.random.default_rng([int(seed), 7919]))
    catalog = default_catalog()
    nodes = []
    for e in topo["edges"]:
        free = catalog.device(e["device"]).free_memory_gb(catalog.model(e["model"]))
        nodes.append(
            {
                "id": e["id"],
                "tier": "edge",
                "model": e["model"],
                "device": e["device"],
                "memory_gb": "auto" if edge_capacity == 1 else round(free * edge_capacity, 3),
                "max_concurrency": max(1, round(e["max_concurrency"] * edge_capacity)),
                "modalities": ["text", "image"],
            }
        )
    for c in topo["clouds"]:
        nodes.append(
            {
                "id": c["id"],
                "tier": "cloud",
                "model": c["model"],
                "device": c["device"],
                "memory_gb": None,
                "max_concurrency": c["max_concurrency"],
                "modalities": ["text", "image"],
            }
        )
    links = []
    for s, site in enumerate(topo["sites"]):
        for e in topo["edges"]:
            if e["home"] == s:
                links.append(
                    _link(f"{site}/{e['id']}", site, e["id"], e["mec_mbps"], topo["mec_rtt"][s])
                )
        links.append(_link(f"{site}/core", site, "core", topo["uplink"][s], topo["core_rtt"][s]))
    for e in topo["edges"]:
        links.append(
            _link(f"core/{e['id']}", "core", e["id"], e["backhaul_mbps"], e["backhaul_rtt_ms"])
        )
    for k, c in enumerate(topo["clouds"]):
        links.append(_link(f"wan-{k}", "core", c["id"], c["wan_base_mbps"], c["wan_rtt_ms"]))
    if objective is None:
        objective = {
            "mode": "quality_floor",
            "quality_tolerance": sc.quality_tolerance,
            "latency_scale_s": sc.latency_scale_s,
            "deferral_penalty_s": sc.deferral_penalty_s,
        }
    return {
        "format": "qlmio-opt/instance",
        "version": 1,
        "nodes": nodes,
        "network": {"sites": topo["sites"], "links": links},
        "objective": objective,
    }


def _link(ident: str, src: str, dst: str, mbps: float, rtt_ms: float) -> dict[str, Any]:
    return {
        "id": ident,
        "from": src,
        "to": dst,
        "bandwidth_mbps": float(f"{mbps:.4g}"),
        "rtt_ms": round(float(rtt_ms), 1),
    }


def trace_arrivals(trace: str, duration_s: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times in ``[0, duration_s)`` and the trace's output tokens (or -1 if none)."""
    from qlmio_opt.domain.traces import load_azure, load_mooncake, load_servegen

    if trace in ("azure-conv", "azure-code"):
        df = load_azure(trace.split("-")[1])
        t, out = df["arrival_s"].to_numpy(), df["generated_tokens"].to_numpy()
    elif trace == "mooncake":
        df = load_mooncake()
        t, out = df["arrival_s"].to_numpy(), df["output_tokens"].to_numpy()
    elif trace == "servegen":
        rate = load_servegen().aggregate_rate()
        rng = np.random.default_rng([int(seed), 104729])
        times, now = [], 0.0
        while now < duration_s:
            slot = int(now // 600) % len(rate)
            now += float(rng.exponential(1.0 / rate.iloc[slot]))
            times.append(now)
        t = np.array(times[:-1])
        out = np.full(len(t), -1)
    else:
        raise ValueError(f'unknown trace "{trace}"; choose from {", ".join(TRACES)}')
    keep = t < duration_s
    return t[keep].astype(float), out[keep].astype(np.int64)


def workload(
    trace: str = "azure-conv",
    duration_s: float = 600.0,
    *,
    scenario: str | Scenario = "default",
    seed: int = 0,
    edge_capacity: float = 1.0,
    objective: dict[str, Any] | None = None,
) -> Workload:
    """The deployment of ``(scenario, seed)`` and the first ``duration_s`` of ``trace``."""
    sc = get_scenario(scenario)
    base = deployment(sc, seed, edge_capacity=edge_capacity, objective=objective)
    arrival, trace_out = trace_arrivals(trace, duration_s, seed)
    sites = base["network"]["sites"]
    bodies = []
    # drawn in blocks, each from its own stream: a longer replay starts with the same requests
    for block in range(0, len(arrival), BLOCK):
        rng = np.random.default_rng([int(seed), 15485863, block // BLOCK])
        n = min(BLOCK, len(arrival) - block)
        # always a whole block, so that the draws do not depend on where the replay ends
        drawn = _requests(sc, rng, BLOCK, len(sites))
        floors = rng.random(BLOCK) < sc.min_quality_share
        floor_values = rng.choice(sc.min_quality_values, BLOCK)
        deadlines = rng.random(BLOCK) < sc.deadline_share
        slack = np.exp(rng.uniform(*np.log(sc.deadline_slack_s), BLOCK))
        for k, r in enumerate(drawn["requests"][:n]):
            i = block + k
            body = {
                "id": f"q{i:06d}",
                "site": sites[r["site_idx"]],
                "task": r["task"],
                "prompt": r["prompt"],
                "prompt_tokens": r["prompt_tokens"],
                "images": r["images"],
                "max_output_tokens": (
                    _output_cap(sc, int(trace_out[i]))
                    if trace_out[i] >= 0
                    else r["max_output_tokens"]
                ),
            }
            if floors[k]:
                body["min_quality"] = float(floor_values[k])
            if deadlines[k]:
                body["deadline_s"] = float(f"{slack[k]:.4g}")
            bodies.append(body)
    return Workload(base=base, requests=tuple(bodies), arrival_s=arrival, trace=trace)
