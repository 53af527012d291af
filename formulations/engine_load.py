"""What a node's serving engine and live state add to a window's latencies: the physics lives in
:mod:`qlmio_opt.predictors.engine_load` (a learned predictor reads it too), re-exported here
for the formulation."""

from __future__ import annotations

from qlmio_opt.predictors.engine_load import (
    LOAD_PARTS,
    MAX_LOAD,
    NodeLoad,
    PairLoad,
    interference,
    node_loads,
    pair_loads,
    prefill_work_s,
    state_load,
    state_pair_loads,
)

__all__ = [
    "LOAD_PARTS",
    "MAX_LOAD",
    "NodeLoad",
    "PairLoad",
    "interference",
    "node_loads",
    "pair_loads",
    "prefill_work_s",
    "state_load",
    "state_pair_loads",
]
