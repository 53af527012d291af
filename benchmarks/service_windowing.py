"""The scheduling service in windowing mode under load: gateways posting one request at a time.

A ``qlmio-opt serve --solver greedy --window-s W`` process serves ``instances/window_042.json``
on a free loopback port, on its own clock; ``--clients`` threads, each with its own keep-alive
connection, post ``--requests`` requests between them, one at a time (``POST /v1/requests``,
waiting for the answer), as a gateway that routes each request when it comes. Reported, p50 and
p99 over the requests, in milliseconds:

* ``latency``: a call as the client sees it, from posting the request to reading its node;
* ``to close``: ``decided_s - arrival_s`` from the answer: the wait for the window's close on the
  service's clock, plus a window per deferral (close to a whole window: each client posts its
  next request as soon as it has its answer, just after a close, so arrivals bunch at the
  windows' starts);
* ``after close`` = latency - to close: the window's decision, waking the waiting call, HTTP;

and the share of requests deferred at least once (nobody reports completions here, so the
nodes fill up as the scheduler counts them), the requests answered per second, the requests
answered, the service's own ``qlmio_single_requests_total`` and its windows
(``qlmio_collected_windows_total``).

    python benchmarks/service_windowing.py [--requests 1000] [--clients 32] [--window-s 0.5]
                                           [--max-seconds 60]

The machine's load average is printed first and last: the figures are only as quiet as it was.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
from service_load import SITE, _metric, ms, p50_p99, post_from_clients, start_service

from qlmio_opt import read_instance


def requests_of(count: int) -> list[dict]:
    """``count`` single requests: the site's own, cycled with fresh ids, without arrival_s."""
    site = read_instance(SITE)
    bodies = [r.model_dump(mode="json", exclude_unset=True) for r in site.requests]
    out = []
    for k in range(count):
        body = {**bodies[k % len(bodies)], "id": f"s{k}"}
        del body["arrival_s"]
        out.append(body)
    return out


def drive(url: str, requests: list[dict], clients: int, max_seconds: float) -> dict:
    """Post ``requests`` one at a time from ``clients`` threads; per request: latency and the
    wait for its window's close (seconds)."""

    def post(http: httpx.Client, k: int) -> tuple[httpx.Response, Callable[[], Any]]:
        began = time.perf_counter()
        answer = http.post("/v1/requests", json={"request": requests[k], "wait_s": 20})
        latency = time.perf_counter() - began

        def record() -> tuple[float, float, int]:
            body = answer.json()
            return latency, body["decided_s"] - body["arrival_s"], body["deferrals"]

        return answer, record

    answers, failures, wall = post_from_clients(url, len(requests), clients, max_seconds, post)
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        "answers": answers,
        "failures": failures,
        "wall_s": wall,
        "counted": _metric(text, "qlmio_single_requests_total"),
        "windows": _metric(text, "qlmio_collected_windows_total"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--window-s", type=float, default=0.5)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"site {SITE.name}, solver greedy, window {args.window_s:g} s, {args.clients} clients, "
        f"{os.cpu_count()} CPUs"
    )
    proc, url = start_service("--solver", "greedy", "--window-s", str(args.window_s))
    try:
        run = drive(url, requests_of(args.requests), args.clients, args.max_seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    answers = run["answers"]
    latency = [a[0] for a in answers]
    to_close = [a[1] for a in answers]
    after = [a[0] - a[1] for a in answers]
    deferred = sum(a[2] > 0 for a in answers) / max(len(answers), 1)
    print(
        "requests answered counted windows deferred  wall_s  req/s |  p50 ms   p99 ms: latency |"
        " to close | after close"
    )
    print(
        f"{args.requests:8d} {len(answers):8d} {run['counted']:7.0f} {run['windows']:7.0f}"
        f" {deferred:8.1%} {run['wall_s']:7.1f} {len(answers) / run['wall_s']:6.1f} |"
        f" {ms(p50_p99(latency))} | {ms(p50_p99(to_close))} | {ms(p50_p99(after))}"
    )
    for failure in run["failures"][:3]:
        print(f"      failed: {failure}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
