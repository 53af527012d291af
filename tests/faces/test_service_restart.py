"""Windowing mode across a restart with a state file: the requests posted one at a time and not
yet decided are in the file, and the restarted service decides them as the one that never
stopped would (over real HTTP on loopback)."""

import json

import pytest
from conftest import INSTANCES

from qlmio_opt import Scheduler, read_instance
from qlmio_opt.client import ServiceClient, ServiceError
from qlmio_opt.domain.errors import InputError
from qlmio_opt.faces.service.core import Service
from qlmio_opt.faces.service.run import serving_in_thread

SITE = INSTANCES / "window_042.json"


@pytest.fixture(scope="module")
def site():
    return read_instance(SITE)


def post_window(client, site, requests):
    """Post ``requests`` one at a time into window 100, on the gateway's clock."""
    w = site.window_s
    for k, request in enumerate(requests):
        answer = client.submit(request, now=(100 + 0.1 * k) * w, wait_s=0)
        assert answer["status"] == "waiting"


def test_requests_collected_before_a_restart_are_decided_after_it(site, tmp_path):
    w = site.window_s
    requests = site.requests[:6]
    ids = [r.id for r in requests]
    never_stopped = Service(Scheduler(site, solver="greedy"))
    with serving_in_thread(never_stopped) as url, ServiceClient(url) as client:
        post_window(client, site, requests)
        client.tick(101 * w)
        expected = {rid: client.answer(rid) for rid in ids}
    assert {a["status"] for a in expected.values()} == {"dispatched"}

    state = tmp_path / "state.json"
    first = Service(Scheduler(site, solver="greedy"), state_file=state)
    with serving_in_thread(first) as url, ServiceClient(url) as client:
        post_window(client, site, requests)
    again = Service(Scheduler(site, solver="greedy"), state_file=state)
    with serving_in_thread(again) as url, ServiceClient(url) as client:
        assert client.state()["collected"] == len(requests)
        waiting = client.answer(ids[0])
        assert waiting["status"] == "waiting" and waiting["arrival_s"] == 100 * w
        with pytest.raises(ServiceError) as other_mode:  # the mode survives too
            client.decide(requests[:1])
        with pytest.raises(ServiceError) as earlier:  # and so does the clock
            client.tick(100.2 * w)
        assert other_mode.value.status == earlier.value.status == 409
        client.tick(101 * w)
        got = {rid: client.answer(rid) for rid in ids}
        assert client.state()["collected"] == 0
    assert got == expected


def test_on_its_own_clock_a_restarted_service_closes_the_windows_that_waited(site, tmp_path):
    state = tmp_path / "state.json"
    request = site.requests[0]
    single = request.model_dump(mode="json", exclude_unset=True, exclude={"arrival_s"})
    body = json.dumps({"request": single, "wait_s": 0}).encode()
    first = Service(Scheduler(site, solver="greedy", window_s=1.0), state_file=state)
    first.submit_request(body)  # waits for the window closing up to 1 s later
    first.stop()  # stopped before it closes: the request is only in the state file
    assert first.request_answer(request.id)["status"] == "waiting"
    again = Service(Scheduler(site, solver="greedy", window_s=1.0), state_file=state)
    try:
        answer = again.request_answer(request.id)
        assert answer["status"] == "waiting"
        with serving_in_thread(again) as url, ServiceClient(url) as client:
            answer = client.answer(request.id, wait_s=10)
    finally:
        again.stop()
    assert answer["status"] == "dispatched" and answer["node"] in {n.id for n in site.nodes}


def test_a_malformed_windowing_state_is_refused_naming_the_file(site, tmp_path):
    state = tmp_path / "state.json"
    Service(Scheduler(site, solver="greedy"), state_file=state).save()
    data = json.loads(state.read_text())
    data["windowing"] = {"mode": "sideways"}
    state.write_text(json.dumps(data))
    with pytest.raises(InputError, match="unknown mode") as error:
        Service(Scheduler(site, solver="greedy"), state_file=state)
    assert str(state) in error.value.render()
