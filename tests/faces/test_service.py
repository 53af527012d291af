"""The scheduling service over real HTTP on loopback (uvicorn in a thread of the test, or
``qlmio-opt serve`` in a subprocess): every endpoint, the same messages as the command line for bad
input, the greedy fallback, SIGTERM draining, the state file across a restart, bearer tokens, and
the shipped OpenAPI schema."""

import contextlib
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from conftest import INSTANCES, SMALL

from qlmio_opt import Scheduler, read_instance
from qlmio_opt.client import ServiceClient, ServiceError, ServiceScheduler
from qlmio_opt.faces.cli import main
from qlmio_opt.faces.service.app import openapi_document
from qlmio_opt.faces.service.core import Service
from qlmio_opt.faces.service.run import bind, serving_in_thread
from qlmio_opt.simulator import ReplayConfig, World, replay, workload
from qlmio_opt.solvers.base import Solver

SITE = INSTANCES / "window_042.json"
SHIPPED_SCHEMA = Path(__file__).resolve().parents[2] / "qlmio_opt/faces/service/openapi.json"


@pytest.fixture(scope="module")
def site():
    return read_instance(SITE)


def fresh_service(site, solver="greedy", **options):
    return Service(Scheduler(site, solver=solver, **options))


def served(service):
    return serving_in_thread(service)


def metric(text, name, **labels):
    """The value of one sample of Prometheus text (0 when absent)."""
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name + (f"{{{inner}}}" if labels else "")) + r" ([0-9.e+-]+)"
    found = re.search(rf"^{pattern}$", text, flags=re.M)
    return float(found.group(1)) if found else 0.0


def without_timings(solution):
    """A solution document less what differs between two runs of the same decision: wall times
    and the window's name."""
    return {k: v for k, v in solution.items() if k not in ("times", "instance", "solver_stats")}


def assert_close(got, expected, where="solution"):
    """Equal plain data, floats within 1e-9 (relative) of each other."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), where
        for key in expected:
            assert_close(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for k, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_close(a, b, f"{where}[{k}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), where
    else:
        assert got == expected, where


# -- the first window is `qlmio-opt solve` ------------------------------------------------------


def test_the_first_window_equals_solve_on_the_same_site_and_requests(site, tmp_path, capsys):
    requests = [r.model_dump(mode="json", exclude_unset=True) for r in site.requests[:40]]
    window = tmp_path / "window.json"
    window.write_text(json.dumps({**json.loads(SITE.read_text()), "requests": requests}))
    assert main(["solve", str(window), "--solver", "greedy", "--format", "json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    with served(fresh_service(site)) as url:
        answer = httpx.post(f"{url}/v1/windows", json={"requests": requests}, timeout=30)
    assert answer.status_code == 200
    got = answer.json()
    assert got["format"] == "qlmio-opt/solution"
    assert got["assignment"] == expected["assignment"]
    assert got["deferred"] == expected["deferred"]
    assert set(got) == set(expected)
    assert_close(without_timings(got), without_timings(expected))


# -- every endpoint ---------------------------------------------------------------------------


def test_every_endpoint_through_the_client(site):
    requests = site.requests[:12]
    with served(fresh_service(site)) as url, ServiceClient(url) as client:
        assert client.health()["status"] == "ok"
        first = client.decide(requests[:8])
        assert set(first.dispatched) | set(first.deferred) == {r.id for r in requests[:8]}
        second = client.decide(requests[8:])
        done = next(iter(first.dispatched))
        client.complete(done, latency_s=1.5, output_tokens=40)
        client.complete(next(iter(second.dispatched)), completed=False)
        node = first.dispatched[next(iter(first.dispatched))]
        client.observe(node, {"running": [], "waiting": [], "kv_used_gb": 0.25})
        state = client.state()
        assert state["windows"] == 2
        assert state["nodes"][node]["kv_used_gb"] == 0.25
        assert state["nodes"][node]["running"] == 0 and state["nodes"][node]["waiting"] == 0
        text = client.metrics()
    dispatched = len(first.dispatched) + len(second.dispatched)
    assert metric(text, "qlmio_windows_total") == 2
    per_node = sum(
        metric(text, "qlmio_requests_dispatched_total", node=n.id, tier=n.tier) for n in site.nodes
    )
    assert per_node == dispatched
    assert metric(text, "qlmio_decision_seconds_count") == 2
    assert metric(text, "qlmio_predicted_latency_seconds_count") == dispatched
    assert metric(text, "qlmio_predicted_quality_count") == dispatched
    assert (
        metric(text, "qlmio_solver_status_total", solver="greedy", status="feasible")
        + metric(text, "qlmio_solver_status_total", solver="greedy", status="optimal")
        == 2
    )
    assert metric(text, "qlmio_completions_total", outcome="completed") == 1
    assert metric(text, "qlmio_completions_total", outcome="failed") == 1
    assert metric(text, "qlmio_observed_latency_seconds_sum") == 1.5
    assert metric(text, "qlmio_node_observations_total", node=node) == 1
    assert metric(text, "qlmio_deferrals_total") == len(first.deferred) + len(second.deferred)
    assert metric(text, "qlmio_pending_requests") == len(second.deferred)
    in_flight = {n.id: metric(text, "qlmio_in_flight_requests", node=n.id) for n in site.nodes}
    assert in_flight[node] == 0  # the observation replaced what was sent there
    assert 0 < sum(in_flight.values()) <= dispatched - 2


def test_http_windows_with_explicit_times_equal_the_in_process_scheduler(site):
    """A sequence of calls through HTTP decides as the same calls on a Scheduler in process."""
    window_s = site.window_s
    batches = [site.requests[0:30], site.requests[30:60], site.requests[60:90]]
    reference = Scheduler(site, solver="greedy")
    with served(fresh_service(site)) as url, ServiceClient(url) as client:
        for k, batch in enumerate(batches):
            now = window_s * (k + 1)
            on_clock = [
                r.model_copy(update={"arrival_s": now - window_s + r.arrival_s}) for r in batch
            ]
            expected = reference.decide(on_clock, now)
            got = client.decide(batch, now=now)
            assert dict(got.dispatched) == dict(expected.dispatched), k
            assert got.deferred == expected.deferred
            assert got.solution.objective == pytest.approx(expected.solution.objective, rel=1e-9)
            finished = next(iter(expected.dispatched))
            reference.complete(finished)
            client.complete(finished)


# -- bad input --------------------------------------------------------------------------------


def cli_lines(tmp_path, text, capsys):
    """What `qlmio-opt validate` prints about ``text`` as a file, less the file's name."""
    path = tmp_path / "bad.json"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    return [
        line.removeprefix(f"{path}: ") for line in err.splitlines() if line.startswith(str(path))
    ]


def bad_requests(site):
    """Two windows the instance format refuses: field by field (the first pass of validation),
    and across fields (the second, which runs once every field is valid)."""
    good = site.requests[0].model_dump(mode="json", exclude_unset=True)
    fields = [
        {**good, "id": "a", "prompt_tokens": -3},
        {**good, "id": "c", "images": [{"width": 0, "height": 5, "bytes": 9}]},
        {**good, "id": "e", "colour": "red"},
    ]
    across = [
        {**good, "id": "b", "site": "mars"},
        {**good, "id": "c", "task": "poetry"},
        {**good, "id": "d", "arrival_s": site.window_s + 1},
        {**good, "id": "d"},
    ]
    return {"fields": (fields, "prompt_tokens: must be >= 0"), "across": (across, "unknown site")}


@pytest.mark.parametrize("kind", ["fields", "across"])
def test_invalid_requests_get_the_command_line_s_messages(kind, site, tmp_path, capsys):
    requests, words = bad_requests(site)[kind]
    expected = cli_lines(
        tmp_path, json.dumps({**json.loads(SITE.read_text()), "requests": requests}), capsys
    )
    assert len(expected) >= 3
    with served(fresh_service(site)) as url:
        answer = httpx.post(f"{url}/v1/windows", json={"requests": requests}, timeout=30)
        assert answer.status_code == 422
        problem = answer.json()
        assert [f"{i['path']}: {i['message']}" for i in problem["issues"]] == expected
        assert words in problem["message"]
        # refused calls change nothing: the next window is the service's first
        assert httpx.get(f"{url}/v1/state", timeout=5).json()["windows"] == 0


def test_malformed_json_gets_the_command_line_s_message(site, tmp_path, capsys):
    text = '{"requests": [{"id": "q1",}]}'
    (expected,) = cli_lines(tmp_path, text, capsys)
    with served(fresh_service(site)) as url:
        answer = httpx.post(f"{url}/v1/windows", content=text.encode(), timeout=5)
    assert answer.status_code == 400
    assert answer.json()["message"] == f"POST /v1/windows: {expected}"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("POST", "/v1/windows", b"[1, 2]", 422, "must be an object"),
        ("POST", "/v1/windows", b'{"requests": {}}', 422, "requests: must be a list"),
        ("POST", "/v1/windows", b'{"requests": [], "now": 0.1}', 422, "now: must be >= window_s"),
        ("POST", "/v1/windows", b'{"requets": []}', 422, 'did you mean "requests"'),
        ("POST", "/v1/windows", b"\xff\xfe", 400, "not UTF-8"),
        ("POST", "/v1/windows", b"", 400, "empty"),
        ("POST", "/v1/completions", b'{"id": "nobody"}', 404, 'request "nobody" is not in flight'),
        ("POST", "/v1/completions", b'{"latency_s": -1}', 422, "id: required field is missing"),
        ("POST", "/v1/nodes/mars/state", b'{"state": {}}', 404, 'unknown node "mars"'),
        (
            "POST",
            "/v1/nodes/edge-0/state",
            b'{"state": {"running": [{"prompt_tokens": 5, "max_output_tokens": 0}]}}',
            422,
            "state.running[0].max_output_tokens: must be >= 1; got 0",
        ),
        (
            "POST",
            "/v1/nodes/edge-0/state",
            b'{"state": {"running": [{"task": "poetry", "prompt_tokens": 5, '
            b'"max_output_tokens": 9}]}}',
            422,
            'nodes[0] (node "edge-0").state.running[0].task: unknown task "poetry"',
        ),
        ("GET", "/v1/nowhere", None, 404, "Not Found"),
        ("DELETE", "/v1/windows", None, 405, "Method Not Allowed"),
    ],
)
def test_bad_calls_are_refused_and_the_service_carries_on(site, method, path, body, status, words):
    with served(fresh_service(site)) as url:
        answer = httpx.request(method, f"{url}{path}", content=body, timeout=10)
        assert answer.status_code == status, answer.text
        assert words in answer.json()["message"], answer.json()
        assert "Traceback" not in answer.text
        ok = httpx.post(f"{url}/v1/windows", json={"requests": []}, timeout=10)
        assert ok.status_code == 200
        text = httpx.get(f"{url}/metrics", timeout=5).text
        assert metric(text, "qlmio_refused_calls_total", code=str(status)) == 1


def test_a_repeated_id_and_an_earlier_time_are_refused(site):
    request = site.requests[0]
    with served(fresh_service(site)) as url, ServiceClient(url) as client:
        client.decide([request], now=10.0)
        with pytest.raises(ServiceError) as repeated:
            client.decide([request], now=12.0)
        assert repeated.value.status == 422
        assert f'request "{request.id}" is already' in repeated.value.message
        with pytest.raises(ServiceError) as earlier:
            client.decide([], now=5.0)
        assert earlier.value.status == 409 and "before the previous call" in earlier.value.message


# -- faults -----------------------------------------------------------------------------------


class Broken(Solver):
    name = "broken"

    def solve(self, problem, *, time_limit=None, seed=0):
        raise RuntimeError("the solver fell over")


def test_a_failing_solver_falls_back_to_the_greedy_and_is_counted(site):
    service = fresh_service(site)
    service.scheduler.solver = Broken()  # a solver object: solve() takes one as well as a name
    greedy = Scheduler(site, solver="greedy").decide(site.requests[:20], site.window_s)
    with served(service) as url, ServiceClient(url) as client:
        decision = client.decide(site.requests[:20], now=site.window_s)
        text = client.metrics()
    assert decision.solution.solver == "greedy"
    assert dict(decision.dispatched) == dict(greedy.dispatched)
    assert metric(text, "qlmio_fallbacks_total", reason="solver error") == 1
    assert service.scheduler.solver.name == "broken"  # put back for the next window


def test_a_time_out_answers_the_best_assignment_found_and_is_counted(site):
    # a 176-request window in a microsecond: predicting alone takes longer, no solver runs,
    # and the greedy answers with its first construction
    service = fresh_service(site, solver="exact", time_limit=1e-6)
    with served(service) as url, ServiceClient(url) as client:
        decision = client.decide(site.requests, now=site.window_s)
        text = client.metrics()
    assert decision.solution.solver == "greedy"
    assert set(decision.dispatched) | set(decision.deferred) == {r.id for r in site.requests}
    assert decision.fallback == "time limit"
    assert metric(text, "qlmio_fallbacks_total", reason="time limit") == 1
    status = decision.solution.status.value
    assert metric(text, "qlmio_solver_status_total", solver="greedy", status=status) == 1


# -- the command: SIGTERM, the state file, tokens ---------------------------------------------


SERVE = [sys.executable, "-m", "qlmio_opt.faces.cli", "serve"]


def start(*args):
    """``qlmio-opt serve --port 0 ARGS`` in a subprocess; its process and address."""
    proc = subprocess.Popen(
        [*SERVE, "--port", "0", *map(str, args)],
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stderr.readline()
    found = re.search(r"(http://[^\s;]+)", line)
    if found is None:
        proc.kill()
        pytest.fail(f"no address: {line}{proc.stderr.read()}")
    return proc, found.group(1)


def stop(proc, timeout=10.0):
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


DECIDERS = pytest.mark.parametrize("decider", ["process", "thread"])


@DECIDERS
def test_sigterm_drains_the_call_in_flight_and_exits(site, decider):
    proc, url = start(
        "--site", SITE, "--solver", "exact", "--time-limit", "3", "--decider", decider
    )
    answers, answered = [], []

    def post():
        body = {"requests": [r.model_dump(mode="json") for r in site.requests]}
        answers.append(httpx.post(f"{url}/v1/windows", json=body, timeout=30))
        answered.append(time.monotonic())

    caller = threading.Thread(target=post)
    caller.start()
    time.sleep(0.5)  # the window is being decided (HiGHS on 176 requests, up to 3 s)
    began = time.monotonic()
    code = stop(proc)
    took = time.monotonic() - began
    caller.join()
    assert code == 0, proc.stderr.read()
    assert answers[0].status_code == 200
    assert answered[0] > began  # the call was in flight when SIGTERM came
    assert set(answers[0].json()["assignment"]) | set(answers[0].json()["deferred"]) == {
        r.id for r in site.requests
    }
    assert took < 8.0
    assert "stopped" in proc.stderr.read()


@DECIDERS
def test_the_state_file_carries_the_scheduler_across_a_restart(site, tmp_path, decider):
    state = tmp_path / "state" / "service.json"
    window_s = site.window_s
    first, second = site.requests[:60], site.requests[60:120]
    reference = Scheduler(site, solver="greedy")

    def on_clock(batch, now):
        return [r.model_copy(update={"arrival_s": now - window_s + r.arrival_s}) for r in batch]

    expected_first = reference.decide(on_clock(first, 10.0), 10.0)
    done = next(iter(expected_first.dispatched))
    reference.complete(done)
    expected_second = reference.decide(on_clock(second, 10.5), 10.5)

    serve = ("--site", SITE, "--solver", "greedy", "--state-file", state, "--decider", decider)
    proc, url = start(*serve)
    try:
        with ServiceClient(url) as client:
            got = client.decide(first, now=10.0)
            assert dict(got.dispatched) == dict(expected_first.dispatched)
            client.complete(done)
            saved = json.loads(state.read_text())
            assert saved["format"] == "qlmio-opt/service-state"
    finally:
        assert stop(proc) == 0
    assert [p.name for p in state.parent.iterdir()] == ["service.json"]  # no partial file left

    proc, url = start(*serve)
    try:
        with ServiceClient(url) as client:
            assert client.state()["windows"] == 1
            got = client.decide(second, now=10.5)
    finally:
        assert stop(proc) == 0
    assert dict(got.dispatched) == dict(expected_second.dispatched)
    assert got.deferred == expected_second.deferred


def test_a_state_file_of_another_site_is_refused(tmp_path):
    state = tmp_path / "state.json"
    proc, _ = start("--site", SITE, "--solver", "greedy", "--state-file", state)
    assert stop(proc) == 0
    other = subprocess.run(
        [*SERVE, "--site", SMALL / "analytic.json", "--port", "0", "--state-file", state],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert other.returncode == 2
    assert f"{state}: site: the state was saved by a service of another site" in other.stderr
    assert "Traceback" not in other.stderr


@DECIDERS
def test_a_bearer_token_guards_every_call_but_the_health_check(site, tmp_path, decider):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    proc, url = start(
        "--site", SITE, "--solver", "greedy", "--token-file", token, "--decider", decider
    )
    try:
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        answer = httpx.post(f"{url}/v1/windows", json={}, headers=wrong, timeout=5)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        with ServiceClient(url, token="s3cret") as client:
            assert client.decide(site.requests[:3]).dispatched
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--site", "nowhere.json"], "nowhere.json: file not found"),
        (["--site", str(SITE), "--solver", "magic"], "--solver magic: unknown solver"),
        (["--site", str(SITE), "--token-file", os.devnull], "the token file is empty"),
        (["--site", str(SITE), "--port", "70000"], "must be an integer in [0, 65535]"),
    ],
)
def test_bad_serve_arguments_exit_2_before_listening(args, message, capsys):
    assert main(["serve", *args]) == 2
    assert message in capsys.readouterr().err


# -- the shipped schema -----------------------------------------------------------------------


def test_the_shipped_openapi_schema_is_the_app_s():
    shipped = json.loads(SHIPPED_SCHEMA.read_text())
    assert shipped == json.loads(json.dumps(openapi_document()))
    assert {"/v1/windows", "/v1/completions", "/v1/nodes/{node_id}/state", "/v1/state"} <= set(
        shipped["paths"]
    )
    body = shipped["paths"]["/v1/windows"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/WindowBody"
    assert "Request" in shipped["components"]["schemas"]


def test_the_listening_socket_is_tcp_so_asyncio_turns_nagle_off():
    """asyncio sets TCP_NODELAY on accepted connections only when the listening socket says
    IPPROTO_TCP; with proto 0 every keep-alive answer waited for a delayed ACK (~40 ms)."""
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


# -- the docs' examples -------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_the_service_page_s_python_blocks_run(monkeypatch, capsys):
    page = (ROOT / "docs" / "service.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert blocks
    monkeypatch.chdir(ROOT)
    for block in blocks:
        exec(compile(block, "docs/service.md", "exec"), {})  # our own page, run as documentation
    out = capsys.readouterr().out
    assert "r0000" in out
    assert out.rstrip().endswith("True")  # the replay through HTTP is the in-process one


def test_the_readme_s_serve_command_runs_as_written(tmp_path):
    """The README's `qlmio-opt serve` line, on a free port (``--port 0`` appended: the last one
    wins) from a folder holding the repository's instances: it serves, and SIGTERM stops it."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Serving over HTTP") :]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    (line,) = [ln.split("  #")[0].strip() for ln in block.splitlines() if "qlmio-opt serve" in ln]
    (tmp_path / "instances").symlink_to(ROOT / "instances")
    argv = shlex.split(line)
    assert argv[:2] == ["qlmio-opt", "serve"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "qlmio_opt.faces.cli", *argv[1:], "--port", "0"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = re.search(r"(http://[^\s;]+)", proc.stderr.readline()).group(1)
        assert httpx.get(f"{url}/healthz", timeout=5).json()["status"] == "ok"
    finally:
        assert stop(proc) == 0
    assert (tmp_path / "state.json").exists()


# -- windowing mode: requests one at a time ---------------------------------------------------


def single(request):
    """A request object as POST /v1/requests takes it: without arrival_s (the call's time)."""
    body = request.model_dump(mode="json", exclude_unset=True)
    del body["arrival_s"]
    return body


def arrivals(site, count, spacing_s):
    """``count`` of the site's requests arriving ``spacing_s`` apart from the first window's
    start (the clock's window_s), with their arrival times."""
    return [(site.window_s + k * spacing_s, r) for k, r in enumerate(site.requests[:count])]


def windowed_in_process(site, stream):
    """What the in-process Scheduler decides for ``stream`` cut into the windows
    [k w, (k + 1) w), each decided at its close: request id -> (node, deferrals)."""
    w = site.window_s
    scheduler = Scheduler(site, solver="greedy")
    by_window = {}
    for t, request in stream:
        by_window.setdefault(math.floor(t / w), []).append(
            request.model_copy(update={"arrival_s": t})
        )
    answers, deferrals = {}, {}
    k = min(by_window)
    while k <= max(by_window) or scheduler.pending:
        if by_window.get(k) or scheduler.pending:
            decision = scheduler.decide(by_window.get(k, []), (k + 1) * w)
            answers.update(
                {rid: (node, deferrals.get(rid, 0)) for rid, node in decision.dispatched.items()}
            )
            for rid in decision.deferred:
                deferrals[rid] = deferrals.get(rid, 0) + 1
        k += 1
    return answers, k * w


def windowed_over_http(site, stream, end_s):
    """The same stream posted one request at a time on the gateway's clock (without waiting),
    the clock then moved to ``end_s``; every answer, and the metrics."""
    with served(fresh_service(site)) as url, httpx.Client(base_url=url, timeout=30) as http:
        for t, request in stream:
            posted = http.post(
                "/v1/requests", json={"request": single(request), "now": t, "wait_s": 0}
            )
            assert posted.status_code == 202 and posted.json()["status"] == "waiting", posted.text
        ticked = http.post("/v1/clock", json={"now": end_s})
        assert ticked.status_code == 200 and ticked.json()["collected"] == 0
        answers = {r.id: http.get(f"/v1/requests/{r.id}").json() for _, r in stream}
        return answers, http.get("/metrics").text


def test_requests_one_at_a_time_are_decided_as_the_scheduler_decides_their_windows(site):
    stream = arrivals(site, 60, 0.05)  # ~6 windows of 0.54 s
    expected, end_s = windowed_in_process(site, stream)
    answers, text = windowed_over_http(site, stream, end_s)
    got = {rid: (a["node"], a["deferrals"]) for rid, a in answers.items()}
    assert got == expected
    assert all(a["status"] == "dispatched" for a in answers.values())
    assert {a["tier"] for a in answers.values()} <= {n.tier for n in site.nodes}
    # deterministic: the same arrivals on the same clock answer the same, predictions included
    again, _ = windowed_over_http(site, stream, end_s)
    assert again == answers
    windows = metric(text, "qlmio_windows_total")
    assert windows >= 6
    assert metric(text, "qlmio_collected_windows_total") == windows
    assert metric(text, "qlmio_single_requests_total") == 60
    assert metric(text, "qlmio_collected_requests") == 0
    assert "_created" not in text


def test_a_posted_request_waits_until_its_window_closes_then_gets_its_node(site):
    w = site.window_s
    first, second = site.requests[:2]
    with served(fresh_service(site)) as url, httpx.Client(base_url=url, timeout=30) as http:
        answers = []

        def post_and_wait():
            body = {"request": single(first), "now": w + 0.1, "wait_s": 20}
            answers.append((http.post("/v1/requests", json=body), time.monotonic()))

        caller = threading.Thread(target=post_and_wait)
        caller.start()
        while metric(http.get("/metrics").text, "qlmio_collected_requests") == 0:
            time.sleep(0.02)  # the first request is collected; its call is waiting
        closing = time.monotonic()
        # a later arrival on the gateway's clock closes the first window
        later = http.post(
            "/v1/requests", json={"request": single(second), "now": 2 * w + 0.1, "wait_s": 0}
        )
        caller.join(timeout=10)
        state = http.get("/v1/state").json()
    answer, answered = answers[0]
    assert answer.status_code == 200
    assert answer.json()["status"] == "dispatched" and answer.json()["decided_s"] == 2 * w
    assert answer.json()["node"] in {n.id for n in site.nodes}
    assert answered >= closing  # it waited for the window's close, not for its 20 s
    assert later.status_code == 202
    assert later.json()["closes_s"] == pytest.approx(3 * w)
    assert state["collected"] == 1 and state["windows"] == 1


def test_on_the_service_s_own_clock_windows_close_by_themselves(site):
    service = Service(Scheduler(site, solver="greedy", window_s=0.2))
    with served(service) as url, httpx.Client(base_url=url, timeout=30) as http:
        began = time.monotonic()
        answer = http.post("/v1/requests", json={"request": single(site.requests[0])})
        took = time.monotonic() - began
        fetched = http.get(f"/v1/requests/{site.requests[0].id}")
        text = http.get("/metrics").text
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "dispatched"
    assert answer.json()["decided_s"] > answer.json()["arrival_s"]
    assert took < 5.0  # a 0.2 s window, not the 10 s default wait
    assert fetched.json() == answer.json()
    assert metric(text, "qlmio_collected_windows_total") == 1


@pytest.mark.parametrize(
    ("calls", "status", "words"),
    [
        (
            [("POST", "/v1/requests", {"request": "ARRIVAL"})],
            422,
            "request.arrival_s: set by the service",
        ),
        (
            [("POST", "/v1/requests", {"request": "NEGATIVE"})],
            422,
            'request (request "r0000").prompt_tokens: must be >= 0',
        ),
        (
            [("POST", "/v1/requests", {"request": "OK", "wait_s": 600})],
            422,
            "wait_s: must be <= 60",
        ),
        ([("GET", "/v1/requests/nobody", None)], 404, 'request "nobody" is not known'),
        (
            [("GET", "/v1/requests/nobody?wait_s=x", None)],
            422,
            "wait_s: must be a number of seconds",
        ),
        (
            [("POST", "/v1/requests", {"request": "OK", "now": 1.0, "wait_s": 0})] * 2,
            422,
            'request "r0000" is already waiting for a window',
        ),
        (
            [
                ("POST", "/v1/windows", {"requests": []}),
                ("POST", "/v1/requests", {"request": "OK"}),
            ],
            409,
            "this service decides windows posted whole",
        ),
        (
            [
                ("POST", "/v1/requests", {"request": "OK", "now": 1.0, "wait_s": 0}),
                ("POST", "/v1/windows", {"requests": []}),
            ],
            409,
            "one mode per service",
        ),
        (
            [
                ("POST", "/v1/clock", {"now": 1.0}),
                ("POST", "/v1/requests", {"request": "OK", "wait_s": 0}),
            ],
            409,
            "on the gateway's clock",
        ),
    ],
)
def test_bad_single_requests_are_refused(site, calls, status, words):
    ok = single(site.requests[0])
    bodies = {
        "OK": ok,
        "ARRIVAL": {**ok, "arrival_s": 0.1},
        "NEGATIVE": {**ok, "prompt_tokens": -3},
    }
    with served(fresh_service(site)) as url, httpx.Client(base_url=url, timeout=30) as http:
        for method, path, body in calls:
            if body is not None and isinstance(body.get("request"), str):
                body = {**body, "request": bodies[body["request"]]}
            answer = http.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["message"], answer.json()


# -- the body size limit ----------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_with_413_and_the_service_carries_on(site):
    window = {"requests": [r.model_dump(mode="json") for r in site.requests[:40]]}
    text = json.dumps(window).encode()
    with serving_in_thread(fresh_service(site), max_body_bytes=4096) as url:
        declared = httpx.post(f"{url}/v1/windows", content=text, timeout=10)
        chunked = httpx.post(
            f"{url}/v1/windows", content=iter([text[:3000], text[3000:]]), timeout=10
        )
        ok = httpx.post(f"{url}/v1/windows", json={"requests": window["requests"][:2]}, timeout=10)
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
    for answer in (declared, chunked):
        assert answer.status_code == 413
        message = answer.json()["message"]
        assert message.startswith("POST /v1/windows: the body (")
        assert "over the service's limit of 4096 bytes" in message and "--max-body-mb" in message
    assert f"({len(text)} bytes)" in declared.json()["message"]
    assert ok.status_code == 200
    assert metric(metrics, "qlmio_refused_calls_total", code="413") == 2


# -- a replay through HTTP --------------------------------------------------------------------


def test_a_replay_through_http_equals_the_in_process_replay():
    """The simulator's replay with every window decided by the service over HTTP (its node
    observations posted too) sends every request where the in-process replay does, at the same
    times, with the same predictions and outcomes."""
    # 40 s of trace, 89 requests in 20 windows, 3 of them deferred (tests/simulator/test_replay.py)
    load = workload("azure-conv", 40.0, seed=0, edge_capacity=0.5)
    config = ReplayConfig(window_s=2.0, policies=("greedy",), time_limit=5.0)
    expected = replay(load, World(), config).runs["greedy"]
    clients = []
    with contextlib.ExitStack() as servers:

        def over_http(policy, scheduler):
            url = servers.enter_context(serving_in_thread(Service(scheduler)))
            clients.append(servers.enter_context(ServiceClient(url)))
            return ServiceScheduler(clients[-1], track_state=scheduler.track_state)

        got = replay(load, World(), config, scheduler_for=over_http).runs["greedy"]
        (client,) = clients
        text = client.metrics()
    assert (expected.requests["deferrals"] > 0).any()
    pd.testing.assert_frame_equal(got.requests, expected.requests)
    timings = ["decision_s"]
    pd.testing.assert_frame_equal(
        got.windows.drop(columns=timings), expected.windows.drop(columns=timings)
    )
    assert metric(text, "qlmio_windows_total") == len(expected.windows)
    nodes = expected.requests["node"].dropna().unique()
    assert sum(metric(text, "qlmio_node_observations_total", node=n) for n in nodes) > 0


def test_the_client_s_windowing_calls(site):
    w = site.window_s
    with served(fresh_service(site)) as url, ServiceClient(url) as client:
        waiting = client.submit(site.requests[0], now=w, wait_s=0)  # its arrival_s is dropped
        assert waiting["status"] == "waiting"
        assert waiting["closes_s"] == pytest.approx(2 * w)
        assert client.tick(2 * w) == {"time_s": 2 * w, "windows": 1, "collected": 0}
        answer = client.answer(site.requests[0].id, wait_s=1)
        with pytest.raises(ServiceError) as unknown:
            client.answer("nobody")
    assert answer["status"] == "dispatched" and answer["decided_s"] == 2 * w
    assert unknown.value.status == 404


def test_a_request_deferred_before_a_restart_is_decided_by_the_next_window_after_it(site, tmp_path):
    state = tmp_path / "state.json"
    w = site.window_s
    first = Service(Scheduler(site, solver="greedy"), state_file=state)
    with served(first) as url, ServiceClient(url) as client:
        for request in site.requests:  # all in window 100; the greedy defers one of them
            client.submit(request, now=100.5 * w, wait_s=0)
        client.tick(101 * w)
        (deferred,) = [r.id for r in site.requests if client.answer(r.id)["status"] == "waiting"]
    again = Service(Scheduler(site, solver="greedy"), state_file=state)
    with served(again) as url, ServiceClient(url) as client:
        assert client.state()["pending"] == [{"id": deferred, "deferrals": 1}]
        client.tick(102 * w)
        answer = client.answer(deferred)
    assert answer["status"] == "dispatched"
    assert answer["decided_s"] == pytest.approx(102 * w)  # not a window before the restart's


@DECIDERS
def test_sigterm_answers_a_waiting_request_whose_window_closes_during_the_drain(site, decider):
    proc, url = start(
        "--site", SITE, "--solver", "greedy", "--window-s", "1.5", "--decider", decider
    )
    answers = []

    def post():
        body = {"request": single(site.requests[0]), "wait_s": 20}
        answers.append(httpx.post(f"{url}/v1/requests", json=body, timeout=30))

    caller = threading.Thread(target=post)
    caller.start()
    while metric(httpx.get(f"{url}/metrics", timeout=5).text, "qlmio_collected_requests") == 0:
        time.sleep(0.02)  # collected: its window closes within 1.5 s
    code = stop(proc)
    caller.join()
    assert code == 0, proc.stderr.read()
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["node"] in {n.id for n in site.nodes}
