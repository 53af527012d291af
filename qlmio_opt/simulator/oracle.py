"""The oracle predictor: the world's own truth, handed to the formulation as predictions.

Quality is the drawn outcome (1 if the node's model truly completes the request, else 0);
latency is the request's true stand-alone latency on the node (window wait, upload alone on its
path, RTT, true vision, prefill and decode with the true output length). The formulation still
adds its congestion model for requests sharing a node, since the truth of congestion depends on
the assignment being decided. Solving each window exactly with these predictions is the
*oracle policy*: it bounds what any predictor can reach with the same optimiser.

Two weaker levels of knowledge (``knowledge=``) split that bound into what a predictor could in
principle learn and what no predictor can know:

- ``"probability"``: the true completion probability given the request's hidden difficulty, not
  its drawn outcome; latency at the *expected* output length and vision/prefill speed (the
  world's lognormal draws of a request's answer length and a pair's speed jitter averaged out).
- ``"observable"``: as ``"probability"``, with the request's own hidden difficulty draw also
  averaged out (:meth:`World.completion_prob` with ``observable=True``): the probability given
  everything the request shows. No predictor of a request's features can know more, so a
  policy with these predictions bounds every learned predictor with the same optimiser.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from qlmio_opt.domain.instance import Instance, Request
from qlmio_opt.predictors.base import Predictions, structural_eligibility
from qlmio_opt.simulator.world import World

KNOWLEDGE = ("outcome", "probability", "observable")


class OraclePredictor:
    """Predictions that are the world's truth (see the module docstring).

    Parameters
    ----------
    world
        The world whose truth is revealed.
    knowledge
        ``"outcome"`` (drawn outcomes, true latencies), ``"probability"`` or ``"observable"``
        (see the module docstring).
    """

    def __init__(self, world: World, knowledge: str = "outcome") -> None:
        if knowledge not in KNOWLEDGE:
            raise ValueError(f"knowledge must be one of {', '.join(KNOWLEDGE)}, not {knowledge!r}")
        self.world = world
        self.knowledge = knowledge
        if knowledge == "outcome":
            self._timing_world = world
        else:
            expected = replace(world.config, output_sd=0.0, pair_output_sd=0.0, speed_sd=0.0)
            self._timing_world = World(world.catalog, expected)

    def fit(self, data: Any = None, y: Any = None) -> OraclePredictor:
        """Nothing to learn: the truth is the world's (the predictor contract's no-op)."""
        self.is_fitted_ = True
        return self

    def predict(self, instance: Instance) -> Predictions:
        """The truth of every pair of ``instance`` at this predictor's level of knowledge."""
        requests: tuple[Request, ...] = instance.requests
        truth = self._timing_world.pairs(requests, instance.nodes)
        if self.knowledge == "outcome":
            quality = truth.completed.astype(float)
        elif self.knowledge == "probability":
            # the timing world differs only in answer lengths and speeds: same probabilities
            quality = truth.completion_prob
        else:
            models = list(dict.fromkeys(n.model for n in instance.nodes))
            column = [models.index(n.model) for n in instance.nodes]
            quality = self.world.completion_prob(requests, models, observable=True)[:, column]
        eligible = structural_eligibility(instance)
        graph = instance.network_graph
        site_index = {s: i for i, s in enumerate(instance.network.sites)}
        sites = np.array([site_index[r.site] for r in requests], dtype=np.int64)
        rtt = graph.rtt_ms_matrix()[sites] / 1000.0
        bottleneck = graph.bottleneck_mbps_matrix()[sites]
        upload = np.array([r.upload_bytes for r in requests], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            transfer = 8.0 * upload[:, None] / (bottleneck * 1e6)
        wait = np.array([max(instance.window_s - r.arrival_s, 0.0) for r in requests])
        wait = np.broadcast_to(wait[:, None], transfer.shape)
        latency = wait + transfer + rtt + truth.vision_s + truth.prefill_s + truth.decode_solo_s
        return Predictions(
            quality=np.where(eligible, quality, 0.0),
            latency_s=np.where(eligible, latency, np.inf),
            memory_gb=truth.kv_reserve_gb,
            eligible=eligible,
            upload_bytes=upload,
            components={
                "wait_s": np.array(wait),
                "transfer_s": np.where(eligible, transfer, 0.0),
                "rtt_s": np.where(eligible, rtt, 0.0),
                "vision_s": truth.vision_s,
                "prefill_s": truth.prefill_s,
                "decode_s": truth.decode_solo_s,
                "image_tokens": truth.image_tokens,
                "output_tokens": truth.output_tokens,
            },
            congestion=True,
            source="oracle" if self.knowledge == "outcome" else f"oracle-{self.knowledge}",
        )
