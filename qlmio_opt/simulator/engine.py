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


class NodeServer:
    """One node serving jobs over time; jobs may be added while it runs (see the module
    docstring). Add jobs with :meth:`add`, advance the clock with :meth:`run_until`.

    ``decode_tok_s`` is the single-stream speed with a negligible context: one step of a batch
    reading ``K`` GB of KV cache takes ``(weights_gb + K) / (decode_tok_s * weights_gb)``.
    """

    def __init__(
        self, *, concurrency: int, memory_gb: float, weights_gb: float, decode_tok_s: float
    ) -> None:
        self.concurrency = int(concurrency)
        self.memory_gb = float(memory_gb)
        self.weights_gb = float(weights_gb)
        self.bandwidth = float(decode_tok_s) * float(weights_gb)
        self.compute_s: list[float] = []
        self.tokens: list[float] = []
        self.reserve: list[float] = []
        self.read: list[float] = []
        self.arrive: list[float] = []
        self.admit_s: list[float] = []
        self.prefill_end_s: list[float] = []
        self.finish_s: list[float] = []
        self.busy_s = 0.0
        self.finished = 0
        self._arrivals: list[tuple[float, int]] = []  # heap of (arrival, job)
        self._waiting: deque[int] = deque()
        self._prefill_queue: deque[int] = deque()
        self._prefilling: int | None = None
        self._prefill_done_at = np.inf
        self._decoding: list[tuple[float, int]] = []  # heap of (token clock at finish, job)
        self._clock = 0.0  # tokens every decoding job has advanced since the start
        self._batch_kv = 0.0
        self._running = 0
        self._used = 0.0
        self.now = 0.0

    @property
    def outstanding(self) -> int:
        """Jobs added and not finished (on their way, waiting, or in service)."""
        return len(self.arrive) - self.finished

    def add(self, jobs: NodeJobs) -> np.ndarray:
        """Add jobs (arriving at or after the current time); returns their job numbers."""
        first = len(self.arrive)
        for k in range(len(jobs.arrive_s)):
            j = first + k
            if jobs.arrive_s[k] < self.now - 1e-9:
                raise ValueError("a job cannot arrive before the node's current time")
            self.arrive.append(float(jobs.arrive_s[k]))
            self.compute_s.append(float(jobs.compute_s[k]))
            self.tokens.append(float(jobs.tokens[k]))
            self.reserve.append(float(jobs.kv_reserve_gb[k]))
            self.read.append(float(jobs.kv_read_gb[k]))
            self.admit_s.append(np.nan)
            self.prefill_end_s.append(np.nan)
            self.finish_s.append(np.nan)
            heapq.heappush(self._arrivals, (self.arrive[j], j))
        return np.arange(first, len(self.arrive))

    def _step_s(self) -> float:
        return (self.weights_gb + self._batch_kv) / self.bandwidth

    def _admit_waiting(self) -> None:
        while self._waiting:
            j = self._waiting[0]
            fits = self._used + self.reserve[j] <= self.memory_gb + 1e-12
            if self._running >= self.concurrency or not (fits or self._running == 0):
                return
            self._waiting.popleft()
            self._running += 1
            self._used += self.reserve[j]
            self.admit_s[j] = self.now
            self._prefill_queue.append(j)

    def _start_prefill(self) -> None:
        if self._prefilling is None and self._prefill_queue:
            self._prefilling = self._prefill_queue.popleft()
            self._prefill_done_at = self.now + self.compute_s[self._prefilling]

    def _finish(self, j: int) -> None:
        self.finish_s[j] = self.now
        self.finished += 1
        self._batch_kv -= self.read[j]
        self._running -= 1
        self._used -= self.reserve[j]

    def run_until(self, t: float = np.inf) -> None:
        """Process every event up to time ``t`` (all of them when ``t`` is infinite)."""
        while True:
            next_arrival = self._arrivals[0][0] if self._arrivals else np.inf
            if self._prefilling is not None:
                next_done = self._prefill_done_at
            elif self._decoding:
                next_done = self.now + (self._decoding[0][0] - self._clock) * self._step_s()
            else:
                next_done = np.inf
            event = min(next_arrival, next_done)
            if event == np.inf or event > t:
                break
            if self._running > 0:
                self.busy_s += event - self.now
            if self._prefilling is None and self._decoding:
                self._clock += (event - self.now) / self._step_s()
            self.now = event
            if next_done <= next_arrival:
                if self._prefilling is not None:
                    j = self._prefilling
                    self.prefill_end_s[j] = self.now
                    self._prefilling = None
                    heapq.heappush(self._decoding, (self._clock + self.tokens[j], j))
                    self._batch_kv += self.read[j]
                else:
                    _, j = heapq.heappop(self._decoding)
                    self._finish(j)
                    # every job that reaches the same token count ends at the same instant
                    while self._decoding and self._decoding[0][0] <= self._clock + 1e-9:
                        _, k = heapq.heappop(self._decoding)
                        self._finish(k)
                    if not self._decoding:
                        self._batch_kv = 0.0
                    if self._running == 0:
                        self._used = 0.0
            else:
                _, j = heapq.heappop(self._arrivals)
                self._waiting.append(j)
            self._admit_waiting()
            self._start_prefill()
        if t != np.inf and t > self.now:
            if self._running > 0:
                self.busy_s += t - self.now
            if self._prefilling is None and self._decoding:
                self._clock += (t - self.now) / self._step_s()
            self.now = t

    def times(self, jobs: np.ndarray | None = None) -> NodeTimes:
        """Admission, prefill end and finish of ``jobs`` (default: all), and the busy time."""
        pick = slice(None) if jobs is None else jobs
        return NodeTimes(
            np.asarray(self.admit_s)[pick],
            np.asarray(self.prefill_end_s)[pick],
            np.asarray(self.finish_s)[pick],
            self.busy_s,
        )


def serve_node(
    jobs: NodeJobs,
    *,
    concurrency: int,
    memory_gb: float,
    weights_gb: float,
    decode_tok_s: float,
) -> NodeTimes:
    """Simulate one node serving ``jobs`` (given in any order) to the end."""
    n = len(jobs.arrive_s)
    server = NodeServer(
        concurrency=concurrency,
        memory_gb=memory_gb,
        weights_gb=weights_gb,
        decode_tok_s=decode_tok_s,
    )
    if n == 0:
        empty = np.zeros(0)
        return NodeTimes(empty, empty, empty, 0.0)
    # add in arrival order so that ties are served in the given order
    order = np.lexsort((np.arange(n), jobs.arrive_s))
    ids = server.add(
        NodeJobs(
            jobs.arrive_s[order],
            jobs.compute_s[order],
            jobs.tokens[order],
            jobs.kv_reserve_gb[order],
            jobs.kv_read_gb[order],
        )
    )
    server.run_until()
    times = server.times()
    out = [np.empty(n) for _ in range(3)]
    for arr, src in zip(out, (times.admit_s, times.prefill_end_s, times.finish_s), strict=True):
        arr[order] = src[ids]
    return NodeTimes(out[0], out[1], out[2], times.busy_s)
