"""The stateful Scheduler: first window = solve, deferral carried and capped, node state tracked,
observed and expired, the prefill-load estimate, and refusals."""

import json
import math

import numpy as np
import pytest
from conftest import SMALL

from qlmio_opt import InputError, Instance, NodeState, Scheduler, solve
from qlmio_opt.app.scheduler import LOAD_HALF_LIFE_S
from qlmio_opt.domain.engine_load import prefill_work_s
from qlmio_opt.domain.instance import InFlight


def site(**changes):
    """instances/small/analytic.json without its requests (toy catalog: hand-checkable)."""
    data = json.loads((SMALL / "analytic.json").read_text())
    requests = data.pop("requests")
    data.update(changes)
    return data, requests


def narrow_site(deferral_penalty_s=5.0):
    """Both access links at 1.5 Mbps in 2 s windows: 3 Mb each, so one 2 Mb request per link
    and window; deferral allowed."""
    data, requests = site()
    for link in data["network"]["links"]:
        if link["id"] != "wan":
            link["bandwidth_mbps"] = 1.5
    data["objective"] = {**data["objective"], "deferral_penalty_s": deferral_penalty_s}
    return data, requests


def same_requests(n, template):
    return [dict(template, id=f"q{i}", arrival_s=0.1 * i) for i in range(n)]


def test_the_first_window_is_the_solve_of_the_same_window():
    data, requests = site()
    scheduler = Scheduler(data, solver="exact")
    decision = scheduler.decide(requests, now=data["window_s"])
    alone = solve(Instance.from_dict({**data, "requests": requests}), "exact")
    assert decision.solution.assignment == alone.assignment
    assert decision.solution.objective == pytest.approx(alone.objective, rel=1e-9)
    assert dict(decision.dispatched) == dict(alone.assignment)
    assert decision.deferred == () and decision.fallback == ""


def test_deferred_requests_come_back_and_the_cap_ends_their_deferral():
    data, requests = narrow_site()
    scheduler = Scheduler(data, solver="exact", max_deferrals=1)
    first = scheduler.decide(same_requests(5, requests[0]), now=2.0)
    assert len(first.dispatched) == 2  # one request per access link
    assert len(first.deferred) == 3
    assert {r.id for r in scheduler.pending} == set(first.deferred)
    assert all(scheduler.deferrals(rid) == 1 for rid in first.deferred)
    # at their cap: this window may not defer, so all three go although two links carry two
    second = scheduler.decide([], now=4.0)
    assert set(second.dispatched) == set(first.deferred)
    assert second.deferred == () and scheduler.pending == ()
    assert second.fallback  # infeasible without deferral: a fallback decided it


def test_without_a_cap_in_reach_a_request_waits_for_room():
    data, requests = narrow_site()
    scheduler = Scheduler(data, solver="exact", max_deferrals=5)
    scheduler.decide(same_requests(4, requests[0]), now=2.0)
    second = scheduler.decide([], now=4.0)
    assert len(second.dispatched) == 2 and second.fallback == ""


def test_dispatched_requests_are_the_nodes_state_until_completed():
    data, requests = site()
    scheduler = Scheduler(data, solver="exact")
    decision = scheduler.decide(requests, now=2.0)
    by_node: dict[str, list[str]] = {}
    for rid, node in decision.dispatched.items():
        by_node.setdefault(node, []).append(rid)
    node, ids = next(iter(by_node.items()))
    now_state = scheduler.node_state(node, 2.0)
    assert len(now_state.waiting) == len(ids) and now_state.running == ()
    later = scheduler.node_state(node, 2.0 + data["window_s"])
    assert len(later.running) == len(ids) and later.waiting == ()
    assert all(item.output_tokens == 1 for item in later.running)
    assert scheduler.complete(ids[0]) is True
    assert scheduler.complete(ids[0]) is False
    assert len(scheduler.node_state(node, 4.0).running) == len(ids) - 1


def test_an_unreported_request_expires_at_twice_its_predicted_latency():
    data, requests = site()
    scheduler = Scheduler(data, solver="exact")
    decision = scheduler.decide(requests[:1], now=2.0)
    (choice,) = decision.solution.requests
    assert choice.node is not None and choice.latency_s is not None
    end = 2.0 + 2.0 * choice.latency_s
    assert len(scheduler.node_state(choice.node, end - 1e-6).running) == 1
    assert scheduler.node_state(choice.node, end).running == ()


def test_an_observation_replaces_what_was_sent_before_it():
    data, requests = site()
    scheduler = Scheduler(data, solver="exact")
    decision = scheduler.decide(requests, now=2.0)
    node = next(iter(decision.dispatched.values()))
    seen = NodeState(
        running=(InFlight(task="ocr", prompt_tokens=10, output_tokens=3, max_output_tokens=64),),
        kv_used_gb=0.25,
    )
    scheduler.observe(node, seen, now=3.0)
    state = scheduler.node_state(node, 3.0)
    assert state.running == seen.running and state.waiting == ()
    assert state.kv_used_gb == 0.25
    # what is sent after the observation is added on top of it (the observation stays)
    after = scheduler.decide([dict(requests[0], id="late", arrival_s=3.5)], now=4.0)
    target = after.dispatched["late"]
    waiting = scheduler.node_state(target, 4.0).waiting
    assert [w.prompt_tokens for w in waiting][-1:] == [requests[0]["prompt_tokens"]]
    assert scheduler.node_state(node, 4.0).running == seen.running


def test_the_prefill_load_is_the_work_sent_weighted_by_its_age():
    data, requests = site()
    scheduler = Scheduler(data, solver="exact")
    decision = scheduler.decide(requests[:1], now=2.0)
    node_id = decision.dispatched[requests[0]["id"]]
    inst = scheduler.site
    node = next(n for n in inst.nodes if n.id == node_id)
    model = inst.resolved_catalog.model(node.model)
    device = inst.resolved_catalog.device(node.device)
    images = sum(model.image_tokens.tokens(i["width"], i["height"]) for i in requests[0]["images"])
    item = InFlight(
        task="ocr",
        prompt_tokens=requests[0]["prompt_tokens"],
        image_tokens=images,
        max_output_tokens=64,
    )
    rate = prefill_work_s(item, model, device) * math.log(2) / LOAD_HALF_LIFE_S
    assert scheduler.node_state(node_id, 2.0).prefill_load == pytest.approx(rate)
    later = scheduler.node_state(node_id, 2.0 + LOAD_HALF_LIFE_S).prefill_load
    assert later == pytest.approx(rate / 2)
    blind = Scheduler(data, solver="exact", look_ahead=False)
    blind.decide(requests[:1], now=2.0)
    assert blind.node_state(node_id, 2.0).prefill_load is None


def test_without_state_tracking_every_window_sees_idle_nodes():
    data, requests = site()
    scheduler = Scheduler(data, solver="exact", track_state=False)
    scheduler.decide(requests, now=2.0)
    again = [dict(r, id=f"{r['id']}b", arrival_s=2.0 + r["arrival_s"]) for r in requests]
    second = scheduler.decide(again, now=4.0)
    assert all(node.state is None for node in second.instance.nodes)
    tracking = Scheduler(data, solver="exact")
    tracking.decide(requests, now=2.0)
    seen = tracking.decide(again, now=4.0).instance.nodes
    assert sum(len(n.state.running) + len(n.state.waiting) for n in seen) == len(requests)


def test_refusals_name_the_request_the_node_and_the_clock():
    data, requests = site()
    scheduler = Scheduler(data, solver="greedy")
    scheduler.decide(requests[:1], now=2.0)
    with pytest.raises(InputError, match=f'"{requests[0]["id"]}" is already in flight'):
        scheduler.decide(requests[:1], now=4.0)
    with pytest.raises(InputError, match=r"requests\[0\]"):
        scheduler.decide([{"id": "x"}], now=4.0)
    with pytest.raises(InputError, match='unknown node "nope"'):
        scheduler.observe("nope", NodeState(), now=4.0)
    with pytest.raises(ValueError, match="time order"):
        scheduler.decide([], now=1.0)
    with pytest.raises(ValueError, match="max_deferrals"):
        Scheduler(data, max_deferrals=-1)


def test_snapshot_is_plain_data():
    data, requests = site()
    scheduler = Scheduler(data, solver="greedy")
    scheduler.decide(requests, now=2.0)
    snap = json.loads(json.dumps(scheduler.snapshot(2.5)))
    assert snap["windows"] == 1
    assert set(snap["nodes"]) == {"edge-0", "cloud"}
    sent = sum(len(n["running"]) + len(n["waiting"]) for n in snap["nodes"].values())
    assert sent == len(requests)
    assert np.isfinite(snap["time_s"])
