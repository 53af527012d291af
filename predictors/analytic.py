"""The analytic predictor: physics for latency, published accuracy for quality. No learning.

Latency of request r on node n (seconds)::

    wait       = window_s - arrival_s                      (the window must close first)
    transfer   = 8 * upload_bytes / (bottleneck_mbps * 1e6) (over the site->node path)
    rtt        = sum of the path's link RTTs / 1000
    vision     = image_tokens * patches_per_token / device.vision_tok_s(model)
    prefill    = (prompt_tokens + image_tokens) / device.prefill_tok_s(model)
    decode     = min(max_output_tokens, task.typical_output_tokens) / device.decode_tok_s(model)

Quality is the catalog's accuracy of the model on the task family, moved by a resolution effect
on the odds of completion: ``odds = odds(accuracy) * (ratio / reference_ratio) **
task.resolution_exponent``, where ``ratio`` is the share of the request's pixels the model
actually sees after its resize rule and ``reference_ratio`` the same share for the family's
typical benchmark image. A model that sees a benchmark-sized image scores its published
accuracy; one that must shrink a large document more than usual scores lower, one that sees
more than the benchmark's share scores higher, and the result is a probability by construction
(:func:`~qlmio_opt.predictors.features.resolution_quality`).

KV-cache memory is ``(prompt_tokens + image_tokens + max_output_tokens) * kv_bytes_per_token``:
the reservation a serving engine needs to finish the request without preemption.
"""

from __future__ import annotations

import numpy as np

from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.instance import Instance
from qlmio_opt.predictors.base import ParamsMixin, Predictions, structural_eligibility
from qlmio_opt.predictors.features import RequestArrays, request_arrays, resolution_quality

COMPONENTS = ("wait_s", "transfer_s", "rtt_s", "vision_s", "prefill_s", "decode_s")


class AnalyticPredictor(ParamsMixin):
    """Quality from published accuracy, latency from the path and a roofline device model.

    Parameters
    ----------
    catalog
        Catalog to read models, devices and tasks from; default: the instance's own.
    include_wait
        Count the wait for the window to close in the latency (the product's definition).
    """

    def __init__(self, catalog: Catalog | None = None, include_wait: bool = True) -> None:
        self.catalog = catalog
        self.include_wait = include_wait

    def fit(self, data=None, y=None) -> AnalyticPredictor:
        """Nothing to learn; present for the common predictor contract."""
        self.is_fitted_ = True
        return self

    def predict(self, instance: Instance) -> Predictions:
        catalog = self.catalog or instance.resolved_catalog
        req = request_arrays(instance)
        shape = (req.num_requests, len(instance.nodes))
        parts = {name: np.zeros(shape) for name in COMPONENTS}
        quality = np.zeros(shape)
        memory = np.zeros(shape)
        image_tokens = np.zeros(shape)
        output_tokens = np.zeros(shape)
        eligible = structural_eligibility(instance)

        graph = instance.network_graph
        rtt_ms = graph.rtt_ms_matrix()[req.site_idx]  # (R, N); NaN = unreachable
        bottleneck = graph.bottleneck_mbps_matrix()[req.site_idx]
        typical_out = np.array(
            [catalog.task(t).typical_output_tokens for t in req.task], dtype=float
        )

        tasks, task_index = np.unique(req.task, return_inverse=True)
        # nodes often share a model: its image tokens and quality are computed once
        by_model: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for j, node in enumerate(instance.nodes):
            model = catalog.model(node.model)
            device = catalog.device(node.device)
            if node.model not in by_model:
                by_model[node.model] = (
                    self._image_tokens(model, req),
                    self._quality(catalog, model, req, tasks, task_index),
                )
            tokens, model_quality = by_model[node.model]
            image_tokens[:, j] = tokens
            out = np.minimum(req.max_output_tokens, typical_out)
            output_tokens[:, j] = out

            with np.errstate(divide="ignore", invalid="ignore"):
                parts["transfer_s"][:, j] = 8.0 * req.upload_bytes / (bottleneck[:, j] * 1e6)
            parts["rtt_s"][:, j] = rtt_ms[:, j] / 1000.0
            parts["vision_s"][:, j] = (
                tokens * model.vision_patches_per_token / device.vision_tok_s(model)
            )
            parts["prefill_s"][:, j] = (req.prompt_tokens + tokens) / device.prefill_tok_s(model)
            parts["decode_s"][:, j] = out / device.decode_tok_s(model)
            quality[:, j] = model_quality
            memory[:, j] = (
                (req.prompt_tokens + tokens + req.max_output_tokens)
                * model.kv_bytes_per_token
                / 1e9
            )

        if self.include_wait:
            parts["wait_s"][:] = req.wait_s[:, None]
        latency = sum(parts[name] for name in COMPONENTS)
        latency = np.where(eligible, latency, np.inf)
        quality = np.where(eligible, quality, 0.0)
        return Predictions(
            quality=quality,
            latency_s=latency,
            memory_gb=memory,
            eligible=eligible,
            upload_bytes=req.upload_bytes,
            components={**parts, "image_tokens": image_tokens, "output_tokens": output_tokens},
            congestion=True,
            source="analytic",
        )

    @staticmethod
    def _image_tokens(model, req: RequestArrays) -> np.ndarray:
        if len(req.image_width) == 0:
            return np.zeros(req.num_requests)
        per_image = model.image_tokens.tokens_array(req.image_width, req.image_height)
        return req.per_request_sum(per_image.astype(float))

    @staticmethod
    def _quality(
        catalog: Catalog, model, req: RequestArrays, tasks: np.ndarray, task_index: np.ndarray
    ) -> np.ndarray:
        """``model``'s quality on every request; ``tasks[task_index]`` is ``req.task``."""
        accuracy = np.array([model.accuracy[t] for t in tasks], dtype=float)[task_index]
        if len(req.image_width) == 0:
            return accuracy
        pixels = (req.image_width * req.image_height).astype(float)
        seen = np.minimum(
            model.image_tokens.seen_pixels_array(req.image_width, req.image_height), pixels
        )
        total = req.per_request_sum(pixels)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(total > 0, req.per_request_sum(seen) / total, 1.0)
        shift = np.zeros(req.num_requests)
        for k, task in enumerate(tasks):
            spec = catalog.task(task)
            ref_px = spec.reference_width * spec.reference_height
            ref_seen = min(
                model.image_tokens.seen_pixels(spec.reference_width, spec.reference_height), ref_px
            )
            ref_ratio = ref_seen / ref_px
            rows = (task_index == k) & (req.num_images > 0)
            shift[rows] = spec.resolution_exponent * np.log(ratio[rows] / ref_ratio)
        return resolution_quality(accuracy, shift)
