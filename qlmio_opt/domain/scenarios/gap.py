"""Generalized-assignment-style windows: the classic tight GAP families as override instances.

Every request may go to every node; a pair's cost is its given latency (``latency_s``, the
objective is ``weighted`` with quality weight 0, so the cost is the latency in seconds), its
weight the KV memory it holds (``memory_gb``), and each node's memory is ``tightness`` (0.8) of
what the requests would need if spread evenly: ``tightness * sum_r memory[r, n] / N``. Deferral
is off, links are wide and nothing else binds, so a window is exactly a GAP instance (minimise
the total cost, each request on one node, each node's weights within its capacity).

The two families are those of the GAP literature (Martello and Toth, *Knapsack Problems*, 1990,
ch. 7; the OR-Library sets ``gapc`` and ``gapd`` of Chu and Beasley, 1997):

* ``"C"``: weights uniform in [5, 25], costs uniform in [10, 50], independent;
* ``"D"``: weights uniform in [1, 100], costs ``111 - weight + U[-10, 10]`` (costs fall as
  weights grow, which makes a cheap assignment a heavy one: the harder family).

Integers are drawn, as in those sets; the capacity is rounded down. Same arguments, same dict.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["GAP_FAMILIES", "gap_window"]

GAP_FAMILIES = ("C", "D")
# Wide enough that no link binds: every request's upload (a 16-token prompt) fits many times.
_LINK_MBPS = 10_000.0
_MODEL, _DEVICE = "qwen2-vl-2b", "jetson-agx-orin"


def gap_window(
    num_requests: int,
    num_nodes: int,
    seed: int,
    family: str = "C",
    tightness: float = 0.8,
) -> dict[str, Any]:
    """A GAP-style window of ``num_requests`` x ``num_nodes`` (a JSON-ready instance dict).

    Parameters
    ----------
    num_requests, num_nodes
        The window's size (both at least 1).
    seed
        Seeds the draws.
    family
        ``"C"`` or ``"D"`` (see the module notes).
    tightness
        Each node's memory as a share of the even spread's demand on it.
    """
    if family not in GAP_FAMILIES:
        raise ValueError(f"unknown GAP family {family!r} (known: {', '.join(GAP_FAMILIES)})")
    if num_requests < 1 or num_nodes < 1:
        raise ValueError("a GAP window needs at least one request and one node")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(num_requests, num_nodes)))
    weights, costs = _draw(rng, num_requests, num_nodes, family)
    capacity = np.floor(tightness * weights.sum(axis=0) / num_nodes)
    node_ids = [f"n{n}" for n in range(num_nodes)]
    return {
        "format": "qlmio-opt/instance",
        "version": 1,
        "name": f"gap{family.lower()}_{num_requests}x{num_nodes}_s{seed}",
        "description": (
            f"GAP family {family}, {num_requests} requests x {num_nodes} nodes, capacity "
            f"{tightness:g} of the even spread's demand, deferral off"
        ),
        "window_s": 1.0,
        "objective": {"mode": "weighted", "latency_weight": 1.0, "quality_weight": 0.0},
        "nodes": [
            {
                "id": node,
                "tier": "edge",
                "model": _MODEL,
                "device": _DEVICE,
                "memory_gb": float(capacity[n]),
                "max_concurrency": num_requests,
            }
            for n, node in enumerate(node_ids)
        ],
        "network": {
            "sites": ["cell-0"],
            "links": [
                {
                    "id": f"cell-0/{node}",
                    "from": "cell-0",
                    "to": node,
                    "bandwidth_mbps": _LINK_MBPS,
                    "rtt_ms": 1.0,
                }
                for node in node_ids
            ],
        },
        "requests": [
            {
                "id": f"r{r}",
                "site": "cell-0",
                "arrival_s": 0.0,
                "task": "general-vqa",
                "prompt_tokens": 16,
                "images": [],
                "max_output_tokens": 16,
            }
            for r in range(num_requests)
        ],
        "overrides": {
            "latency_s": costs.tolist(),
            "quality": np.zeros((num_requests, num_nodes)).tolist(),
            "memory_gb": weights.tolist(),
        },
    }


def _draw(
    rng: np.random.Generator, num_requests: int, num_nodes: int, family: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(R, N)`` float weights and costs of one family."""
    shape = (num_requests, num_nodes)
    if family == "C":
        weights = rng.integers(5, 26, shape)
        costs = rng.integers(10, 51, shape)
    else:
        weights = rng.integers(1, 101, shape)
        costs = 111 - weights + rng.integers(-10, 11, shape)
    return weights.astype(float), costs.astype(float)
