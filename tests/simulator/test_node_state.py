"""A node's observed state: the engine's counts and the gateway's records, no hidden truth."""

from __future__ import annotations

import numpy as np
import pytest

from qlmio_opt.domain.instance import InFlight, Instance, Request
from qlmio_opt.simulator.engine import NodeJobs, node_server
from qlmio_opt.simulator.node_state import observed_state


def _jobs(rows) -> NodeJobs:
    """Jobs from ``(arrive, compute, tokens, reserve, prompt, image)`` rows (KV read 0.5 GB)."""
    arrive, compute, tokens, reserve, prompt, image = map(np.array, zip(*rows, strict=True))
    return NodeJobs(
        arrive_s=arrive.astype(float),
        compute_s=compute.astype(float),
        tokens=tokens.astype(float),
        kv_reserve_gb=reserve.astype(float),
        kv_read_gb=np.full(len(rows), 0.5),
        prompt_tokens=prompt.astype(float),
        image_tokens=image.astype(float),
    )


def _request(ident: str, task: str, max_output: int) -> Request:
    return Request(
        id=ident,
        site="s",
        arrival_s=0.0,
        task=task,
        prompt_tokens=1,
        max_output_tokens=max_output,
    )


@pytest.mark.parametrize("scheduler", ["serial-prefill", "chunked-prefill"])
def test_observed_state_by_hand(scheduler):
    server = node_server(
        scheduler,
        concurrency=1,
        memory_gb=10.0,
        weights_gb=1.0,
        decode_tok_s=10.0,
        prefill_tok_s=100.0,
        max_batched_tokens=64,
    )
    # job 0 prefills 10 tokens in 0.1 s, then decodes a token per (1 + 0.5) / 10 = 0.15 s:
    # 6 of its 100 tokens by 1 s; job 1 waits for the one slot; job 2 lands at 5 s
    server.add(_jobs([(0.0, 0.1, 100, 2.0, 8, 2), (0.5, 0.1, 5, 1.0, 3, 0)]))
    server.run_until(0.8)
    server.add(_jobs([(5.0, 0.1, 5, 1.0, 4, 0)]))
    requests = [_request("a", "ocr", 128), _request("b", "chart", 16), _request("c", "ocr", 32)]
    state = observed_state(server, requests, 1.0)
    assert state.running == (
        InFlight(
            task="ocr", prompt_tokens=8, image_tokens=2, output_tokens=6, max_output_tokens=128
        ),
    )
    # the engine's queue, then what is still on its way
    assert [(r.task, r.prompt_tokens, r.output_tokens) for r in state.waiting] == [
        ("chart", 3, 0),
        ("ocr", 4, 0),
    ]
    assert state.kv_used_gb == pytest.approx(2.0)


def test_observed_state_fits_an_instance_and_holds_its_memory():
    server = node_server(
        "chunked-prefill",
        concurrency=4,
        memory_gb=10.0,
        weights_gb=1.0,
        decode_tok_s=10.0,
        prefill_tok_s=100.0,
        max_batched_tokens=64,
    )
    server.add(_jobs([(0.0, 0.1, 100, 2.0, 8, 2), (0.0, 0.1, 100, 1.5, 8, 0)]))
    state = observed_state(server, [_request("a", "ocr", 128), _request("b", "ocr", 128)], 2.0)
    inst = Instance.from_dict(
        {
            "format": "qlmio-opt/instance",
            "version": 1,
            "name": "w",
            "window_s": 1.0,
            "nodes": [
                {
                    "id": "n",
                    "tier": "edge",
                    "model": "qwen2-vl-2b",
                    "device": "jetson-agx-orin",
                    "memory_gb": 10.0,
                    "state": state.model_dump(mode="json"),
                }
            ],
            "network": {
                "sites": ["s"],
                "links": [
                    {"id": "l", "from": "s", "to": "n", "bandwidth_mbps": 50.0, "rtt_ms": 5.0}
                ],
            },
            "objective": {"mode": "weighted"},
            "requests": [_request("r", "ocr", 16).model_dump(mode="json")],
        }
    )
    assert inst.node_held_gb[0] == pytest.approx(3.5)
    assert inst.node_memory_gb[0] == pytest.approx(10.0 - 3.5)
