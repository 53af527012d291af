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
    table = reduction_table(summary, baseline="all-cloud")
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


def test_expected_tcr_is_the_true_probability_at_the_final_node(small_replay):
    from qlmio_opt.domain.instance import Request

    load, result = small_replay
    requests = [Request(arrival_s=0.0, **body) for body in load.requests]
    model_of = {node["id"]: node["model"] for node in load.base["nodes"]}
    models = sorted(set(model_of.values()))
    prob = World().completion_prob(requests, models)
    summary = result.summary()
    for name, run in result.runs.items():
        column = [models.index(model_of[n]) for n in run.requests["node"]]
        truth = prob[np.arange(len(requests)), column]
        assert np.allclose(run.requests["completion_prob"], truth)
        assert summary.loc[name, "expected_tcr"] == pytest.approx(truth.mean())


def test_node_share_and_latency_ratio_in_the_json(small_replay):
    from qlmio_opt.simulator.output import summary_json

    _, result = small_replay
    data = summary_json(result)
    for name, run in result.runs.items():
        row = data["policies"][name]
        df = run.requests
        assert sum(row["node_share"].values()) == pytest.approx(1.0)
        assert set(row["node_share"]) == set(df["node"])
        for node, ratio in row["node_latency_ratio"].items():
            mine = df[df["node"] == node]
            assert row["node_share"][node] == pytest.approx(len(mine) / len(df))
            expected = mine["predicted_latency_s"].mean() / mine["latency_s"].mean()
            assert ratio == pytest.approx(expected)
    config = data["config"]
    assert config["engine"] is None and config["start_s"] == 0.0
    assert config["node_engines"]["cloud-0"]["scheduler"] == "chunked-prefill"


def test_engine_override_reaches_every_node_and_changes_the_service():
    chunked = workload("azure-conv", 30.0, seed=0, engine="chunked-prefill")
    serial = workload("azure-conv", 30.0, seed=0, engine="serial-prefill")
    assert all(n["engine"]["scheduler"] == "serial-prefill" for n in serial.base["nodes"])
    assert serial.requests == chunked.requests
    config = ReplayConfig(policies=("all-cloud",), observe_load=False)
    runs = {e: replay(load, World(), config) for e, load in (("c", chunked), ("s", serial))}
    assert {e.scheduler for e in runs["s"].node_engines.values()} == {"serial-prefill"}
    assert {e.scheduler for e in runs["c"].node_engines.values()} == {"chunked-prefill"}
    c, s = (runs[e].runs["all-cloud"].requests for e in ("c", "s"))
    # the same decisions (idle nodes as far as the policy knows), served differently
    assert c["node"].tolist() == s["node"].tolist()
    assert not np.allclose(c["finish_s"], s["finish_s"])
    with pytest.raises(ValueError, match='unknown engine "vllm"'):
        workload("azure-conv", 10.0, engine="vllm")


def test_a_segment_is_the_cut_of_a_longer_workload():
    full = workload("azure-conv", 300.0, seed=5)
    part = workload("azure-conv", 100.0, seed=5, start_s=200.0)
    keep = np.flatnonzero(full.arrival_s >= 200.0)
    assert part.requests == tuple(full.requests[i] for i in keep)
    assert np.allclose(part.arrival_s, full.arrival_s[keep] - 200.0)
    assert part.start_s == 200.0


def test_cli_simulate_engine_and_start(capsys):
    args = ["simulate", "--duration", "10", "--policies", "all-cloud", "--format", "json"]
    code = main([*args, "--start", "1200", "--engine", "serial-prefill"])
    assert code == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert config["start_s"] == 1200.0 and config["engine"] == "serial-prefill"
    assert {e["scheduler"] for e in config["node_engines"].values()} == {"serial-prefill"}
    assert main([*args, "--start", "80000"]) == 2
    assert "no request of azure-conv arrives in [80000, 80010) s" in capsys.readouterr().err


def test_a_replay_is_the_scheduler_driven_by_hand(monkeypatch):
    """The replay's decisions are a :class:`Scheduler`'s: a fresh Scheduler fed the same calls
    (each window's node observations, then its new requests) decides every window the same, and
    the replay sends every request where that Scheduler did."""
    import sys

    from qlmio_opt import Scheduler

    replay_module = sys.modules["qlmio_opt.simulator.replay"]

    calls: list[tuple] = []

    class Recording(Scheduler):
        def observe(self, node_id, state, now):
            calls.append(("observe", node_id, state, now))
            super().observe(node_id, state, now)

        def decide(self, requests=(), now=0.0, *, allow_deferral=True):
            requests = list(requests)
            decision = super().decide(requests, now, allow_deferral=allow_deferral)
            calls.append(("decide", requests, now, allow_deferral, decision))
            return decision

    monkeypatch.setattr(replay_module, "Scheduler", Recording)
    # 89 requests, 3 deferrals; the look-ahead changes 19 of the decisions
    load = workload("azure-conv", 40.0, seed=0, edge_capacity=0.5)
    config = ReplayConfig(window_s=2.0, policies=("greedy",), time_limit=5.0)
    run = replay(load, World(), config).runs["greedy"]
    assert any(c[0] == "observe" for c in calls)
    assert any(c[0] == "decide" and c[4].deferred for c in calls)

    by_hand = Scheduler(
        {"window_s": 2.0, **load.base}, solver="greedy", time_limit=5.0, max_deferrals=3
    )
    sent: dict[str, str] = {}
    windows = 0
    for call in calls:
        if call[0] == "observe":
            by_hand.observe(call[1], call[2], call[3])
            continue
        _, requests, now, allow, recorded = call
        mine = by_hand.decide(requests, now, allow_deferral=allow)
        assert dict(mine.dispatched) == dict(recorded.dispatched)
        assert mine.deferred == recorded.deferred
        sent.update(mine.dispatched)
        windows += 1
    assert windows == len(run.windows)
    assert dict(zip(run.requests["request"], run.requests["node"], strict=True)) == sent


def test_no_request_is_deferred_beyond_the_cap():
    load = workload("azure-conv", 30.0, seed=0, edge_capacity=0.25)
    config = ReplayConfig(window_s=2.0, policies=("greedy",), time_limit=5.0, max_deferrals=1)
    result = replay(load, World(), config)
    deferrals = result.runs["greedy"].requests["deferrals"]
    assert deferrals.max() == 1  # some request was deferred, none twice
    assert result.summary().loc["greedy", "max_deferrals"] == 1
