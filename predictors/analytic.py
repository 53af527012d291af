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

from collections.abc import Callable
from dataclasses import dataclass

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
        eligible = structural_eligibility(instance)

        graph = instance.network_graph
        rtt_ms = graph.rtt_ms_matrix()[req.site_idx]  # (R, N); NaN = unreachable
        bottleneck = graph.bottleneck_mbps_matrix()[req.site_idx]
        tasks, task_index = _factorise(req.task)
        typical_out = np.array([catalog.task(t).typical_output_tokens for t in tasks], dtype=float)[
            task_index
        ]
        out = np.minimum(req.max_output_tokens, typical_out)
        sizes = ImageSizes.of(req)

        # nodes often share a model: its image tokens and quality are computed once, and every
        # part is then one (R, N) operation with the nodes' constants as a row
        models = list(dict.fromkeys(node.model for node in instance.nodes))
        per_model = [
            (
                self._image_tokens(catalog.model(m), req, sizes),
                self._quality(catalog, catalog.model(m), req, tasks, task_index, sizes),
            )
            for m in models
        ]
        column = [models.index(node.model) for node in instance.nodes]
        tokens = _columns([t for t, _ in per_model], column, req.num_requests)
        quality = _columns([q for _, q in per_model], column, req.num_requests)
        row = _node_constants(catalog, instance)

        parts = {name: np.zeros(shape) for name in COMPONENTS}
        with np.errstate(divide="ignore", invalid="ignore"):
            parts["transfer_s"][:] = 8.0 * req.upload_bytes[:, None] / (bottleneck * 1e6)
        parts["rtt_s"][:] = rtt_ms / 1000.0
        parts["vision_s"][:] = tokens * row["patches_per_token"] / row["vision_tok_s"]
        parts["prefill_s"][:] = (req.prompt_tokens[:, None] + tokens) / row["prefill_tok_s"]
        parts["decode_s"][:] = out[:, None] / row["decode_tok_s"]
        memory = (
            (req.prompt_tokens[:, None] + tokens + req.max_output_tokens[:, None])
            * row["kv_bytes_per_token"]
            / 1e9
        )
        output_tokens = np.repeat(out[:, None], shape[1], axis=1)

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
            components={**parts, "image_tokens": tokens, "output_tokens": output_tokens},
            congestion=True,
            source="analytic",
        )

    @staticmethod
    def _image_tokens(model, req: RequestArrays, sizes: ImageSizes) -> np.ndarray:
        if len(req.image_width) == 0:
            return np.zeros(req.num_requests)
        per_image = sizes.each(model.image_tokens.tokens_array)
        return req.per_request_sum(per_image.astype(float))

    @staticmethod
    def _quality(
        catalog: Catalog,
        model,
        req: RequestArrays,
        tasks: np.ndarray,
        task_index: np.ndarray,
        sizes: ImageSizes,
    ) -> np.ndarray:
        """``model``'s quality on every request; ``tasks[task_index]`` is ``req.task``."""
        accuracy = np.array([model.accuracy[t] for t in tasks], dtype=float)[task_index]
        if len(req.image_width) == 0:
            return accuracy
        pixels = (req.image_width * req.image_height).astype(float)
        seen = np.minimum(sizes.each(model.image_tokens.seen_pixels_array), pixels)
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


@dataclass(frozen=True)
class ImageSizes:
    """The window's distinct image sizes, and which one each image has.

    An image rule's result depends on the size only, so each rule runs once per distinct size
    (5,428 of the 14,321 images of the 10,000-request benchmark window) and is spread back.
    """

    width: np.ndarray
    height: np.ndarray
    inverse: np.ndarray

    @classmethod
    def of(cls, req: RequestArrays) -> ImageSizes:
        # one integer per size (np.unique over rows sorts 5x slower)
        span = int(req.image_height.max(initial=0)) + 1
        keys, inverse = np.unique(req.image_width * span + req.image_height, return_inverse=True)
        return cls(keys // span, keys % span, inverse.reshape(-1))

    def each(self, rule: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        """``rule(widths, heights)`` for every image, computed once per distinct size."""
        return rule(self.width, self.height)[self.inverse]


def _factorise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for a few distinct strings among many, without
    sorting them all (5 ms of the 10,000-request benchmark window's prediction)."""
    items = values.tolist()
    distinct = np.array(sorted(set(items)), dtype=object)
    code = {v: k for k, v in enumerate(distinct.tolist())}
    return distinct, np.fromiter(map(code.__getitem__, items), dtype=np.intp, count=len(items))


def _columns(per_model: list[np.ndarray], column: list[int], num_requests: int) -> np.ndarray:
    """``(R, N)``: each node's column is its model's ``(R,)`` array."""
    if not column:
        return np.zeros((num_requests, 0))
    return np.stack(per_model, axis=1)[:, column]


def _node_constants(catalog: Catalog, instance: Instance) -> dict[str, np.ndarray]:
    """Each node's model and device figures as ``(N,)`` rows."""
    rows: dict[str, list[float]] = {
        k: []
        for k in (
            "patches_per_token",
            "vision_tok_s",
            "prefill_tok_s",
            "decode_tok_s",
            "kv_bytes_per_token",
        )
    }
    for node in instance.nodes:
        model, device = catalog.model(node.model), catalog.device(node.device)
        rows["patches_per_token"].append(model.vision_patches_per_token)
        rows["vision_tok_s"].append(device.vision_tok_s(model))
        rows["prefill_tok_s"].append(device.prefill_tok_s(model))
        rows["decode_tok_s"].append(device.decode_tok_s(model))
        rows["kv_bytes_per_token"].append(model.kv_bytes_per_token)
    return {k: np.array(v, dtype=float) for k, v in rows.items()}
