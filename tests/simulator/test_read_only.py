"""What the simulator shares between policies and callers cannot be changed in place."""

from __future__ import annotations

import pickle

import pytest

from qlmio_opt.domain.instance import Node, Request
from qlmio_opt.simulator import World, bench_data, workload


@pytest.fixture(scope="module")
def load():
    return workload("azure-conv", 10.0, seed=0)


def test_a_workload_is_read_only_all_the_way_down(load):
    assert load.requests, "the fixture needs requests"
    with pytest.raises(TypeError, match="read-only"):
        load.base["objective"] = {}
    with pytest.raises(TypeError, match="read-only"):
        load.base["nodes"][0]["max_concurrency"] = 1
    with pytest.raises(TypeError, match="read-only"):
        load.requests[0]["prompt_tokens"] = 1
    with pytest.raises(TypeError, match="read-only"):
        load.requests[0]["images"][0]["bytes"] = 1
    with pytest.raises(ValueError, match="read-only"):
        load.arrival_s[0] = 0.0


def test_a_workload_still_pickles_for_the_parallel_workers(load):
    again = pickle.loads(pickle.dumps(load))
    assert again.base == load.base and again.requests == load.requests
    assert (again.arrival_s == load.arrival_s).all()


def test_the_worlds_truth_and_calibration_sample_are_read_only():
    world = World()
    node = Node(id="n", tier="edge", model="qwen2-vl-2b", device="jetson-agx-orin")
    req = Request(id="r", site="s", arrival_s=0.0, task="ocr", prompt_tokens=8, max_output_tokens=8)
    truth = world.pairs([req], [node])
    for name in ("completion_prob", "completed", "output_tokens", "kv_reserve_gb"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(truth, name)[0, 0] = 0
    with pytest.raises(TypeError, match="read-only"):
        world.task_prompt_difficulty["ocr"] = None
    with pytest.raises(ValueError, match="read-only"):
        world.task_prompt_difficulty["ocr"][0] = 0.0


def test_bench_data_world_config_is_read_only():
    data = bench_data(3, seed=0)
    with pytest.raises(TypeError, match="read-only"):
        data.world_config["seed"] = 1
    assert data.meta()["world_config"] == data.world_config
