"""The benchmark dataset generator (``qlmio_opt.simulator.dataset``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qlmio_opt.domain.scenarios.default import DEFAULT
from qlmio_opt.simulator.dataset import (
    COLUMNS,
    SPLITS,
    BenchData,
    LoadConfig,
    bench_data,
    bench_nodes,
    read_bench_table,
    split_of,
    write_bench_data,
)
from qlmio_opt.simulator.world import World

N_MAIN = 300


@pytest.fixture(scope="module")
def main() -> BenchData:
    return bench_data(N_MAIN, seed=3)


@pytest.fixture(scope="module")
def small() -> BenchData:
    return bench_data(25, seed=11)


# -- shape ------------------------------------------------------------------------------------
def test_nodes_are_distinct_device_model_pairs_of_the_scenario() -> None:
    nodes = bench_nodes("default")
    pairs = {
        (o.device, m) for o in DEFAULT.edge_options + DEFAULT.cloud_options for m, _ in o.models
    }
    assert {(n.device, n.model) for n in nodes} == pairs
    assert len(nodes) == len(pairs) == 14
    by_device = {o.device: o.max_concurrency[0] for o in DEFAULT.edge_options}
    by_device |= {o.device: o.max_concurrency[0] for o in DEFAULT.cloud_options}
    for n in nodes:
        assert n.max_concurrency == by_device[n.device]
        assert (n.memory_gb is None) == (n.tier == "cloud")
        if n.tier == "edge":
            assert n.memory_gb > 0


def test_columns_and_every_request_once_per_node(main: BenchData) -> None:
    t = main.table
    assert list(t.columns) == [c.name for c in COLUMNS]
    assert len(t) == N_MAIN * len(main.nodes)
    counts = t.groupby(["request", "node"]).size()
    assert (counts == 1).all()
    assert len(counts) == N_MAIN * len(main.nodes)
    assert t["request"].nunique() == N_MAIN
    assert set(t["node"]) == {n.id for n in main.nodes}
    # request features are the same on every node of a request
    per_request = t.groupby("request")[["task", "prompt_tokens", "upload_bytes", "split"]].nunique()
    assert (per_request == 1).all().all()
    assert not t.isna().any().any()


def test_determinism(small: BenchData) -> None:
    again = bench_data(25, seed=11)
    pd.testing.assert_frame_equal(small.table, again.table)
    other = bench_data(25, seed=12)
    assert not set(other.table["request"]) & set(small.table["request"])
    assert not np.array_equal(
        small.table["latency_s"].to_numpy(), other.table["latency_s"].to_numpy()
    )
    assert list(small.table["prompt"]) != list(other.table["prompt"])


# -- splits -----------------------------------------------------------------------------------
def test_splits_are_by_request_and_about_70_15_15(main: BenchData) -> None:
    t = main.table
    assert (t.groupby("request")["split"].nunique() == 1).all()
    assert set(t["split"]) <= {name for name, _ in SPLITS}
    share = t.drop_duplicates("request")["split"].value_counts(normalize=True)
    for name, expected in SPLITS:
        assert abs(share.get(name, 0.0) - expected) < 0.08, (name, share.to_dict())
    # a pure function of the id, so stable across datasets
    assert all(split_of(r) == s for r, s in zip(t["request"], t["split"], strict=True))
    many = pd.Series([split_of(f"id-{i}") for i in range(20_000)]).value_counts(normalize=True)
    for name, expected in SPLITS:
        assert abs(many[name] - expected) < 0.015


# -- truth ------------------------------------------------------------------------------------
def test_latency_is_the_sum_of_its_parts(main: BenchData) -> None:
    t = main.table
    parts = t["transfer_s"] + t["rtt_s"] + t["queue_s"] + t["compute_s"] + t["decode_s"]
    np.testing.assert_allclose(t["latency_s"], parts, rtol=1e-12, atol=1e-12)
    assert (t["latency_s"] > 0).all()
    for col in ("transfer_s", "rtt_s", "compute_s", "decode_s"):
        assert (t[col] > 0).all(), col
    assert (t["queue_s"] >= 0).all()
    np.testing.assert_allclose(t["rtt_s"], t["rtt_ms"] / 1000)
    edge = t["tier"] == "edge"
    assert t.loc[edge, "bandwidth_mbps"].between(10, 1000).all()
    assert t.loc[~edge, "bandwidth_mbps"].between(100, 1000).all()
    assert t.loc[edge, "rtt_ms"].between(5, 15).all()
    assert t.loc[~edge, "rtt_ms"].between(20, 60).all()
    assert t["link_flows"].between(0, 8).all()
    assert ((t["link_flows"] == 0) == (t["link_bytes"] == 0)).all()
    assert (t["bg_active"] <= t["bg_requests"]).all()
    assert (t["bg_requests"] <= 2 * t["max_concurrency"]).all()
    assert (t["output_tokens"] >= 1).all()
    assert (t["output_tokens"] <= t["max_output_tokens"]).all()


def test_completion_matches_the_worlds_probability(main: BenchData) -> None:
    t = main.table
    assert set(t["completed"].unique()) <= {0, 1}
    assert t["true_completion_prob"].between(0, 1).all()
    # one draw per (request, model): compare per (model, task) over requests
    per = t.drop_duplicates(["request", "model"])
    checked = 0
    for (_model, _task), g in per.groupby(["model", "task"]):
        if len(g) < 30:
            continue
        p = g["true_completion_prob"].mean()
        tolerance = 4 * np.sqrt(p * (1 - p) / len(g)) + 0.02
        assert abs(g["completed"].mean() - p) < tolerance
        checked += 1
    assert checked >= 10
    overall = per["completed"].mean() - per["true_completion_prob"].mean()
    assert abs(overall) < 0.03


def test_nodes_sharing_a_model_share_the_completion_draw(small: BenchData) -> None:
    t = small.table
    same = t.groupby(["request", "model"])["completed"].nunique()
    assert (same == 1).all()


def test_more_background_load_is_not_faster() -> None:
    light = bench_data(60, seed=5, load=LoadConfig(background_factor=1, max_utilisation=0.2))
    heavy = bench_data(60, seed=5, load=LoadConfig(background_factor=2, max_utilisation=3.0))
    a, b = light.table, heavy.table
    pd.testing.assert_series_equal(a["request"], b["request"])
    pd.testing.assert_series_equal(a["output_tokens"], b["output_tokens"])
    assert b["bg_requests"].mean() > a["bg_requests"].mean()
    slow_light = (a["queue_s"] + a["decode_s"]).mean()
    slow_heavy = (b["queue_s"] + b["decode_s"]).mean()
    assert slow_heavy > slow_light
    for tier in ("edge", "cloud"):
        mask = a["tier"] == tier
        assert (b.loc[mask, "queue_s"] + b.loc[mask, "decode_s"]).mean() >= (
            a.loc[mask, "queue_s"] + a.loc[mask, "decode_s"]
        ).mean()


def test_within_a_dataset_busier_pairs_wait_longer(main: BenchData) -> None:
    t = main.table
    t = t.assign(slow=t["queue_s"] + t["decode_s"])
    higher = 0
    for _node, g in t.groupby("node"):
        busy = g["bg_active"] > g["bg_active"].median()
        if busy.all() or not busy.any():
            continue
        higher += g.loc[busy, "slow"].mean() >= g.loc[~busy, "slow"].mean()
    assert higher >= len(main.nodes) - 1


# -- files ------------------------------------------------------------------------------------
def test_write_and_read_back(small: BenchData, tmp_path: Path) -> None:
    files = write_bench_data(small, tmp_path / "out")
    assert [f.name for f in files] == ["bench.csv.gz", "DATA_CARD.md", "meta.json"]
    assert all(f.is_file() for f in files)
    back = read_bench_table(files[0])
    pd.testing.assert_frame_equal(back, small.table)
    pd.testing.assert_frame_equal(read_bench_table(tmp_path / "out"), small.table)
    meta = json.loads(files[2].read_text())
    assert meta["seed"] == 11
    assert meta["n_requests"] == 25
    assert meta["n_rows"] == len(small.table)
    assert [n["id"] for n in meta["nodes"]] == [n.id for n in small.nodes]
    assert meta["world_config"]["seed"] == 0
    assert sum(s["requests"] for s in meta["splits"].values()) == 25
    assert [c["name"] for c in meta["columns"]] == list(small.table.columns)
    card = files[1].read_text()
    for needle in ("CC BY 4.0", "Apache-2.0", "true_completion_prob", "hidden", "Seed 11"):
        assert needle in card
    # byte-reproducible
    again = write_bench_data(small, tmp_path / "again")
    for a, b in zip(files, again, strict=True):
        assert a.read_bytes() == b.read_bytes()


# -- arguments and edge cases -----------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -3])
def test_too_few_requests_is_a_clear_error(bad: int) -> None:
    with pytest.raises(ValueError, match=r"n_requests must be >= 1; got"):
        bench_data(bad)


@pytest.mark.parametrize("bad", [2.5, "10", True])
def test_non_integer_requests_is_a_clear_error(bad: object) -> None:
    with pytest.raises(ValueError, match="n_requests must be an integer"):
        bench_data(bad)  # type: ignore[arg-type]


def test_negative_seed_and_unknown_scenario() -> None:
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        bench_data(5, seed=-1)
    with pytest.raises(ValueError, match="unknown scenario"):
        bench_data(5, scenario="nope")


def test_one_request_runs_idle_and_progress_is_reported() -> None:
    calls: list[tuple[int, int]] = []
    data = bench_data(1, seed=2, world=World(), progress=lambda d, n: calls.append((d, n)))
    t = data.table
    assert len(t) == len(data.nodes)
    assert (t["bg_requests"] == 0).all() and (t["link_flows"] == 0).all()
    assert (t["queue_s"] == 0).all()
    assert calls == [(1, 1)]
    calls.clear()
    bench_data(3, seed=2, progress=lambda d, n: calls.append((d, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
