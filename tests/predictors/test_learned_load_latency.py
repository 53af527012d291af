"""The latency model under load (predictors/learned_load_latency.py): its state features, the
engine-aware analytic latency it corrects (the formulation's, one implementation), the bound,
the off-support guard and its report, exactness in the formulation, and its files."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pytest
from shared_fits import load_latency_model, state_bench

from qlmio_opt.app.solve import solve
from qlmio_opt.domain.instance import Instance, NodeState
from qlmio_opt.domain.scenarios.generate import get_scenario
from qlmio_opt.formulations import build_problem
from qlmio_opt.predictors import DEFAULT_LEARNED, get_predictor
from qlmio_opt.predictors.analytic import AnalyticPredictor
from qlmio_opt.predictors.learned import LearnedPredictor
from qlmio_opt.predictors.learned_load_latency import (
    STATE_FEATURES,
    LoadLatencyModel,
    state_features,
    table_rows,
)
from qlmio_opt.simulator.dataset import draw_bench_requests

STATE = {
    "running": [
        {"prompt_tokens": 100, "image_tokens": 50, "max_output_tokens": 100},
        {"prompt_tokens": 200, "output_tokens": 30, "max_output_tokens": 100},
    ],
    "waiting": [{"prompt_tokens": 300, "image_tokens": 100, "max_output_tokens": 100}],
    "kv_used_gb": 0.5,
    "prefill_load": 0.25,
}


def test_state_features_by_hand():
    got = dict(zip(STATE_FEATURES, state_features(NodeState.model_validate(STATE)), strict=True))
    assert got == {
        "n_running": 2,
        "n_prefilling": 1,  # the one with no output yet
        "n_waiting": 1,
        "running_input_tokens": 150 + 200,
        "running_output_tokens": 30,
        "waiting_input_tokens": 400,
        "kv_used_gb": 0.5,
        "prefill_load": 0.25,
    }
    assert state_features(None) == (0.0,) * len(STATE_FEATURES)


def _row_instance(row: Any, body: Any, state: NodeState | None = None) -> Instance:
    """One request on one node as the state table's row has it (its path, wait and state)."""
    data = state_bench()
    node = next(n for n in data.nodes if n.id == row["node"])
    node_json = node.model_dump(mode="json", exclude_unset=True)
    node_json["engine"] = {"scheduler": row["engine"]}
    node_json["state"] = json.loads(row["state_json"]) if state is None else state.model_dump()
    request = body.model_dump(mode="json", exclude_unset=True)
    request["arrival_s"] = row["window_s"] - row["wait_s"]
    link = {"id": "l", "from": "s0", "to": node.id}
    link |= {"bandwidth_mbps": row["bandwidth_mbps"], "rtt_ms": row["rtt_ms"]}
    return Instance.from_dict(
        {
            "format": "qlmio-opt/instance",
            "version": 1,
            "name": "row",
            "window_s": row["window_s"],
            "nodes": [node_json],
            "network": {"sites": ["s0"], "links": [link]},
            "requests": [request],
        }
    )


def _bodies() -> dict[str, Any]:
    data = state_bench()
    return {r.id: r for r in draw_bench_requests(get_scenario("default"), 30, data.seed)}


def test_the_table_and_the_formulation_agree_on_the_engine_aware_analytic_latency():
    """A row's engine-aware analytic latency (table path) is what the formulation predicts for
    the same request on the same node in the same state with the analytic predictor."""
    table = state_bench().table
    picked = table[table["load_level"] != "idle"].iloc[::97].head(6)
    assert len(picked) == 6
    analytic = table_rows(picked).analytic_s
    bodies = _bodies()
    for k, (_, row) in enumerate(picked.iterrows()):
        instance = _row_instance(row, bodies[row["request"]])
        problem = build_problem(instance, AnalyticPredictor().fit().predict(instance))
        assert problem.latency_s[0, 0] == pytest.approx(analytic[k], rel=1e-9)


def test_the_correction_is_bounded():
    model = load_latency_model()
    table = state_bench().table
    pred = model.predict_table(table, guard=False)
    ratio = pred["latency_s"] / pred["analytic_s"]
    bound = math.exp(model.max_log_ratio)
    assert np.all(ratio <= bound * (1 + 1e-12)) and np.all(ratio >= 1 / bound * (1 - 1e-12))
    tight = copy.copy(model)
    tight.max_log_ratio = 0.01
    ratio = tight.predict_table(table, guard=False)["latency_s"] / pred["analytic_s"]
    assert np.all(np.abs(np.log(ratio)) <= 0.01 + 1e-12)


def test_the_guard_keeps_unseen_pairs_engines_and_states_analytic():
    table = state_bench().table
    seen_nodes = sorted(table["node"].unique())[:-2]
    train = table[table["node"].isin(seen_nodes) & (table["engine"] == "chunked-prefill")]
    model = LoadLatencyModel(max_iter=10, min_samples_leaf=10).fit(train)
    pred = model.predict_table(table)
    unseen_pair = ~table["node"].isin(seen_nodes).to_numpy()
    unseen_engine = ~unseen_pair & (table["engine"] == "serial-prefill").to_numpy()
    assert np.all(pred["guard"][unseen_pair] == "unseen_pair")
    assert np.all(pred["guard"][unseen_engine] == "unseen_engine")
    off = pred["guard"] != ""
    np.testing.assert_array_equal(pred["latency_s"][off], pred["analytic_s"][off])
    np.testing.assert_allclose(
        pred["latency_p90_s"][off], pred["analytic_s"][off] * math.exp(model.analytic_p90_offset_)
    )
    # the training rows are inside by construction; a state beyond the busiest seen is not
    inside = model.predict_table(train[train["split"] == "train"])["guard"]
    assert np.all(inside == "")
    row = train.iloc[[0]].copy()
    state = json.loads(row["state_json"].iloc[0])
    state["waiting"] = [{"prompt_tokens": 500, "max_output_tokens": 64}] * 400
    row["state_json"] = json.dumps(state)
    assert model.predict_table(row)["guard"][0] == "state"


def _busy_window() -> Instance:
    """Two bench requests on every state-table node, each node in a busy state of its own."""
    data = state_bench()
    table = data.table
    bodies = list(_bodies().values())[:2]
    nodes = []
    for node in data.nodes:
        spec = node.model_dump(mode="json", exclude_unset=True)
        rows = table[(table["node"] == node.id) & (table["load_level"] == "busy")]
        rows = rows[rows["engine"] == "chunked-prefill"]
        if len(rows):
            spec["state"] = json.loads(rows["state_json"].iloc[0])
        nodes.append(spec)
    links = [
        {"id": f"l{j}", "from": "s0", "to": n["id"], "bandwidth_mbps": 200.0, "rtt_ms": 10.0}
        for j, n in enumerate(nodes)
    ]
    return Instance.from_dict(
        {
            "format": "qlmio-opt/instance",
            "version": 1,
            "name": "busy",
            "window_s": 2.0,
            "nodes": nodes,
            "network": {"sites": ["s0"], "links": links},
            "requests": [b.model_dump(mode="json", exclude_unset=True) for b in bodies],
        }
    )


def test_the_formulation_uses_the_learned_latency_exactly():
    instance = _busy_window()
    model = load_latency_model()
    predictor = LearnedPredictor(DEFAULT_LEARNED, load_latency=model).fit()
    predictions = predictor.predict(instance)
    problem = build_problem(instance, predictions)
    base = AnalyticPredictor().fit().predict(instance)
    adjusted, report = model.adjust(instance, base)
    analytic_problem = build_problem(instance, base)
    # analytic + correction, completed by the formulation's state term, is the learned latency
    correction = adjusted.components["load_correction_s"]
    np.testing.assert_allclose(problem.latency_s, analytic_problem.latency_s + correction)
    assert np.any(np.abs(correction) > 1e-3)  # the model does correct something here
    assert report["latency_load_learned_pairs"] == len(instance.requests) * len(instance.nodes)
    assert predictions.report == report


def test_the_solution_reports_pairs_kept_analytic():
    instance = _busy_window()
    table = state_bench().table
    seen = sorted(table["node"].unique())[:4]
    model = LoadLatencyModel(max_iter=10, min_samples_leaf=10).fit(table[table["node"].isin(seen)])
    predictor = LearnedPredictor(DEFAULT_LEARNED, load_latency=model).fit()
    solution = solve(instance, "greedy", predictors=predictor)
    stats = solution.solver_stats
    pairs = len(instance.requests) * len(instance.nodes)
    learned = stats["predictor.latency_load_learned_pairs"]
    unseen = stats["predictor.latency_load_fallback_unseen_pair"]
    assert learned == 2 * len(seen) and unseen == pairs - learned


def test_save_and_load_give_the_same_predictions(tmp_path):
    model = load_latency_model()
    json_path, _ = model.save(tmp_path / "m")
    loaded = LoadLatencyModel.load(json_path)
    table = state_bench().table
    a, b = model.predict_table(table), loaded.predict_table(table)
    for key in ("latency_s", "latency_p90_s", "analytic_s"):
        np.testing.assert_array_equal(a[key], b[key])
    assert loaded.support_ == model.support_
    assert json.loads(json_path.read_text())["format"] == "qlmio-opt/learned-load-latency"


def test_a_latency_model_under_load_is_found_beside_its_quality_model(tmp_path):
    for src in DEFAULT_LEARNED.parent.glob("default*"):
        (tmp_path / src.name).write_bytes(src.read_bytes())
    plain = LearnedPredictor(tmp_path / "default.json").fit()
    assert plain.load_latency_ is None
    load_latency_model().save(tmp_path / "default-load-latency")
    found = LearnedPredictor(tmp_path / "default.json").fit()
    assert isinstance(found.load_latency_, LoadLatencyModel)
    off = LearnedPredictor(tmp_path / "default.json", load_latency=False).fit()
    assert off.load_latency_ is None


def test_the_shipped_learned_predictor_has_no_latency_model_under_load():
    assert get_predictor("learned").load_latency_ is None
