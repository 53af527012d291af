"""Bench rows under load (``qlmio_opt.simulator.state_dataset``, ``bench-data --state``): the
state is what a scheduler observes, the latency adds up, idle rows are the stand-alone physics,
both engines share each pair's draws, and the table is reproducible."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qlmio_opt.domain.instance import NodeState
from qlmio_opt.domain.scenarios.generate import get_scenario
from qlmio_opt.faces.cli import main
from qlmio_opt.simulator.dataset import draw_bench_requests
from qlmio_opt.simulator.state_dataset import (
    LOAD_LEVELS,
    SATURATED_LOAD,
    STATE_COLUMNS,
    StateConfig,
    load_level,
    read_state_table,
    state_bench_data,
)
from qlmio_opt.simulator.world import World

N = 12


@pytest.fixture(scope="module")
def data():
    return state_bench_data(N, seed=4)


def test_every_request_runs_on_every_node_under_both_engines(data):
    table = data.table
    assert list(table.columns) == [name for name, _, _ in STATE_COLUMNS]
    assert len(table) == N * len(data.nodes) * 2
    per_pair = table.groupby(["request", "node"])["engine"].agg(sorted)
    assert all(engines == ["chunked-prefill", "serial-prefill"] for engines in per_pair)
    assert set(table["load_level"]) == set(LOAD_LEVELS)


def test_the_latency_is_the_sum_of_its_parts(data):
    t = data.table
    parts = t[["wait_s", "transfer_s", "rtt_s", "queue_s", "prefill_s", "decode_s"]].sum(axis=1)
    np.testing.assert_allclose(t["latency_s"], parts, rtol=1e-12)
    assert (t[["queue_s", "prefill_s", "decode_s"]] >= -1e-9).all().all()
    np.testing.assert_allclose(t["transfer_s"], 8 * t["upload_bytes"] / (t["bandwidth_mbps"] * 1e6))


def test_idle_rows_are_the_world_alone(data):
    """On a node without background (before or after the decision) nothing queues, the prefill
    takes its true stand-alone time and the decode the true solo decode."""
    t = data.table
    world = World()
    requests = {r: i for i, r in enumerate(dict.fromkeys(t["request"]))}
    bodies = draw_bench_requests(get_scenario("default"), N, 4)
    truth = world.pairs(bodies, list(data.nodes))
    node_index = {n.id: j for j, n in enumerate(data.nodes)}
    idle = t[(t["utilisation"] == 0) & (t["engine"] == "serial-prefill")]
    assert (idle["load_level"] == "idle").all()
    assert len(idle) > 10
    for _, row in idle.iterrows():
        i, j = requests[row["request"]], node_index[row["node"]]
        assert row["queue_s"] == pytest.approx(0.0, abs=1e-9)
        assert row["prefill_s"] == pytest.approx(truth.compute_s[i, j], rel=1e-9)
        assert row["decode_s"] == pytest.approx(truth.decode_solo_s[i, j], rel=1e-6)
        assert row["output_tokens"] == truth.output_tokens[i, j]


def test_the_state_columns_summarise_the_observed_state(data):
    for _, row in data.table.iloc[::37].iterrows():
        state = NodeState.model_validate_json(row["state_json"])
        assert row["n_running"] == len(state.running)
        assert row["n_waiting"] == len(state.waiting)
        assert row["n_prefilling"] == sum(r.output_tokens == 0 for r in state.running)
        assert row["running_output_tokens"] == sum(r.output_tokens for r in state.running)
        assert row["prefill_load"] == pytest.approx(state.prefill_load or 0.0)
        # what a scheduler knows: tokens so far stay below the allowance, never the true length
        assert all(r.output_tokens < r.max_output_tokens for r in state.running)
        assert load_level(state, int(row["max_concurrency"])) == row["load_level"]
    assert "utilisation" in data.table  # the design parameter is recorded ...
    roles = {name: role for name, role, _ in STATE_COLUMNS}
    assert roles["utilisation"] == "hidden"  # ... as hidden, never a feature


def test_load_levels_by_hand():
    item = {"prompt_tokens": 10, "max_output_tokens": 10}
    assert load_level(NodeState(), 4) == "idle"
    assert load_level(NodeState.model_validate({"running": [item]}), 4) == "busy"
    assert load_level(NodeState.model_validate({"running": [item], "waiting": [item]}), 4) == (
        "saturated"
    )
    loaded = {"running": [item], "prefill_load": SATURATED_LOAD}
    assert load_level(NodeState.model_validate(loaded), 4) == "saturated"


def test_both_engines_share_each_pairs_draws(data):
    t = data.table
    chunked = t[t["engine"] == "chunked-prefill"].reset_index(drop=True)
    serial = t[t["engine"] == "serial-prefill"].reset_index(drop=True)
    for column in ("request", "node", "wait_s", "bandwidth_mbps", "rtt_ms", "utilisation"):
        pd.testing.assert_series_equal(chunked[column], serial[column])
    assert not np.allclose(chunked["latency_s"], serial["latency_s"])


def test_same_seed_same_table(data):
    again = state_bench_data(N, seed=4)
    pd.testing.assert_frame_equal(again.table, data.table)


def test_idle_share_one_gives_only_idle_rows():
    only_idle = state_bench_data(3, seed=1, config=StateConfig(idle_share=1.0))
    assert set(only_idle.table["load_level"]) == {"idle"}
    assert (only_idle.table["n_running"] == 0).all()


def test_bench_data_state_writes_a_reproducible_table(tmp_path):
    args = ["bench-data", "--requests", "2", "--seed", "2", "--state"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "bench-state.csv.gz").read_bytes() == (b / "bench-state.csv.gz").read_bytes()
    assert (a / "bench.csv.gz").read_bytes() == (b / "bench.csv.gz").read_bytes()
    meta = json.loads((a / "meta-state.json").read_text())
    assert meta["format"] == "qlmio-opt/bench-state" and meta["n_rows"] == 2 * 14 * 2
    table = read_state_table(a)
    pd.testing.assert_frame_equal(table, state_bench_data(2, seed=2).table, check_dtype=False)


def test_unknown_engines_are_refused():
    with pytest.raises(ValueError, match="engines must be some of"):
        state_bench_data(2, engines=("vllm",))
