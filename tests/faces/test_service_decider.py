"""The service with its decider in a process of its own (``qlmio-opt serve --decider process``),
over real HTTP on loopback: the same answers, refusals and metrics as the service deciding in
threads, windowing mode's wake-ups across the processes, an honest wait header, a replay through
HTTP equal to the in-process one, and no process left behind when either side ends or crashes."""

import contextlib
import functools
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from conftest import INSTANCES
from test_service import metric
from test_service import start as start_service

from qlmio_opt import Scheduler, read_instance
from qlmio_opt.client import ServiceClient, ServiceError, ServiceScheduler
from qlmio_opt.domain.errors import InputError
from qlmio_opt.faces.cli import main
from qlmio_opt.faces.service.core import Service
from qlmio_opt.faces.service.decider import service_of
from qlmio_opt.faces.service.relay import DeciderProcess
from qlmio_opt.faces.service.run import serving_in_thread
from qlmio_opt.simulator import ReplayConfig, World, replay, workload
from qlmio_opt.solvers.base import Solver

SITE = INSTANCES / "window_042.json"
SERVE = [sys.executable, "-m", "qlmio_opt.faces.cli", "serve"]

pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="reads /proc (Linux)")


@pytest.fixture(scope="module")
def site():
    return read_instance(SITE)


def decider(**options):
    """A decider process serving the bundled site (greedy unless ``options`` say otherwise)."""
    return DeciderProcess(functools.partial(service_of, SITE, **{"solver": "greedy", **options}))


def alive(pid):
    """Whether ``pid`` runs (a zombie, ended and not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until_gone(pid, timeout_s=10.0):
    ends = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < ends:
        time.sleep(0.05)
    return not alive(pid)


def children(pid):
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


# -- the same answers as the service deciding in threads -----------------------------------------


def test_calls_answer_as_the_threaded_service_does(site):
    """The same calls, relayed to a decider process and decided in threads, answer the same
    documents, states, refusals and metrics."""
    w = site.window_s
    batches = [site.requests[0:40], site.requests[40:80]]
    bodies = [
        {"requests": [r.model_dump(mode="json") for r in b], "now": w * (k + 1)}
        for k, b in enumerate(batches)
    ]
    bad = [
        ("POST", "/v1/windows", b'{"requests": [{"id": "q1",}]}'),
        ("POST", "/v1/windows", b'{"requests": [{"id": "a", "prompt_tokens": -3}]}'),
        ("POST", "/v1/nodes/mars/state", b'{"state": {}}'),
        ("POST", "/v1/completions", b'{"id": "nobody"}'),
        ("GET", "/v1/nowhere", None),
    ]

    def session(served):
        with serving_in_thread(served) as url, httpx.Client(base_url=url, timeout=30) as http:
            documents = []
            for body in bodies:
                answer = http.post("/v1/windows", json=body)
                assert answer.status_code == 200, answer.text
                timed = ("times", "solver_stats")  # wall times
                documents.append({k: v for k, v in answer.json().items() if k not in timed})
            done = next(iter(documents[0]["assignment"]))
            completed = http.post("/v1/completions", json={"id": done, "latency_s": 1.5}).json()
            refusals = [
                (a.status_code, a.json())
                for a in (http.request(m, path, content=b) for m, path, b in bad)
            ]
            state = http.get("/v1/state").json()
            health = http.get("/healthz").json()
            text = http.get("/metrics").text
        kept = [ln for ln in text.splitlines() if not ln.startswith("qlmio_decision_seconds")]
        return documents, completed, refusals, state, health, sorted(kept)

    in_threads = session(Service(Scheduler(site, solver="greedy")))
    relayed = session(decider())
    assert relayed[:5] == in_threads[:5]
    assert relayed[5] == in_threads[5]  # every metric but the decision times
    assert [status for status, _ in relayed[2]] == [400, 422, 404, 404, 404]


def test_the_first_window_equals_the_in_process_scheduler_s(site):
    requests = site.requests[:60]
    expected = Scheduler(site, solver="greedy").decide(requests, site.window_s)
    with serving_in_thread(decider()) as url, ServiceClient(url) as client:
        got = client.decide(requests, now=site.window_s)
    assert dict(got.dispatched) == dict(expected.dispatched)
    assert got.deferred == expected.deferred
    assert got.solution.objective == pytest.approx(expected.solution.objective, rel=1e-9)


def test_a_recipe_that_fails_is_the_command_line_s_error(tmp_path):
    with pytest.raises(InputError) as error:
        serving_in_thread(
            DeciderProcess(functools.partial(service_of, tmp_path / "no.json"))
        ).__enter__()
    assert f"{tmp_path / 'no.json'}: file not found" in error.value.render()


# -- faults in the decider -----------------------------------------------------------------------


class Broken(Solver):
    name = "broken"

    def solve(self, problem, *, time_limit=None, seed=0):
        raise RuntimeError("the solver fell over")


def broken_solver_service():
    """A recipe (imported by the decider process from this module): a solver that fails."""
    service = service_of(SITE, solver="greedy")
    service.scheduler.solver = Broken()
    return service


def failing_scheduler_service():
    """A recipe whose scheduler fails even for the greedy: an error nobody expected."""
    service = service_of(SITE, solver="greedy")

    def decide(*args, **kwargs):
        raise RuntimeError("the scheduler fell over")

    service.scheduler.decide = decide
    return service


def test_a_failing_solver_in_the_decider_falls_back_to_the_greedy(site):
    greedy = Scheduler(site, solver="greedy").decide(site.requests[:20], site.window_s)
    with (
        serving_in_thread(DeciderProcess(broken_solver_service)) as url,
        ServiceClient(url) as client,
    ):
        decision = client.decide(site.requests[:20], now=site.window_s)
        text = client.metrics()
    assert decision.solution.solver == "greedy"
    assert dict(decision.dispatched) == dict(greedy.dispatched)
    assert metric(text, "qlmio_fallbacks_total", reason="solver error") == 1


def test_an_unexpected_error_in_the_decider_answers_500_and_the_service_carries_on(site):
    with serving_in_thread(DeciderProcess(failing_scheduler_service)) as url:
        answer = httpx.post(f"{url}/v1/windows", json={"requests": []}, timeout=30)
        # uvicorn closes the connection of a call whose error it logged: new connections
        assert httpx.get(f"{url}/v1/state", timeout=30).status_code == 200
        text = httpx.get(f"{url}/metrics", timeout=30).text
    assert answer.status_code == 500
    assert answer.json()["message"] == (
        "internal error: RuntimeError: the scheduler fell over (a bug in qlmio-opt)"
    )
    assert metric(text, "qlmio_refused_calls_total", code="500") == 1


# -- windowing mode across the processes ---------------------------------------------------------


def single(request):
    body = request.model_dump(mode="json", exclude_unset=True)
    del body["arrival_s"]
    return body


def test_a_waiting_request_is_woken_by_its_window_in_the_decider(site):
    w = 0.3
    with (
        serving_in_thread(decider(window_s=w)) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        began = time.monotonic()
        answer = http.post("/v1/requests", json={"request": single(site.requests[0])})
        took = time.monotonic() - began
        fetched = http.get(f"/v1/requests/{site.requests[0].id}")
        waiting = http.post("/v1/requests", json={"request": single(site.requests[1]), "wait_s": 0})
        later = http.get(f"/v1/requests/{site.requests[1].id}", params={"wait_s": 10})
        text = http.get("/metrics").text
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "dispatched"
    assert took < 5.0  # woken at its window's close, not at the 10 s default wait
    assert fetched.json() == answer.json()
    assert waiting.status_code == 202 and waiting.json()["status"] == "waiting"
    assert later.status_code == 200 and later.json()["status"] == "dispatched"
    assert metric(text, "qlmio_collected_windows_total") == 2
    assert metric(text, "qlmio_single_requests_total") == 2


def test_the_mode_and_clock_refusals_come_back_from_the_decider(site):
    with serving_in_thread(decider()) as url, ServiceClient(url) as client:
        client.submit(site.requests[0], now=1.0, wait_s=0)
        with pytest.raises(ServiceError) as other_mode:
            client.decide([])
        with pytest.raises(ServiceError) as earlier:
            client.tick(0.5)
    assert other_mode.value.status == 409 and "one mode per service" in other_mode.value.message
    assert earlier.value.status == 409 and "before the previous call" in earlier.value.message


# -- the wait header -----------------------------------------------------------------------------


def test_a_window_posted_while_another_is_decided_waits_for_it(site):
    """The second of two windows sits in the socket while the first is decided: its wait is
    that time (at least the rest of the first's decision), and its latency holds its wait and
    decision."""
    requests = [r.model_dump(mode="json") for r in site.requests]
    bodies = {
        name: json.dumps({"requests": [{**r, "id": name + r["id"]} for r in requests]}).encode()
        for name in ("first", "second")
    }
    calls = {}

    def post(name, http):
        began = time.monotonic()
        answer = http.post("/v1/windows", content=bodies[name])
        calls[name] = (answer, began, time.monotonic() - began)

    with (
        serving_in_thread(decider(solver="exact", time_limit=1.0)) as url,
        httpx.Client(base_url=url, timeout=30) as a,
        httpx.Client(base_url=url, timeout=30) as b,
    ):
        first = threading.Thread(target=post, args=("first", a))
        first.start()
        time.sleep(0.2)
        post("second", b)
        first.join()
    (one, sent_one, _), (two, sent_two, latency_two) = calls["first"], calls["second"]
    assert one.status_code == two.status_code == 200
    decision_one = float(one.headers["X-Qlmio-Decision-Seconds"])
    wait_two = float(two.headers["X-Qlmio-Wait-Seconds"])
    decision_two = float(two.headers["X-Qlmio-Decision-Seconds"])
    assert decision_one > 0.3  # HiGHS on 176 requests within its 1 s
    # the client's sending times, not the server's: 50 ms for their HTTP on a loaded machine
    assert wait_two >= decision_one - (sent_two - sent_one) - 0.05
    assert wait_two + decision_two <= latency_two
    assert float(one.headers["X-Qlmio-Wait-Seconds"]) < decision_one / 2


# -- a replay through HTTP -----------------------------------------------------------------------


def rebuilt(scheduler):
    """A recipe for the decider: a scheduler like ``scheduler`` (a fresh one), from plain data."""
    return functools.partial(
        service_of,
        scheduler.site.to_dict(),
        solver="auto" if scheduler.auto else scheduler.solver,
        window_s=scheduler.window_s,
        time_limit=scheduler.time_limit,
        seed=scheduler.seed,
        max_deferrals=scheduler.max_deferrals,
        track_state=scheduler.track_state,
        look_ahead=scheduler.look_ahead,
    )


def test_a_replay_through_a_decider_process_equals_the_in_process_replay():
    load = workload("azure-conv", 40.0, seed=0, edge_capacity=0.5)
    config = ReplayConfig(window_s=2.0, policies=("greedy",), time_limit=5.0)
    expected = replay(load, World(), config).runs["greedy"]
    with contextlib.ExitStack() as servers:

        def over_http(policy, scheduler):
            url = servers.enter_context(serving_in_thread(DeciderProcess(rebuilt(scheduler))))
            client = servers.enter_context(ServiceClient(url))
            return ServiceScheduler(client, track_state=scheduler.track_state)

        got = replay(load, World(), config, scheduler_for=over_http).runs["greedy"]
    assert (expected.requests["deferrals"] > 0).any()
    pd.testing.assert_frame_equal(got.requests, expected.requests)
    timings = ["decision_s"]
    pd.testing.assert_frame_equal(
        got.windows.drop(columns=timings), expected.windows.drop(columns=timings)
    )


# -- the processes end together ------------------------------------------------------------------


def start(*args):
    """``qlmio-opt serve --decider process ARGS``: its process, address and decider process."""
    proc, url = start_service("--decider", "process", *args)
    (child,) = children(proc.pid)
    return proc, url, child


def test_sigterm_ends_the_decider_with_the_server_and_writes_the_state(tmp_path, site):
    state = tmp_path / "state.json"
    proc, url, child = start("--site", SITE, "--solver", "greedy", "--state-file", state)
    with ServiceClient(url) as client:
        client.decide(site.requests[:5], now=10.0)
    os.kill(child, signal.SIGTERM)  # a supervisor's SIGTERM to the group: the decider waits
    os.kill(child, signal.SIGINT)
    assert httpx.get(f"{url}/v1/state", timeout=5).json()["windows"] == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, proc.stderr.read()
    assert wait_until_gone(child)
    assert json.loads(state.read_text())["scheduler"]["windows"] == 1


def test_a_killed_server_takes_its_decider_with_it():
    proc, url, child = start("--site", SITE, "--solver", "greedy")
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    proc.kill()
    proc.wait(timeout=10)
    assert wait_until_gone(child)  # the socket pair's end: the decider exits by itself


def test_a_killed_decider_stops_the_server_with_exit_1(site):
    proc, _, child = start("--site", SITE, "--solver", "greedy")
    os.kill(child, signal.SIGKILL)
    assert proc.wait(timeout=15) == 1
    assert "stopped: the decider process ended" in proc.stderr.read()
    assert not alive(child)


def test_a_bad_site_exits_2_before_listening_with_a_decider_process(tmp_path, capsys):
    site = tmp_path / "site.json"
    site.write_text(json.dumps({**json.loads(SITE.read_text()), "nodes": []}))
    assert main(["serve", "--site", str(site), "--decider", "process", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert str(site) in err and "nodes" in err and "Traceback" not in err
