"""Generated windows of a chosen size and node count, for the scaling benchmarks.

The default scenario with the size fixed and the edge/cloud counts set, so that a scaling table
varies one thing at a time; the windows are generated, never committed.
"""

from __future__ import annotations

import dataclasses

from qlmio_opt import Instance
from qlmio_opt.scenarios import SCENARIOS
from qlmio_opt.scenarios.generate import generate_window


def sized_window(requests: int, nodes: int, seed: int = 0) -> Instance:
    """A default-scenario window with ``requests`` requests and ``nodes`` nodes (1-2 cloud)."""
    clouds = 1 if nodes <= 6 else 2
    scenario = dataclasses.replace(
        SCENARIOS["default"],
        name=f"sized-{requests}x{nodes}",
        size_min=requests,
        size_max=requests,
        size_grid=1,
        showcase_index=None,
        n_edges=(nodes - clouds, nodes - clouds),
        n_clouds=(clouds, clouds),
    )
    data = generate_window(scenario, 0, seed)
    data["name"] = f"sized_{requests}x{nodes}_s{seed}"
    return Instance.from_dict(data)
