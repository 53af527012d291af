"""Generated windows of a chosen size and node count, for the scaling benchmarks.

The default scenario with the size fixed and the edge/cloud counts set, so that a scaling table
varies one thing at a time; the windows are generated, never committed.
"""

from __future__ import annotations

from qlmio_opt import Instance
from qlmio_opt.domain.scenarios import sized_window as sized_window_data


def sized_window(requests: int, nodes: int, seed: int = 0) -> Instance:
    """A default-scenario window with ``requests`` requests and ``nodes`` nodes (1-2 cloud)."""
    return Instance.from_dict(sized_window_data(requests, nodes, seed))
