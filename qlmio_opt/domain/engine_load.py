"""What a node's serving engine and live state add to a window's latencies.

The engines' physics, from the catalog's speeds and the nodes' state: it lives in the domain
because two layers read it, the formulation (its per-pair state terms and congestion curves)
and the predictors (:mod:`qlmio_opt.predictors.learned_load_latency` learns its departures from
it); a solver importing the formulation must not load a predictor.

A node's engine works through prefills (vision encoding and prompt prefill: compute-bound) and
decoding (memory-bound steps that give every decoding request one token). Prefill work slows
decoding: a ``serial-prefill`` engine pauses every decode while it prefills; a ``chunked-prefill``
engine rides prefill chunks of up to ``max_batched_tokens`` tokens along with the decode steps,
which then take the chunk's compute time instead of the memory time, so a decoding request is
delayed by ``interference = 1 - T_mem / T_step`` seconds per second of prefill work
(``T_mem``: one decode step alone, ``T_step``: a step with a full chunk). This is the world's
model (:mod:`qlmio_opt.simulator.engine`); docs/formulation.md derives the terms below from it.

For a node with live state (``Node.state``: requests running and waiting, the scheduler's
recent prefill load), a window request ``r`` placed on node ``n``:

* waits for the prefill work queued ahead of it (``backlog_s``: the waiting requests' work, and
  half of the running requests' that have not started decoding, as their progress is unknown);
* decodes more slowly in the batch of the node's decoding requests (each step also reads their
  KV cache: ``kv_read_gb / weights_gb`` more time per step);
* decodes under the node's recent prefill load ``u``: a decode of ``D`` seconds takes
  ``D / (1 - interference * u)`` (the look-ahead term: later windows keep sending work; ``u`` is
  capped at :data:`MAX_LOAD`);
* delays each of the node's decoding requests by ``interference`` times its own prefill work:
  an externality, part of the objective (the mean latency over all requests) but not of the
  request's own predicted latency.

Requests placed on the same node in the same window delay each other as well; that part
depends on how many there are and is the node's congestion curve
(:func:`qlmio_opt.formulations.congestion.curve`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from qlmio_opt.domain.instance import InFlight, Instance, Node, NodeState

if TYPE_CHECKING:
    from qlmio_opt.domain.catalog import Catalog
    from qlmio_opt.domain.catalog.specs import DeviceSpec, ModelSpec

MAX_LOAD = 0.9
"""The prefill load a node's look-ahead term is capped at: at a load of 1 the engine never
catches up and the stationary stretch ``1 / (1 - u)`` has no finite value. Chosen by hand
(stretch at most 10x), not measured."""


@dataclass(frozen=True)
class NodeLoad:
    """One node's live load, in the formulation's terms.

    Attributes
    ----------
    backlog_s
        Seconds of prefill work the node must do before the window's requests' own.
    decoders
        Requests of the node's state that are (or will be, before the window's) decoding.
    occupied
        Slots taken before the window's requests (running and waiting requests).
    interference
        Seconds a decoding request is delayed per second of prefill work (1 for serial prefill).
    stretch
        Factor on a new request's decode time from the node's recent prefill load.
    batch_slowdown
        Extra decode time per second of decode from the KV the node's decoders read each step.
    """

    backlog_s: float = 0.0
    decoders: int = 0
    occupied: int = 0
    interference: float = 1.0
    stretch: float = 1.0
    batch_slowdown: float = 0.0


def node_loads(instance: Instance) -> tuple[NodeLoad, ...]:
    """Each node's :class:`NodeLoad` from its engine, state and catalog speeds."""
    catalog = instance.resolved_catalog
    return tuple(
        _node_load(node, engine.chunked, engine.max_batched_tokens, catalog)
        for node, engine in zip(instance.nodes, instance.node_engines, strict=True)
    )


def interference(chunked: bool, budget_tokens: int, prefill_tok_s: float, decode_step_s: float):
    """Decode delay per second of prefill work: 1 for serial prefill; for chunked prefill
    ``1 - T_mem / T_step`` with ``T_step = max(T_mem, budget / prefill_tok_s)``."""
    if not chunked:
        return 1.0
    step_s = max(decode_step_s, budget_tokens / prefill_tok_s)
    return 1.0 - decode_step_s / step_s


def prefill_work_s(item: InFlight, model: ModelSpec, device: DeviceSpec) -> float:
    """Seconds of prefill work (vision encoding, then the prompt's text and image tokens) of
    ``item`` alone on ``device`` running ``model``."""
    vision = item.image_tokens * model.vision_patches_per_token / device.vision_tok_s(model)
    return vision + (item.prompt_tokens + item.image_tokens) / device.prefill_tok_s(model)


def _node_load(node: Node, chunked: bool, budget: int, catalog: Catalog) -> NodeLoad:
    model = catalog.model(node.model)
    device = catalog.device(node.device)
    return state_load(node.state, model, device, chunked, budget)


def state_load(
    state: NodeState | None, model: ModelSpec, device: DeviceSpec, chunked: bool, budget: int
) -> NodeLoad:
    """The :class:`NodeLoad` of a node running ``model`` on ``device`` with the engine
    (``chunked`` prefill or not, token ``budget``) in live ``state`` (None = idle)."""
    prefill_tok_s = device.prefill_tok_s(model)
    decode_step_s = 1.0 / device.decode_tok_s(model)  # one step alone reads the weights once
    gamma = interference(chunked, budget, prefill_tok_s, decode_step_s)
    if state is None:
        return NodeLoad(interference=gamma)

    def work_s(item: InFlight) -> float:
        return prefill_work_s(item, model, device)

    prefilling = [r for r in state.running if r.output_tokens == 0]
    backlog = sum(work_s(r) for r in state.waiting) + 0.5 * sum(work_s(r) for r in prefilling)
    decoders = len(state.running) + len(state.waiting)
    # each decoding request reads its context's KV per step: prompt + image + output so far
    context = sum(r.prompt_tokens + r.image_tokens + r.output_tokens for r in state.running)
    kv_read_gb = context * model.kv_bytes_per_token / 1e9
    load = min(state.prefill_load or 0.0, MAX_LOAD)
    return NodeLoad(
        backlog_s=float(backlog),
        decoders=decoders,
        occupied=len(state.running) + len(state.waiting),
        interference=gamma,
        stretch=1.0 / (1.0 - gamma * load),
        batch_slowdown=kv_read_gb / model.weights_gb,
    )


@dataclass(frozen=True)
class PairLoad:
    """What the nodes' loads add to each pair, arrays ``(R, N)`` in seconds."""

    delay_s: NDArray[np.float64]  # the request's own extra latency
    externality_s: NDArray[np.float64]  # the delay it imposes on the node's in-flight requests


def pair_loads(
    loads: tuple[NodeLoad, ...],
    compute_s: NDArray[np.float64],
    decode_s: NDArray[np.float64],
    start_s: NDArray[np.float64] | None = None,
    window_s: float = 0.0,
) -> PairLoad:
    """Per-pair terms of :class:`NodeLoad` for requests with solo prefill work ``compute_s`` and
    solo decode time ``decode_s`` (both ``(R, N)``).

    The look-ahead stretch applies only to the part of a decode that the next windows' prefills
    can reach: they arrive one window after this one is dispatched, so a decode that starts
    ``start_s + backlog`` after dispatch (``start_s``: upload, RTT and its own prefill) runs
    ``max(window_s - start, 0)`` seconds before any of them.
    """
    backlog = np.array([load.backlog_s for load in loads])
    stretch = np.array([load.stretch for load in loads])
    slowdown = np.array([load.batch_slowdown for load in loads])
    pushed = np.array([load.decoders * load.interference for load in loads])
    decode = decode_s * (1.0 + slowdown)[None, :]
    if start_s is None:
        exposed = decode
    else:
        before = np.maximum(window_s - (start_s + backlog[None, :]), 0.0)
        exposed = np.maximum(decode - before, 0.0)
    delay = backlog[None, :] + decode - decode_s + exposed * (stretch - 1.0)[None, :]
    return PairLoad(delay_s=delay, externality_s=compute_s * pushed[None, :])


LOAD_PARTS = ("vision_s", "prefill_s", "decode_s")
"""The latency components the load terms read (predictions without them get none)."""


def state_pair_loads(
    instance: Instance, components: Mapping[str, NDArray[np.float64]], congestion: bool = True
) -> PairLoad:
    """What the nodes' engines and live state add to every pair of ``instance`` whose
    predictions have latency ``components`` (nothing when ``congestion`` is false, the latencies
    being final, or the load parts are missing): the formulation's term, one implementation."""
    shape = (len(instance.requests), len(instance.nodes))
    if not congestion or any(k not in components for k in LOAD_PARTS):
        return PairLoad(delay_s=np.zeros(shape), externality_s=np.zeros(shape))
    compute = components["vision_s"] + components["prefill_s"]
    zero = np.zeros(shape)
    start = components.get("transfer_s", zero) + components.get("rtt_s", zero) + compute
    start = np.where(np.isnan(start), np.inf, start)  # unreachable pairs: never decoding
    return pair_loads(
        node_loads(instance), compute, components["decode_s"], start, instance.window_s
    )
