"""How the world serves what a policy dispatched: shared links, then queueing and batching nodes.

**Links.** The requests dispatched at a window's close upload at once. Each link shares its
bandwidth equally among the uploads crossing it (processor sharing); a link still busy with an
earlier window's uploads starts the new ones when it is free. A request's upload ends when its
slowest link has carried it, and it reaches its node one path RTT later.

**Nodes.** A node admits requests first come, first served while fewer than ``max_concurrency``
run and their KV-cache reservations fit its free memory (a request alone on an idle node is
always admitted). An admitted request first has its images encoded and its prompt prefilled;
prefills run one at a time and pause decoding while they run (prefill-first scheduling, as in
vLLM's default). Decoding requests advance together, one token per step; a step streams the
weights once plus every decoding request's KV cache, so it slows as the batch grows.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np


def share_link(sizes_bits: np.ndarray, bandwidth_bps: float, start_s: float) -> np.ndarray:
    """Finish times of uploads that start together on a processor-sharing link."""
    n = len(sizes_bits)
    if n == 0:
        return np.zeros(0)
    order = np.argsort(sizes_bits, kind="stable")
    sizes = sizes_bits[order]
    increments = np.diff(np.concatenate([[0.0], sizes]))
    active = n - np.arange(n)  # uploads still running during each increment
    finish_sorted = start_s + np.cumsum(increments * active) / bandwidth_bps
    finish = np.empty(n)
    finish[order] = finish_sorted
    return finish


@dataclass
class NodeJobs:
    """The requests sent to one node, in any order (arrays of equal length)."""

    arrive_s: np.ndarray
    compute_s: np.ndarray
    tokens: np.ndarray
    kv_reserve_gb: np.ndarray
    kv_read_gb: np.ndarray


@dataclass(frozen=True)
class NodeTimes:
    """When each job was admitted, finished its prefill and finished decoding."""

    admit_s: np.ndarray
    prefill_end_s: np.ndarray
    finish_s: np.ndarray
    busy_s: float


def serve_node(
    jobs: NodeJobs,
    *,
    concurrency: int,
    memory_gb: float,
    weights_gb: float,
    decode_tok_s: float,
) -> NodeTimes:
    """Simulate one node serving ``jobs`` (see the module docstring).

    ``decode_tok_s`` is the single-stream speed with a negligible context: one step of a batch
    reading ``K`` GB of KV cache takes ``(weights_gb + K) / (decode_tok_s * weights_gb)``.
    """
    n = len(jobs.arrive_s)
    admit = np.full(n, np.nan)
    prefill_end = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    if n == 0:
        return NodeTimes(admit, prefill_end, finish, 0.0)
    bandwidth = decode_tok_s * weights_gb
    order = np.lexsort((np.arange(n), jobs.arrive_s))
    arrivals = deque(int(i) for i in order)
    waiting: deque[int] = deque()
    prefill_queue: deque[int] = deque()
    prefilling: int | None = None
    prefill_done_at = np.inf
    decoding: list[tuple[float, int]] = []  # heap of (token clock at finish, job)
    clock = 0.0  # tokens every decoding job has advanced since the start
    batch_kv = 0.0
    running = 0
    used = 0.0
    now = 0.0
    busy = 0.0

    def admit_waiting() -> None:
        nonlocal running, used
        while waiting:
            j = waiting[0]
            fits = used + jobs.kv_reserve_gb[j] <= memory_gb + 1e-12
            if running >= concurrency or not (fits or running == 0):
                return
            waiting.popleft()
            running += 1
            used += jobs.kv_reserve_gb[j]
            admit[j] = now
            prefill_queue.append(j)

    def start_prefill() -> None:
        nonlocal prefilling, prefill_done_at
        if prefilling is None and prefill_queue:
            prefilling = prefill_queue.popleft()
            prefill_done_at = now + jobs.compute_s[prefilling]

    while arrivals or waiting or prefilling is not None or decoding:
        next_arrival = jobs.arrive_s[arrivals[0]] if arrivals else np.inf
        if prefilling is not None:
            next_done = prefill_done_at
        elif decoding:
            step = (weights_gb + batch_kv) / bandwidth
            next_done = now + (decoding[0][0] - clock) * step
        else:
            next_done = np.inf
        t = min(next_arrival, next_done)
        if running > 0:
            busy += t - now
        if prefilling is None and decoding:
            clock += (t - now) / ((weights_gb + batch_kv) / bandwidth)
        now = t
        if next_done <= next_arrival:
            if prefilling is not None:
                j = prefilling
                prefill_end[j] = now
                prefilling = None
                heapq.heappush(decoding, (clock + jobs.tokens[j], j))
                batch_kv += jobs.kv_read_gb[j]
            else:
                _, j = heapq.heappop(decoding)
                finish[j] = now
                batch_kv -= jobs.kv_read_gb[j]
                if not decoding:
                    batch_kv = 0.0
                running -= 1
                used -= jobs.kv_reserve_gb[j]
                # every job that reaches the same token count ends at the same instant
                while decoding and decoding[0][0] <= clock + 1e-9:
                    _, k = heapq.heappop(decoding)
                    finish[k] = now
                    batch_kv -= jobs.kv_read_gb[k]
                    running -= 1
                    used -= jobs.kv_reserve_gb[k]
                if not decoding:
                    batch_kv = 0.0
                if running == 0:
                    used = 0.0
        else:
            waiting.append(arrivals.popleft())
        admit_waiting()
        start_prefill()
    return NodeTimes(admit, prefill_end, finish, busy)
