"""The scheduling service under load: ``qlmio-opt serve`` on loopback driven by concurrent clients,
against the in-process ``Scheduler.decide`` on the same windows in the same run.

For each window size (requests per window), a fresh ``qlmio-opt serve --solver greedy`` process
serves ``instances/window_042.json`` (7 nodes) on a free loopback port; ``--clients`` threads, each
with its own keep-alive connection, post ``--windows`` windows between them (at most
``--max-seconds`` per size). A window's requests are the site's own, cycled with fresh ids.
Reported per size, p50 and p99 over the calls, in milliseconds:

* ``latency``: a call as the client sees it (send the body, read the solution document's bytes;
  the bodies are encoded before the clients start, as the in-process call takes its requests as
  data: a gateway's own JSON encoding and decoding are not the service's; and the clients make
  their HTTP clients and open their keep-alive connections before they start together, as a
  gateway's are open: before, the first calls' times held the other clients' set-up);
* ``decision``: the scheduler's decide inside the service (header ``X-Qlmio-Decision-Seconds``);
* ``wait``: the call's wait for the scheduler while other calls held it (``X-Qlmio-Wait-Seconds``:
  one scheduler decides one window at a time; a decider process answers one call at a time);
* ``overhead`` = latency - decision - wait: HTTP, JSON both ways, validation, the state gauges,
  and with a decider process (``--decider process``) the relaying between the two processes;
* ``in-process``: ``Scheduler.decide`` on the same windows, one after another, in this process;

and the throughput (windows answered per second of wall time), the windows answered and the
service's own ``qlmio_windows_total`` at the end (every window counted, none lost). Last, two
means in milliseconds of CPU time per window, which a loaded machine stretches less than wall
times: ``cpu`` the service's (user + system of its process and its decider process, from
``/proc``, while the clients ran: its event loop, HTTP, JSON, validation, metrics and the
decisions) and ``in-process cpu`` the
in-process ``Scheduler.decide``'s. Their difference is the service's work beyond deciding only
roughly: the same decisions cost more CPU in a process whose threads keep switching, and on a
shared machine both move by tens of percent from run to run.

    python benchmarks/service_load.py [--sizes 10,100,1000] [--windows 400,200,24]
                                      [--clients 8] [--max-seconds 60]
                                      [--decider process|thread] [--http-client stdlib|httpx]

``--decider`` is ``qlmio-opt serve``'s (default: the command's own default): the windows decided
in a process of their own, or in worker threads of the serving process. ``--http-client`` is the
clients' HTTP library: the standard library's ``http.client`` (the default since the decider
process came: lighter per call, see :class:`StdlibClient`, and the clients are threads of this
one interpreter on the service's two cores) or httpx (the runs before it).

The machine's load average is printed first and last: the figures are only as quiet as it was.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from statistics import quantiles
from typing import Any

import httpx

from qlmio_opt import Scheduler, read_instance

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "instances" / "window_042.json"


def windows_of(size: int, count: int, site) -> list[list[dict]]:
    """``count`` windows of ``size`` requests: the site's requests cycled, each with a fresh id."""
    bodies = [r.model_dump(mode="json", exclude_unset=True) for r in site.requests]
    out = []
    k = 0
    for w in range(count):
        window = []
        for _ in range(size):
            window.append({**bodies[k % len(bodies)], "id": f"w{w}-r{k}"})
            k += 1
        out.append(window)
    return out


LAUNCH_WITH_SWITCH_INTERVAL = (
    "import sys; from qlmio_opt.faces.service import run; "
    "run.SWITCH_INTERVAL_S = float(sys.argv.pop(1)); "
    "from qlmio_opt.faces.cli import main; sys.exit(main())"
)
"""``qlmio-opt serve`` with its interpreter switch interval replaced (the first argument)."""


def start_service(
    *options: str, switch_interval: float | None = None
) -> tuple[subprocess.Popen, str]:
    """``qlmio-opt serve`` on the bundled site on a free loopback port, with ``options`` (and
    ``switch_interval`` instead of ``run.SWITCH_INTERVAL_S``, when given)."""
    command = [sys.executable, "-m", "qlmio_opt.faces.cli"]
    if switch_interval is not None:
        command = [sys.executable, "-c", LAUNCH_WITH_SWITCH_INTERVAL, str(switch_interval)]
    command += ["serve", "--site", str(SITE), "--port", "0", *options]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    found = re.search(r"(http://[^\s;]+)", line)
    if found is None:
        proc.kill()
        raise SystemExit(f"the service did not start: {line}{proc.stderr.read()}")
    return proc, found.group(1)


class Answer:
    """An HTTP answer as the benchmarks read it (``httpx.Response``'s names)."""

    def __init__(self, status_code: int, headers: Any, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers  # case-insensitive look-up, as httpx's
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class StdlibClient:
    """A keep-alive client on the standard library's ``http.client``: lighter than httpx (about a
    third of its CPU time per call in a one-off probe: 0.43 against 1.32 ms for a 100-request
    window, one client), which matters when the clients are threads of one interpreter sharing
    two cores with the service, as here; a gateway's HTTP stack is its own, not the service's."""

    def __init__(self, url: str) -> None:
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self._connection = http.client.HTTPConnection(host, int(port), timeout=120)

    def __enter__(self) -> StdlibClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._connection.close()

    def request(self, method: str, path: str, body: bytes | None, headers: dict) -> Answer:
        self._connection.request(method, path, body=body, headers=headers)
        answer = self._connection.getresponse()
        return Answer(answer.status, answer.headers, answer.read())

    def get(self, path: str) -> Answer:
        return self.request("GET", path, None, {})

    def post(
        self, path: str, content: bytes | None = None, headers: dict | None = None, json: Any = None
    ) -> Answer:
        if json is not None:
            content = _json_dumps(json).encode()
            headers = {**(headers or {}), "Content-Type": "application/json"}
        return self.request("POST", path, content, headers or {})


_json_dumps = json.dumps

HTTP_CLIENTS: dict[str, Callable[[str], Any]] = {
    "stdlib": StdlibClient,
    "httpx": lambda url: httpx.Client(base_url=url, timeout=120),
}
"""The clients' HTTP libraries (``--http-client``)."""

Post = Callable[[Any, int], tuple[Any, Callable[[], Any]]]


def post_from_clients(
    url: str,
    count: int,
    clients: int,
    max_seconds: float,
    post: Post,
    connect_first: bool = False,
    http_client: str = "httpx",
) -> tuple[list[Any], list[str], float]:
    """Items ``0 .. count-1`` posted from ``clients`` threads, each with its own keep-alive
    connection, until all are answered or ``max_seconds`` pass. ``post(http, k)`` sends item
    ``k`` and returns the answer and how to read its record (called only on a 200 answer).
    With ``connect_first`` every client makes its HTTP client and opens its connection (``GET
    /healthz``) before they all start together, so no call's time holds a client's set-up.
    ``http_client`` names the clients' HTTP library (:data:`HTTP_CLIENTS`). Returns the
    records, the failures and the wall time (seconds, from the start)."""
    records: list[Any] = []
    failures: list[str] = []
    lock = threading.Lock()
    next_item = iter(range(count))
    ready = threading.Barrier(clients + 1, timeout=60) if connect_first else None
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        with HTTP_CLIENTS[http_client](url) as http:
            if ready is not None:
                http.get("/healthz")
                ready.wait()
            while time.monotonic() < deadline:
                with lock:
                    k = next(next_item, None)
                if k is None:
                    return
                answer, record = post(http, k)
                with lock:
                    if answer.status_code != 200:
                        failures.append(f"{answer.status_code}: {answer.text[:200]}")
                    else:
                        records.append(record())

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    if ready is not None:
        ready.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return records, failures, time.perf_counter() - began


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` and its children (a decider process) have
    used (Linux's ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return float("nan")
    # after the command's ")": state is field 3 of proc(5), utime 14 and stime 15
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


def drive(
    url: str, windows: list[list[dict]], clients: int, max_seconds: float, http_client: str
) -> dict:
    """Post ``windows`` from ``clients`` threads; per call: latency, decision, wait (seconds)."""
    bodies = [json.dumps({"requests": window}).encode() for window in windows]
    headers = {"Content-Type": "application/json"}

    def post(http: Any, k: int) -> tuple[Any, Callable[[], Any]]:
        began = time.perf_counter()
        answer = http.post("/v1/windows", content=bodies[k], headers=headers)
        latency = time.perf_counter() - began
        return answer, lambda: (
            latency,
            float(answer.headers["X-Qlmio-Decision-Seconds"]),
            float(answer.headers["X-Qlmio-Wait-Seconds"]),
        )

    calls, failures, wall = post_from_clients(
        url, len(windows), clients, max_seconds, post, connect_first=True, http_client=http_client
    )
    counted = _metric(httpx.get(f"{url}/metrics", timeout=10).text, "qlmio_windows_total")
    return {"calls": calls, "failures": failures, "wall_s": wall, "counted": counted}


def in_process(site, windows: list[list[dict]], solver: str) -> tuple[list[float], float]:
    """``Scheduler.decide`` wall times on ``windows``, one after another, on a clock that moves
    as the service's does (real seconds since the first window), and their total CPU time."""
    scheduler = Scheduler(site, solver=solver)
    zero = time.monotonic() - site.window_s
    times = []
    cpu = 0.0
    for window in windows:
        now = time.monotonic() - zero
        start = now - site.window_s
        on_clock = [{**r, "arrival_s": start + r["arrival_s"]} for r in window]
        began, began_cpu = time.perf_counter(), time.process_time()
        scheduler.decide(on_clock, now)
        times.append(time.perf_counter() - began)
        cpu += time.process_time() - began_cpu
    return times, cpu


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} ([0-9.e+-]+)$", text, flags=re.M)
    return float(found.group(1)) if found else float("nan")


def p50_p99(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, v
    cuts = quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


def per_window(cpu_s: float, windows: int) -> str:
    return f"{1e3 * cpu_s / max(windows, 1):8.2f}"


def ms(pair: tuple[float, float]) -> str:
    return f"{1e3 * pair[0]:8.2f} {1e3 * pair[1]:8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--windows", default="400,200,24", help="Windows per size.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="Per size.")
    parser.add_argument("--solver", default="greedy")
    parser.add_argument(
        "--http-client",
        choices=tuple(HTTP_CLIENTS),
        default="stdlib",
        help="The clients' HTTP library (default: the standard library's http.client).",
    )
    parser.add_argument(
        "--decider",
        choices=("process", "thread"),
        default=None,
        help="qlmio-opt serve's --decider (default: the command's default).",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="The service's interpreter switch interval in seconds (default: the service's own, "
        "SWITCH_INTERVAL_S in qlmio_opt/faces/service/run.py).",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(c) for c in args.windows.split(",")]
    if len(counts) != len(sizes):
        raise SystemExit("--windows needs one count per size")
    site = read_instance(SITE)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"site {SITE.name}, solver {args.solver}, {args.clients} clients, {os.cpu_count()} CPUs")
    if args.switch_interval is not None:
        print(f"the service's switch interval: {args.switch_interval:g} s")
    decider = ["--decider", args.decider] if args.decider is not None else []
    print(
        f"decider: {args.decider or 'the default of qlmio-opt serve'};"
        f" clients' HTTP: {args.http_client}"
    )
    print(
        "size  windows answered counted  wall_s  win/s |  p50 ms   p99 ms: latency | decision |"
        " wait | overhead | in-process | cpu ms/window: service in-process"
    )
    for size, count in zip(sizes, counts, strict=True):
        windows = windows_of(size, count, site)
        proc, url = start_service(
            "--solver", args.solver, *decider, switch_interval=args.switch_interval
        )
        try:
            cpu_before = cpu_seconds(proc.pid)
            run = drive(url, windows, args.clients, args.max_seconds, args.http_client)
            service_cpu = cpu_seconds(proc.pid) - cpu_before
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        decided = windows[: len(run["calls"])] or windows[:1]
        local, local_cpu = in_process(site, decided, args.solver)
        calls = run["calls"]
        latency = [c[0] for c in calls]
        decision = [c[1] for c in calls]
        wait = [c[2] for c in calls]
        overhead = [c[0] - c[1] - c[2] for c in calls]
        print(
            f"{size:5d} {count:7d} {len(calls):8d} {run['counted']:7.0f} {run['wall_s']:7.1f}"
            f" {len(calls) / run['wall_s']:6.1f} | {ms(p50_p99(latency))} | {ms(p50_p99(decision))}"
            f" | {ms(p50_p99(wait))} | {ms(p50_p99(overhead))} | {ms(p50_p99(local))}"
            f" | {per_window(service_cpu, len(calls))} {per_window(local_cpu, len(decided))}"
        )
        for failure in run["failures"][:3]:
            print(f"      failed: {failure}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
