"""Re-simulating a row of the state table with its observed state kept and its hidden part
redrawn: the conditional spread of a row's latency given what a scheduler sees.

A row of :mod:`~qlmio_opt.simulator.state_dataset` is one request on one node in a sampled live
state. A predictor of the latency sees the request, the node, the engine and the node's observed
state, never the parts the world draws behind them. :meth:`StateResimulator.resimulate` keeps
the row's history before the decision (which background requests arrived when, with their
truth) and redraws what is still hidden at the decision, from the distribution the table draws
it from:

* ``wait`` (only when asked: the latency models read a row's ``wait_s``, the analytic latency
  adds it, as a gateway knows when each request arrived): the target's wait for its window to
  close, uniform ``0 .. window_s``;
* ``target``: the request's own hidden truth on the node (output length, vision and prefill
  jitter: the world's per-request draws, made fresh by drawing them for a renamed copy of the
  request, :mod:`~qlmio_opt.simulator.truth_draws`);
* ``in_flight``: the output length of every running request, from the world's distribution
  truncated above the tokens it has streamed (a running request is short of its last token);
  and the whole hidden truth of every waiting request;
* ``arrivals``: the background after the decision: the arrival rate ``u`` from its posterior
  given how many requests arrived before (the table's prior: an idle node with probability
  ``idle_share``, else ``u`` uniform in ``0 .. max_utilisation``; a Poisson count), then the
  count, times and requests as the table draws them, each with fresh hidden truth.

Two things are kept at their drawn values although the scheduler does not see them, because
the engine has already used them before the decision and changing them would change the state:
a running request's per-step KV read (the world makes it grow with the true output length) and
its prefill time. Kept values are information a scheduler lacks, so the conditional spread here
is, if anything, narrower than the one given the observed state alone. Every redraw reproduces
the row's observed state exactly (``Resimulation.state_matches`` says so per draw), and with
nothing redrawn the row's latency exactly (``tests/simulator/test_state_resimulation.py``).

Deterministic: the same table arguments, row, ``draws`` and ``seed`` give the same latencies.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
from scipy.stats import poisson

from qlmio_opt.domain.instance import ENGINE_SCHEDULERS, NodeState, Request
from qlmio_opt.domain.scenarios.generate import get_scenario
from qlmio_opt.simulator.dataset import (
    bench_nodes,
    draw_bench_requests,
    node_capacity,
    other_requests,
)
from qlmio_opt.simulator.state_dataset import (
    STATE_STREAM,
    NodeContext,
    PairBackground,
    StateConfig,
    draw_pair_load,
    node_contexts,
    node_jobs,
    serve_target,
)
from qlmio_opt.simulator.world import PairTruth, World

__all__ = ["HIDDEN_PARTS", "PARTS", "Resimulation", "StateResimulator", "utilisation_posterior"]

PARTS = ("wait", "target", "in_flight", "arrivals")
"""What :meth:`StateResimulator.resimulate` can redraw (module docstring)."""

HIDDEN_PARTS = ("target", "in_flight", "arrivals")
"""What a latency model of the state table does not see, redrawn by default."""

MAX_LENGTH_TRIES = 512
"""Fresh output lengths tried per running request before its drawn length is kept: a request
that has streamed far into the world's tail may have a tiny chance left; the count of kept
lengths is reported (``Resimulation.kept_lengths``)."""

_U_GRID = 400  # grid points of the rate posterior: 0.003 of utilisation apart at the default 1.3


@dataclass(frozen=True)
class Resimulation:
    """Latencies of ``draws`` re-simulations of one row.

    Attributes
    ----------
    latency_s
        The target's latency in each draw.
    state_matches
        Whether each draw's observed state equals the row's (it should, always).
    kept_lengths
        Running requests whose drawn output length was kept (no fresh length above the
        streamed tokens in :data:`MAX_LENGTH_TRIES` tries), summed over the draws.
    """

    latency_s: np.ndarray
    state_matches: np.ndarray
    kept_lengths: int


def utilisation_posterior(
    n_before: int, capacity: float, cfg: StateConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Values of the background rate over capacity ``u`` and their posterior probabilities given
    ``n_before`` background arrivals before the decision (the table's prior and Poisson count,
    capped at ``cfg.max_background``)."""
    width = cfg.max_utilisation / _U_GRID
    grid = (np.arange(_U_GRID) + 0.5) * width
    mean = grid * capacity * cfg.before_s
    if n_before >= cfg.max_background:
        likelihood = poisson.sf(cfg.max_background - 1, mean)
    else:
        likelihood = poisson.pmf(n_before, mean)
    values = np.concatenate([[0.0], grid])
    weights = np.concatenate(
        [[cfg.idle_share * float(n_before == 0)], (1 - cfg.idle_share) / _U_GRID * likelihood]
    )
    return values, weights / weights.sum()


def _renamed(request: Request, tag: str) -> Request:
    """``request`` under another id: the world draws its hidden truth afresh."""
    return request.model_copy(update={"id": f"{request.id}~{tag}"})


def _stack(parts: Sequence[PairTruth]) -> PairTruth:
    """One-node truths stacked along the requests."""
    return PairTruth(
        **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(PairTruth)}
    )


def _with_output(truth: PairTruth, tokens: np.ndarray) -> PairTruth:
    """``truth`` with other output lengths (the KV read and solo decode kept: module
    docstring)."""
    return replace(truth, output_tokens=np.asarray(tokens, float).reshape(-1, 1))


@dataclass(frozen=True)
class _InFlightJobs:
    """Positions in the pre-decision background of the running and waiting requests, and the
    tokens each running one has streamed."""

    running: np.ndarray
    streamed: np.ndarray
    waiting: np.ndarray


class StateResimulator:
    """Rebuilds a state table's draws (:func:`~qlmio_opt.simulator.state_dataset.
    state_bench_data` with the same arguments) and re-simulates its rows.

    Parameters
    ----------
    n_requests, seed, scenario, world, config
        As given to ``state_bench_data`` for the table.
    """

    def __init__(
        self,
        n_requests: int,
        seed: int = 0,
        *,
        scenario: str = "default",
        world: World | None = None,
        config: StateConfig | None = None,
    ) -> None:
        self.cfg = config or StateConfig()
        self.world = world or World()
        sc = get_scenario(scenario)
        self.nodes = bench_nodes(sc, self.world)
        self.requests = draw_bench_requests(sc, int(n_requests), int(seed))
        self.truth = self.world.pairs(self.requests, self.nodes)
        self.capacity = [
            node_capacity(self.truth, j, node, self.world.speeds(node))
            for j, node in enumerate(self.nodes)
        ]
        self.contexts = node_contexts(self.nodes, self.world, self.truth, self.requests)
        self.prompts = np.array([r.prompt_tokens for r in self.requests], dtype=np.int64)
        self.index = {r.id: i for i, r in enumerate(self.requests)}
        self.node_index = {node.id: j for j, node in enumerate(self.nodes)}
        rng = np.random.default_rng([int(seed), STATE_STREAM])
        n = len(self.requests)
        # the table draws each pair once, in this order, shared by its engines
        self.draws = [
            [
                draw_pair_load(rng, n, i, ctx.node, self.capacity[ctx.j], self.cfg)
                for ctx in self.contexts
            ]
            for i in range(n)
        ]

    def original(self, request_id: str, node_id: str, engine: str) -> tuple[NodeState, float]:
        """The row's observed state and latency, simulated again with nothing redrawn."""
        i, j = self.index[request_id], self.node_index[node_id]
        state, parts = serve_target(
            self.contexts[j], engine, self.draws[i][j], i, self.requests, self.prompts, self.cfg
        )
        return state, parts["latency_s"]

    def resimulate(
        self,
        request_id: str,
        node_id: str,
        engine: str,
        *,
        draws: int,
        seed: int,
        hidden: Collection[str] = HIDDEN_PARTS,
    ) -> Resimulation:
        """The row's latency in ``draws`` re-simulations with the ``hidden`` parts redrawn
        (module docstring), from a generator seeded by ``seed`` and the row.

        Raises
        ------
        ValueError
            If ``hidden`` names an unknown part or ``draws < 1``.
        """
        unknown = set(hidden) - set(PARTS)
        if unknown or draws < 1:
            raise ValueError(
                f"hidden must be some of {list(PARTS)} and draws >= 1; "
                f"got {sorted(unknown)}, {draws}"
            )
        i, j = self.index[request_id], self.node_index[node_id]
        ctx, draw = self.contexts[j], self.draws[i][j]
        state, _ = serve_target(ctx, engine, draw, i, self.requests, self.prompts, self.cfg)
        flight = self._in_flight(ctx, engine, draw)
        rng = np.random.default_rng([int(seed), i, j, ENGINE_SCHEDULERS.index(engine)])
        latency, matches, kept = np.empty(draws), np.zeros(draws, bool), 0
        for k in range(draws):
            tag = f"h{seed}.{k}"
            sim_ctx, sim_draw, target, requests, prompts, n_kept = self._redrawn(
                ctx, draw, i, flight, rng, tag, set(hidden)
            )
            sim_state, parts = serve_target(
                sim_ctx, engine, sim_draw, target, requests, prompts, self.cfg
            )
            latency[k], matches[k] = parts["latency_s"], sim_state == state
            kept += n_kept
        return Resimulation(latency, matches, kept)

    # -- the redraws ------------------------------------------------------------------------
    def _in_flight(self, ctx: NodeContext, engine: str, draw: PairBackground) -> _InFlightJobs:
        """Which pre-decision requests run or wait at the decision (jobs are numbered in the
        order they were added: positions in ``draw.before``)."""
        server = ctx.server(engine)
        server.add(node_jobs(ctx, draw.before, draw.before_at, self.prompts))
        seen = server.observe(self.cfg.before_s)
        return _InFlightJobs(
            running=np.array([v.job for v in seen.running], dtype=np.int64),
            streamed=np.array([v.output_tokens for v in seen.running], dtype=np.int64),
            waiting=np.array([v.job for v in (*seen.waiting, *seen.in_transit)], dtype=np.int64),
        )

    def _fresh(self, idx: np.ndarray, node_j: int, tag: str) -> PairTruth:
        """Fresh hidden truth of requests ``idx`` on node ``node_j``."""
        renamed = [_renamed(self.requests[k], f"{tag}.{m}") for m, k in enumerate(idx)]
        return self.world.pairs(renamed, [self.nodes[node_j]])

    def _longer(self, k: int, node_j: int, streamed: int, tag: str) -> int | None:
        """A fresh output length of request ``k`` above ``streamed`` (None: none found)."""
        model = self.nodes[node_j].model
        batch = 64
        for start in range(0, MAX_LENGTH_TRIES, batch):
            tries = [_renamed(self.requests[k], f"{tag}.{start + m}") for m in range(batch)]
            lengths = self.world.output_tokens(tries, [model])[:, 0]
            above = np.flatnonzero(lengths > streamed)
            if len(above):
                return int(lengths[above[0]])
        return None

    def _redrawn(
        self,
        ctx: NodeContext,
        draw: PairBackground,
        i: int,
        flight: _InFlightJobs,
        rng: np.random.Generator,
        tag: str,
        hidden: set[str],
    ) -> tuple[NodeContext, PairBackground, int, list[Request], np.ndarray, int]:
        """One redraw as a one-node context whose truth rows are: every request's drawn truth,
        then the redrawn rows (running, waiting, target, later arrivals), with the pair's draw
        and target pointing at them."""
        j, n = ctx.j, len(self.requests)
        one = [self._column(j)]
        sources: list[np.ndarray] = []
        before = draw.before.copy()
        kept = 0
        if "in_flight" in hidden and len(flight.running):
            src = draw.before[flight.running]
            lengths = []
            for m, (k, streamed) in enumerate(zip(src, flight.streamed, strict=True)):
                length = self._longer(int(k), j, int(streamed), f"{tag}.run{m}")
                kept += length is None
                lengths.append(self.truth.output_tokens[k, j] if length is None else length)
            one.append(_with_output(self._rows(src, j), np.array(lengths)))
            before[flight.running] = n + np.arange(len(src))
            sources.append(src)
        if "in_flight" in hidden and len(flight.waiting):
            src = draw.before[flight.waiting]
            one.append(self._fresh(src, j, f"{tag}.wait"))
            before[flight.waiting] = n + sum(map(len, sources)) + np.arange(len(src))
            sources.append(src)
        target, wait = i, draw.wait_s
        if "target" in hidden:
            one.append(self._fresh(np.array([i]), j, f"{tag}.target"))
            target = n + sum(map(len, sources))
            sources.append(np.array([i]))
        if "wait" in hidden:
            wait = float(rng.uniform(0.0, self.cfg.window_s))
        after, after_at, u = draw.after, draw.after_at, draw.utilisation
        if "arrivals" in hidden:
            u, src, after_at = self._arrivals(rng, i, len(draw.before), j)
            one.append(self._fresh(src, j, f"{tag}.after"))
            after = n + sum(map(len, sources)) + np.arange(len(src))
            sources.append(src)
        order = np.concatenate([np.arange(n), *sources]).astype(np.int64)
        sim_ctx = replace(ctx, j=0, truth=_stack(one), work_s=ctx.work_s[order])
        requests = [self.requests[k] for k in order]
        sim_draw = replace(
            draw, utilisation=u, before=before, after=after, after_at=after_at, wait_s=wait
        )
        return sim_ctx, sim_draw, target, requests, self.prompts[order], kept

    def _column(self, j: int) -> PairTruth:
        """Every request's drawn truth on node ``j`` as a one-node truth."""
        return self._rows(np.arange(len(self.requests)), j)

    def _rows(self, idx: np.ndarray, j: int) -> PairTruth:
        return PairTruth(
            **{f.name: getattr(self.truth, f.name)[idx, j : j + 1] for f in fields(PairTruth)}
        )

    def _arrivals(
        self, rng: np.random.Generator, i: int, n_before: int, j: int
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """The rate (from its posterior), requests and times of the background after the
        decision, drawn as the table draws them."""
        cfg = self.cfg
        values, probs = utilisation_posterior(n_before, self.capacity[j], cfg)
        u = float(values[rng.choice(len(values), p=probs)])
        count = int(rng.poisson(u * self.capacity[j] * cfg.after_s))
        count = min(count, cfg.max_background - n_before)
        n = len(self.requests)
        src = other_requests(rng, n, i, count) if count else np.zeros(0, np.int64)
        at = cfg.before_s + np.sort(rng.uniform(0.0, cfg.after_s, count))
        return u, src, at
