"""One node of the world serving a window's requests that all reach it idle at time 0.

The congestion curve's check against the simulator (``benchmarks/curve_vs_simulator.py`` and
``tests/domain/test_engine_load.py``) runs this: the node is built as the replay builds it,
with the world's true speeds, token counts and KV sizes.
"""

from __future__ import annotations

import numpy as np

from qlmio_opt.domain.instance import Instance
from qlmio_opt.simulator.engine import NodeJobs, node_server
from qlmio_opt.simulator.world import World


def total_latency_together_s(instance: Instance, world: World) -> float:
    """Sum over ``instance``'s requests of their latency (arrival to last token) on its first
    node when all of them reach it, idle, at time 0."""
    node = instance.nodes[0]
    speed, engine = world.speeds(node), instance.node_engines[0]
    server = node_server(
        engine.scheduler,
        concurrency=int(instance.node_concurrency[0]),
        memory_gb=float(instance.node_memory_gb[0]),
        weights_gb=speed.weights_gb,
        decode_tok_s=speed.decode_tok_s,
        prefill_tok_s=speed.prefill_tok_s,
        max_batched_tokens=engine.max_batched_tokens,
    )
    truth = world.pairs(instance.requests, instance.nodes)
    server.add(
        NodeJobs(
            arrive_s=np.zeros(len(instance.requests)),
            compute_s=truth.compute_s[:, 0],
            tokens=truth.output_tokens[:, 0],
            kv_reserve_gb=truth.kv_reserve_gb[:, 0],
            kv_read_gb=truth.kv_read_gb[:, 0],
            prompt_tokens=np.array([r.prompt_tokens for r in instance.requests], dtype=float),
            image_tokens=truth.image_tokens[:, 0],
        )
    )
    server.run_until()
    return float(server.times().finish_s.sum())
