"""Scheduler.state_dict / load_state: a scheduler restored from another's state decides as the
other one does, and malformed state is refused without changing anything."""

import json

import pytest
from conftest import SMALL

from qlmio_opt import InputError, Scheduler


def narrow_site():
    """instances/small/analytic.json with 1.5 Mbps access links and deferral allowed: windows
    defer, so the state holds pending requests as well as dispatched ones."""
    data = json.loads((SMALL / "analytic.json").read_text())
    requests = data.pop("requests")
    for link in data["network"]["links"]:
        if link["id"] != "wan":
            link["bandwidth_mbps"] = 1.5
    data["objective"] = {**data["objective"], "deferral_penalty_s": 5.0}
    return data, requests


def burst(template, start, n):
    return [dict(template, id=f"q{start + i}", arrival_s=0.1 * i) for i in range(n)]


def test_a_restored_scheduler_decides_as_the_original():
    data, requests = narrow_site()
    original = Scheduler(data, solver="greedy")
    first = original.decide(burst(requests[0], 0, 5), now=2.0)
    assert len(first.dispatched) == 2
    assert original.complete(next(iter(first.dispatched)))  # the other one stays in flight
    # observed before the window: the record keeps what was sent at 2.0 on top of it
    original.observe(data["nodes"][0]["id"], {"running": [], "kv_used_gb": 0.5}, now=1.5)
    saved = json.loads(json.dumps(original.state_dict()))  # through JSON, as the file holds it
    assert saved["pending"], "the state holds deferred requests"
    assert any(node["sent"] for node in saved["nodes"].values())

    restored = Scheduler(data, solver="greedy")
    restored.load_state(saved)
    assert restored.snapshot(3.0) == original.snapshot(3.0)
    assert restored.state_dict() == original.state_dict()
    later = [dict(requests[1], id="late", arrival_s=4.1)]
    a = original.decide(later, now=4.0 + 2.0)
    b = restored.decide(later, now=4.0 + 2.0)
    assert a.solution.assignment == b.solution.assignment
    assert a.deferred == b.deferred
    assert restored.state_dict() == original.state_dict()
    with pytest.raises(ValueError, match="time order"):
        restored.decide([], now=1.0)  # the restored clock holds


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.pop("pending"),
        lambda s: s.update(nodes={"nowhere": next(iter(s["nodes"].values()))}),
        lambda s: s["pending"].append({"request": {"id": "x"}, "deferrals": 0}),
    ],
    ids=["missing key", "other site", "invalid request"],
)
def test_malformed_state_is_refused_and_changes_nothing(change):
    data, requests = narrow_site()
    scheduler = Scheduler(data, solver="greedy")
    scheduler.decide(burst(requests[0], 0, 5), now=2.0)
    before = scheduler.state_dict()
    bad = json.loads(json.dumps(before))
    change(bad)
    with pytest.raises(InputError, match="state"):
        scheduler.load_state(bad)
    assert scheduler.state_dict() == before
