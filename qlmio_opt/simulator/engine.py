"""How the world serves what a policy dispatched: shared links, then queueing and batching nodes.

**Links.** The requests dispatched at a window's close upload at once. Each link shares its
bandwidth equally among the uploads crossing it (processor sharing); a link still busy with an
earlier window's uploads starts the new ones when it is free. A request's upload ends when its
slowest link has carried it, and it reaches its node one path RTT later.

**Admission** (both engines). A node admits requests first come, first served while fewer than
``max_concurrency`` run and their KV-cache reservations fit its free memory (a request alone on
an idle node is always admitted). An admitted request has its images encoded and its prompt
prefilled, then decodes one token per engine step. A decode step streams the weights once plus
every decoding request's KV cache, ``T_mem = (weights_gb + sum kv_read_gb) / bandwidth`` with
``bandwidth = decode_tok_s * weights_gb``, so it slows as the batch grows (decoding is
memory-bound).

**Serial prefill** (:class:`NodeServer`, vLLM v0's prefill-first scheduling). Prefills (vision
encoding and prompt) run one at a time, each taking its stand-alone ``compute_s``, and pause
decoding while they run.

**Chunked prefill** (:class:`ChunkedPrefillServer`, vLLM V1's and SGLang's default; Agrawal et
al., "Taming Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve", OSDI 2024). Each
step batches one token of every decoding request (``D`` of them) plus up to ``B - D`` prompt
tokens of the admitted requests still prefilling, first come first served; ``B`` is the engine's
token budget (vLLM's ``max_num_batched_tokens``). A request's prompt tokens are its text and
image tokens on the node; its stand-alone prefill work ``compute_s`` (vision + prefill) is spread
evenly over them, so a token of request ``i`` costs ``c_i = compute_s_i / tokens_i`` seconds of
compute, and a decode token ``1 / prefill_tok_s``. A step carrying ``P`` prompt tokens of request
``h`` takes the roofline of its two parts::

    T_step = max(T_mem, P * c_h + D / prefill_tok_s)

and a step without prompt tokens takes ``T_mem``. When the decoders alone fill the budget
(``D = B``), no prompt token is scheduled until one of them ends (a prefill needs ``D < B``, so
``D`` never exceeds ``B``).

Both engines are simulated event by event (an arrival, a prefill's end, a decode's end), not
step by step: between two events the decoders and the prefilling request at the head of the
queue are fixed, so the step time is constant and the time to the next event follows in closed
form. Steps are fluid: a prompt shorter than the free budget is charged its share of a step, not
a whole one (an error of at most one decode step per request).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np

from qlmio_opt.domain.instance import ENGINE_SCHEDULERS


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
    """The requests sent to one node, in any order (arrays of equal length).

    ``prompt_tokens`` (text) and ``image_tokens`` (on the node's model) are what the chunked
    engine spreads each prefill over and what :meth:`NodeServer.observe` reports; the serial
    engine runs without them.
    """

    arrive_s: np.ndarray
    compute_s: np.ndarray
    tokens: np.ndarray
    kv_reserve_gb: np.ndarray
    kv_read_gb: np.ndarray
    prompt_tokens: np.ndarray | None = None
    image_tokens: np.ndarray | None = None


@dataclass(frozen=True)
class NodeTimes:
    """When each job was admitted, finished its prefill and finished decoding."""

    admit_s: np.ndarray
    prefill_end_s: np.ndarray
    finish_s: np.ndarray
    busy_s: float


@dataclass(frozen=True)
class JobView:
    """A job as the node's engine and the gateway that sent it know it: its prompt, and the
    output tokens streamed so far (not how many remain)."""

    job: int
    prompt_tokens: int
    image_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class NodeObservation:
    """What a node's metrics and its gateway's records show at ``time_s``.

    Attributes
    ----------
    running
        Admitted jobs (prefilling or decoding), in order of admission.
    waiting
        Jobs at the node queued for admission, first come first served.
    in_transit
        Jobs dispatched to the node that have not reached it yet, in order of dispatch.
    kv_used_gb
        KV-cache memory the running jobs hold (this world's engines reserve a job's full output
        allowance at admission, so that is what is in use).
    """

    time_s: float
    running: tuple[JobView, ...]
    waiting: tuple[JobView, ...]
    in_transit: tuple[JobView, ...]
    kv_used_gb: float


class NodeServer:
    """One node with the serial-prefill engine, serving jobs over time; jobs may be added while
    it runs (see the module docstring). Add jobs with :meth:`add`, advance the clock with
    :meth:`run_until`, read its state with :meth:`observe`.

    ``decode_tok_s`` is the single-stream speed with a negligible context: one step of a batch
    reading ``K`` GB of KV cache takes ``(weights_gb + K) / (decode_tok_s * weights_gb)``.
    """

    scheduler = "serial-prefill"

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
        self.prompt_tokens: list[int] = []  # -1: not given
        self.image_tokens: list[int] = []
        self.observable = True  # every job came with its prompt and image tokens
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
        self._decode_from: dict[int, float] = {}  # token clock when each decoding job began
        self._admitted: dict[int, None] = {}  # running jobs, in order of admission
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
        n = len(jobs.arrive_s)
        prompt = _counts(jobs.prompt_tokens, n)
        image = _counts(jobs.image_tokens, n)
        if n and (jobs.prompt_tokens is None or jobs.image_tokens is None):
            self.observable = False
        for k in range(n):
            j = first + k
            if jobs.arrive_s[k] < self.now - 1e-9:
                raise ValueError("a job cannot arrive before the node's current time")
            self.arrive.append(float(jobs.arrive_s[k]))
            self.compute_s.append(float(jobs.compute_s[k]))
            self.tokens.append(float(jobs.tokens[k]))
            self.reserve.append(float(jobs.kv_reserve_gb[k]))
            self.read.append(float(jobs.kv_read_gb[k]))
            self.prompt_tokens.append(prompt[k])
            self.image_tokens.append(image[k])
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
            self._admitted[j] = None
            self._prefill_queue.append(j)

    def _start_prefill(self) -> None:
        if self._prefilling is None and self._prefill_queue:
            self._prefilling = self._prefill_queue.popleft()
            self._prefill_done_at = self.now + self.compute_s[self._prefilling]

    def _arrive_next(self) -> None:
        """The next job in transit reaches the node and queues for admission."""
        _, j = heapq.heappop(self._arrivals)
        self._waiting.append(j)

    def _end_prefill(self, j: int) -> None:
        """The prefilling job ``j`` starts decoding."""
        self.prefill_end_s[j] = self.now
        self._prefilling = None
        heapq.heappush(self._decoding, (self._clock + self.tokens[j], j))
        self._decode_from[j] = self._clock
        self._batch_kv += self.read[j]

    def _end_decodes(self) -> None:
        """The first decoding job finishes, with every job at the same token count."""
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

    def _finish(self, j: int) -> None:
        self.finish_s[j] = self.now
        self.finished += 1
        self._batch_kv -= self.read[j]
        self._running -= 1
        self._used -= self.reserve[j]
        del self._admitted[j]
        del self._decode_from[j]

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
                    self._end_prefill(self._prefilling)
                else:
                    self._end_decodes()
            else:
                self._arrive_next()
            self._admit_waiting()
            self._start_prefill()
        if t != np.inf and t > self.now:
            if self._running > 0:
                self.busy_s += t - self.now
            if self._prefilling is None and self._decoding:
                self._clock += (t - self.now) / self._step_s()
            self.now = t

    def observe(self, now: float) -> NodeObservation:
        """Run to ``now`` and report what the node's engine and gateway know there (see
        :class:`NodeObservation`); never a job's true output length."""
        if now < self.now - 1e-9:
            raise ValueError(f"cannot observe the node at {now} s: its clock is at {self.now} s")
        if not self.observable:
            raise ValueError("jobs added without prompt_tokens and image_tokens cannot be observed")
        self.run_until(now)
        return NodeObservation(
            time_s=float(now),
            running=tuple(self._view(j) for j in self._admitted),
            waiting=tuple(self._view(j) for j in self._waiting),
            in_transit=tuple(self._view(j) for j in sorted(j for _, j in self._arrivals)),
            kv_used_gb=max(self._used, 0.0),
        )

    def _view(self, j: int) -> JobView:
        return JobView(j, self.prompt_tokens[j], self.image_tokens[j], self._generated(j))

    def _generated(self, j: int) -> int:
        """Output tokens job ``j`` has streamed (0 before it decodes)."""
        start = self._decode_from.get(j)
        if start is None:
            return 0
        done = int(np.floor(self._clock - start + 1e-9))
        # still running, so short of its last token (guards the clock's rounding)
        return min(max(done, 0), int(self.tokens[j]) - 1)

    def times(self, jobs: np.ndarray | None = None) -> NodeTimes:
        """Admission, prefill end and finish of ``jobs`` (default: all), and the busy time."""
        pick = slice(None) if jobs is None else jobs
        return NodeTimes(
            np.asarray(self.admit_s)[pick],
            np.asarray(self.prefill_end_s)[pick],
            np.asarray(self.finish_s)[pick],
            self.busy_s,
        )


def _counts(values: np.ndarray | None, n: int) -> list[int]:
    """Token counts as plain ints (``-1`` each when not given)."""
    if values is None:
        return [-1] * n
    return [int(v) for v in values]


class ChunkedPrefillServer(NodeServer):
    """One node with the chunked-prefill engine (see the module docstring); the same admission,
    interface and observation as :class:`NodeServer`.

    Parameters
    ----------
    prefill_tok_s
        The device's prompt tokens per second: a decode token in a mixed step costs
        ``1 / prefill_tok_s`` of compute.
    max_batched_tokens
        The token budget ``B`` of one step.
    """

    scheduler = "chunked-prefill"

    def __init__(
        self,
        *,
        concurrency: int,
        memory_gb: float,
        weights_gb: float,
        decode_tok_s: float,
        prefill_tok_s: float,
        max_batched_tokens: int,
    ) -> None:
        super().__init__(
            concurrency=concurrency,
            memory_gb=memory_gb,
            weights_gb=weights_gb,
            decode_tok_s=decode_tok_s,
        )
        if not prefill_tok_s > 0:
            raise ValueError(f"prefill_tok_s must be > 0; got {prefill_tok_s}")
        if not max_batched_tokens >= 1:
            raise ValueError(f"max_batched_tokens must be >= 1; got {max_batched_tokens}")
        self.prefill_tok_s = float(prefill_tok_s)
        self.budget = int(max_batched_tokens)
        self._cost: list[float] = []  # compute seconds per prompt token of each job
        self._head_left = 0.0  # prompt tokens the prefilling job still has

    def add(self, jobs: NodeJobs) -> np.ndarray:
        """Add jobs (arriving at or after the current time; with their prompt and image
        tokens); returns their job numbers."""
        if jobs.prompt_tokens is None or jobs.image_tokens is None:
            raise ValueError("the chunked-prefill engine needs each job's prompt and image tokens")
        ids = super().add(jobs)
        for j in ids:
            total = self.prompt_tokens[j] + self.image_tokens[j]
            self._cost.append(self.compute_s[j] / total if total > 0 else 0.0)
        return ids

    def _start_prefill(self) -> None:
        if self._prefilling is None and self._prefill_queue:
            j = self._prefill_queue.popleft()
            self._prefilling = j
            self._head_left = float(self.prompt_tokens[j] + self.image_tokens[j])

    def _step(self) -> tuple[float, float]:
        """The current step's time and prompt tokens."""
        decoders = len(self._decoding)
        mem_s = self._step_s()
        head = self._prefilling
        chunk = max(self.budget - decoders, 0)
        if head is None or chunk == 0:
            return mem_s, 0.0
        work_s = chunk * self._cost[head] + decoders / self.prefill_tok_s
        return max(mem_s, work_s), float(chunk)

    def _advance(self, t: float, step_s: float, chunk: float) -> None:
        """Move the clock to ``t`` at the current step."""
        elapsed = t - self.now
        if self._running > 0:
            self.busy_s += elapsed
        if self._decoding:
            self._clock += elapsed / step_s
        if chunk > 0:
            self._head_left -= elapsed / step_s * chunk
        self.now = t

    def run_until(self, t: float = np.inf) -> None:
        """Process every event up to time ``t`` (all of them when ``t`` is infinite)."""
        while True:
            step_s, chunk = self._step()
            next_arrival = self._arrivals[0][0] if self._arrivals else np.inf
            next_prefill = np.inf
            if chunk > 0:
                next_prefill = self.now + max(self._head_left, 0.0) / chunk * step_s
            next_decode = np.inf
            if self._decoding:
                next_decode = self.now + (self._decoding[0][0] - self._clock) * step_s
            event = min(next_arrival, next_prefill, next_decode)
            if event == np.inf or event > t:
                break
            self._advance(max(event, self.now), step_s, chunk)
            if next_prefill == event and self._prefilling is not None:
                self._head_left = 0.0
                self._end_prefill(self._prefilling)
            elif next_decode == event:
                self._end_decodes()
            else:
                self._arrive_next()
            self._admit_waiting()
            self._start_prefill()
        if t != np.inf and t > self.now:
            self._advance(t, *self._step())


def node_server(
    scheduler: str,
    *,
    concurrency: int,
    memory_gb: float,
    weights_gb: float,
    decode_tok_s: float,
    prefill_tok_s: float | None = None,
    max_batched_tokens: int | None = None,
) -> NodeServer:
    """A node with the ``scheduler`` engine (``"serial-prefill"`` or ``"chunked-prefill"``,
    which also needs ``prefill_tok_s`` and ``max_batched_tokens``)."""
    if scheduler == "serial-prefill":
        return NodeServer(
            concurrency=concurrency,
            memory_gb=memory_gb,
            weights_gb=weights_gb,
            decode_tok_s=decode_tok_s,
        )
    if scheduler == "chunked-prefill":
        if prefill_tok_s is None or max_batched_tokens is None:
            raise ValueError(
                "the chunked-prefill engine needs prefill_tok_s and max_batched_tokens"
            )
        return ChunkedPrefillServer(
            concurrency=concurrency,
            memory_gb=memory_gb,
            weights_gb=weights_gb,
            decode_tok_s=decode_tok_s,
            prefill_tok_s=prefill_tok_s,
            max_batched_tokens=max_batched_tokens,
        )
    raise ValueError(
        f'unknown engine scheduler "{scheduler}"; choose from {", ".join(ENGINE_SCHEDULERS)}'
    )


def serve_node(
    jobs: NodeJobs,
    *,
    concurrency: int,
    memory_gb: float,
    weights_gb: float,
    decode_tok_s: float,
    scheduler: str = "serial-prefill",
    prefill_tok_s: float | None = None,
    max_batched_tokens: int | None = None,
) -> NodeTimes:
    """Simulate one node serving ``jobs`` (given in any order) to the end with the
    ``scheduler`` engine (see :func:`node_server`)."""
    n = len(jobs.arrive_s)
    server = node_server(
        scheduler,
        concurrency=concurrency,
        memory_gb=memory_gb,
        weights_gb=weights_gb,
        decode_tok_s=decode_tok_s,
        prefill_tok_s=prefill_tok_s,
        max_batched_tokens=max_batched_tokens,
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
            None if jobs.prompt_tokens is None else jobs.prompt_tokens[order],
            None if jobs.image_tokens is None else jobs.image_tokens[order],
        )
    )
    server.run_until()
    times = server.times()
    out = [np.empty(n) for _ in range(3)]
    for arr, src in zip(out, (times.admit_s, times.prefill_end_s, times.finish_s), strict=True):
        arr[order] = src[ids]
    return NodeTimes(out[0], out[1], out[2], times.busy_s)
