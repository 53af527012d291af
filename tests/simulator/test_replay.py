"""Trace replay: conservation, determinism, equal streams for every policy, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qlmio_opt.faces.cli import main
from qlmio_opt.simulator import ORACLE, ReplayConfig, World, replay, workload
from qlmio_opt.simulator.metrics import reduction_table

POLICIES = ("greedy", "all-cloud", "per-request", ORACLE)


@pytest.fixture(scope="module")
def small_replay():
    load = workload("azure-conv", 40.0, seed=0, edge_capacity=0.5)
    config = ReplayConfig(window_s=2.0, policies=POLICIES, time_limit=5.0)
    return load, replay(load, World(), config)


def test_every_request_served_exactly_once(small_replay):
    load, result = small_replay
    for name, run in result.runs.items():
        df = run.requests
        assert len(df) == len(load.requests), name
        assert df["request"].is_unique
        assert df["node"].notna().all(), f"{name} left requests unserved"
        assert np.isfinite(df["finish_s"]).all()


def test_no_request_finishes_before_it_arrives(small_replay):
    _, result = small_replay
    for run in result.runs.values():
        df = run.requests
        assert (df["dispatch_s"] >= df["arrival_s"]).all()
        assert (df["upload_end_s"] >= df["dispatch_s"]).all()
        assert (df["admit_s"] >= df["node_arrival_s"] - 1e-9).all()
        assert (df["finish_s"] > df["arrival_s"]).all()
        # a request waits at least until its window closes
        close = (np.floor(df["arrival_s"] / 2.0) + 1) * 2.0
        assert (df["dispatch_s"] >= close - 1e-9).all()


def test_every_policy_sees_the_same_stream(small_replay):
    _, result = small_replay
    frames = list(result.runs.values())
    for run in frames[1:]:
        assert run.requests["request"].tolist() == frames[0].requests["request"].tolist()
        assert np.array_equal(run.requests["arrival_s"], frames[0].requests["arrival_s"])


def test_all_cloud_sends_every_placeable_request_to_the_cloud(small_replay):
    _, result = small_replay
    run = result.runs["all-cloud"]
    fallback = set(run.windows.loc[run.windows["fallback"] != "", "window"])
    window = np.floor(run.requests["arrival_s"] / 2.0).astype(int)
    ruled = run.requests[~window.isin(fallback) & (run.requests["deferrals"] == 0)]
    assert (ruled["tier"] == "cloud").mean() > 0.9


def test_replay_is_deterministic(small_replay):
    load, first = small_replay
    config = ReplayConfig(window_s=2.0, policies=POLICIES, time_limit=5.0)
    second = replay(load, World(), config)
    for name in POLICIES:
        pd.testing.assert_frame_equal(first.runs[name].requests, second.runs[name].requests)


def test_summary_and_reduction_table(small_replay):
    _, result = small_replay
    summary = result.summary()
    assert list(summary.index) == list(POLICIES)
    for name, run in result.runs.items():
        df = run.requests
        assert summary.loc[name, "tcr"] == pytest.approx(df["completed"].mean())
        assert summary.loc[name, "mean_latency_s"] == pytest.approx(df["latency_s"].mean())
        assert summary.loc[name, "p50_latency_s"] <= summary.loc[name, "p95_latency_s"]
        assert 0.0 <= summary.loc[name, "edge_utilisation"] <= 1.0
    table = reduction_table(summary)
    cloud = summary.loc["all-cloud"]
    for name in POLICIES:
        mean = result.runs[name].requests["latency_s"].mean()
        assert table.loc[name, "latency_reduction"] == pytest.approx(
            1 - mean / cloud["mean_latency_s"]
        )
        tcr = result.runs[name].requests["completed"].mean()
        assert table.loc[name, "tcr_minus_baseline_pts"] == pytest.approx(
            100 * (tcr - cloud["tcr"])
        )
    oracle = table.loc[ORACLE, "latency_reduction"]
    if oracle > 0:
        assert table.loc["greedy", "share_of_oracle_reduction"] == pytest.approx(
            table.loc["greedy", "latency_reduction"] / oracle
        )


def test_trace_ends_with_every_deferred_request_dispatched():
    load = workload("azure-conv", 20.0, seed=1, edge_capacity=0.1)
    result = replay(load, World(), ReplayConfig(window_s=1.0, policies=("greedy",)))
    df = result.runs["greedy"].requests
    assert df["node"].notna().all()


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="unknown policy nope"):
        ReplayConfig(policies=("greedy", "nope"))


def test_cli_simulate_json_and_files(tmp_path, capsys):
    code = main(
        [
            "simulate",
            "--trace",
            "servegen",
            "--duration",
            "20",
            "--window",
            "2",
            "--policies",
            "greedy,all-cloud",
            "--format",
            "json",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["policies"]) == {"greedy", "all-cloud"}
    for row in data["policies"].values():
        for key in (
            "mean_latency_s",
            "p95_latency_s",
            "p99_latency_s",
            "tcr",
            "deadline_misses",
            "edge_utilisation",
            "mean_decision_ms",
        ):
            assert key in row
        assert 0.0 <= row["tcr"] <= 1.0
    for name in ("summary.csv", "requests.csv.gz", "latency_cdf.png", "tcr_vs_latency.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_cli_simulate_bad_policy_exits_2(capsys):
    code = main(["simulate", "--duration", "10", "--policies", "greedy,magic"])
    assert code == 2
    assert "unknown policy magic" in capsys.readouterr().err


def test_cli_bench_data_writes_the_dataset(tmp_path, capsys):
    code = main(["bench-data", "--requests", "12", "--seed", "2", "--out", str(tmp_path)])
    assert code == 0
    from qlmio_opt.simulator.dataset import read_bench_table

    table = read_bench_table(tmp_path)
    assert table["request"].nunique() == 12
    assert (tmp_path / "DATA_CARD.md").read_text().startswith("# qlmio-opt benchmark dataset")
    assert "rows" in capsys.readouterr().out


def test_a_longer_workload_starts_with_the_same_requests():
    short = workload("azure-conv", 60.0, seed=4)
    long = workload("azure-conv", 180.0, seed=4)
    assert long.requests[: len(short.requests)] == short.requests
    assert np.array_equal(long.arrival_s[: len(short.arrival_s)], short.arrival_s)


@pytest.mark.parametrize("trace", ["azure-conv", "azure-code", "mooncake", "servegen"])
def test_every_trace_gives_a_sorted_stream(trace):
    load = workload(trace, 60.0, seed=0)
    assert len(load.requests) > 0
    assert (np.diff(load.arrival_s) >= 0).all()
    assert load.arrival_s[0] >= 0 and load.arrival_s[-1] < 60.0
    assert len({r["id"] for r in load.requests}) == len(load.requests)


def test_unknown_trace_is_rejected():
    with pytest.raises(ValueError, match="unknown trace"):
        workload("nope", 10.0)


def test_a_predictor_object_drives_the_policies():
    from qlmio_opt.predictors import AnalyticPredictor

    load = workload("azure-conv", 16.0, seed=2)
    by_name = replay(load, World(), ReplayConfig(policies=("greedy",), predictors="analytic"))
    by_object = replay(
        load, World(), ReplayConfig(policies=("greedy",), predictors=AnalyticPredictor())
    )
    pd.testing.assert_frame_equal(
        by_name.runs["greedy"].requests, by_object.runs["greedy"].requests
    )
    with pytest.raises(ValueError, match="predictors must be"):
        ReplayConfig(predictors=42)
