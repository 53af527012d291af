"""The analytic predictor as it was written before its fast path: one request field at a time,
one node at a time, every image through the image rule (kept as the reference that
``test_analytic_fast_path.py`` compares the fast path with, number for number)."""

from __future__ import annotations

import numpy as np

from qlmio_opt.domain.instance import Instance
from qlmio_opt.predictors.analytic import COMPONENTS
from qlmio_opt.predictors.base import Predictions, structural_eligibility
from qlmio_opt.predictors.features import RequestArrays, resolution_quality


def reference_request_arrays(instance: Instance) -> RequestArrays:
    reqs = instance.requests
    site_index = {s: i for i, s in enumerate(instance.network.sites)}
    images = [(r_idx, im) for r_idx, r in enumerate(reqs) for im in r.images]
    arrival = np.array([r.arrival_s for r in reqs], dtype=float)
    prompt = np.array([r.prompt_tokens for r in reqs], dtype=float)
    image_bytes = np.array([im.bytes for _, im in images], dtype=float)
    image_request = np.array([i for i, _ in images], dtype=np.int64)
    upload = np.bincount(image_request, weights=image_bytes, minlength=len(reqs)) + 4.0 * prompt
    return RequestArrays(
        site_idx=np.array([site_index[r.site] for r in reqs], dtype=np.int64),
        arrival_s=arrival,
        wait_s=np.maximum(instance.window_s - arrival, 0.0),
        prompt_tokens=prompt,
        max_output_tokens=np.array([r.max_output_tokens for r in reqs], dtype=float),
        task=np.array([r.task for r in reqs], dtype=object),
        min_quality=np.array(
            [np.nan if r.min_quality is None else r.min_quality for r in reqs], dtype=float
        ),
        deadline_s=np.array(
            [np.inf if r.deadline_s is None else r.deadline_s for r in reqs], dtype=float
        ),
        num_images=np.array([len(r.images) for r in reqs], dtype=np.int64),
        upload_bytes=upload,
        image_request=image_request,
        image_width=np.array([im.width for _, im in images], dtype=np.int64),
        image_height=np.array([im.height for _, im in images], dtype=np.int64),
        image_bytes=image_bytes,
    )


def _tile_count_array(w: np.ndarray, h: np.ndarray, p) -> np.ndarray:
    from qlmio_opt.domain.catalog.image_tokens import _ceil_div, _grids

    t, max_tiles = int(p["tile_px"]), int(p["max_tiles"])
    n = _ceil_div(w, t) * _ceil_div(h, t)
    grids = np.array(_grids(max_tiles), dtype=np.int64)
    cols, rows = grids[:, 0], grids[:, 1]
    a = h[..., None] * cols
    b = w[..., None] * rows
    err = np.maximum(a, b) / np.minimum(a, b)
    fallback = (cols * rows)[np.argmin(err, axis=-1)]
    return np.where(n <= max_tiles, n, fallback)


def _tokens(rule, w, h) -> np.ndarray:
    if rule.kind == "tiles":
        p = rule.params
        n = _tile_count_array(w, h, p)
        extra = (n > 1).astype(np.int64) if p["thumbnail"] else 0
        return p["tokens_per_tile"] * (n + extra)
    return rule.tokens_array(w, h)


def _seen(rule, w, h) -> np.ndarray:
    if rule.kind == "tiles":
        return _tile_count_array(w, h, rule.params) * rule.params["tile_px"] ** 2
    return rule.seen_pixels_array(w, h)


def reference_predict(instance: Instance) -> Predictions:
    catalog = instance.resolved_catalog
    req = reference_request_arrays(instance)
    shape = (req.num_requests, len(instance.nodes))
    parts = {name: np.zeros(shape) for name in COMPONENTS}
    quality = np.zeros(shape)
    memory = np.zeros(shape)
    image_tokens = np.zeros(shape)
    output_tokens = np.zeros(shape)
    eligible = structural_eligibility(instance)
    graph = instance.network_graph
    rtt_ms = graph.rtt_ms_matrix()[req.site_idx]
    bottleneck = graph.bottleneck_mbps_matrix()[req.site_idx]
    typical_out = np.array([catalog.task(t).typical_output_tokens for t in req.task], dtype=float)
    tasks, task_index = np.unique(req.task, return_inverse=True)
    for j, node in enumerate(instance.nodes):
        model = catalog.model(node.model)
        device = catalog.device(node.device)
        tokens = _image_tokens(model, req)
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
        quality[:, j] = _quality(catalog, model, req, tasks, task_index)
        memory[:, j] = (
            (req.prompt_tokens + tokens + req.max_output_tokens) * model.kv_bytes_per_token / 1e9
        )
    parts["wait_s"][:] = req.wait_s[:, None]
    latency = sum(parts[name] for name in COMPONENTS)
    return Predictions(
        quality=np.where(eligible, quality, 0.0),
        latency_s=np.where(eligible, latency, np.inf),
        memory_gb=memory,
        eligible=eligible,
        upload_bytes=req.upload_bytes,
        components={**parts, "image_tokens": image_tokens, "output_tokens": output_tokens},
        congestion=True,
        source="analytic",
    )


def _image_tokens(model, req: RequestArrays) -> np.ndarray:
    if len(req.image_width) == 0:
        return np.zeros(req.num_requests)
    per_image = _tokens(model.image_tokens, req.image_width, req.image_height)
    return req.per_request_sum(per_image.astype(float))


def _quality(catalog, model, req: RequestArrays, tasks, task_index) -> np.ndarray:
    accuracy = np.array([model.accuracy[t] for t in tasks], dtype=float)[task_index]
    if len(req.image_width) == 0:
        return accuracy
    pixels = (req.image_width * req.image_height).astype(float)
    seen = np.minimum(_seen(model.image_tokens, req.image_width, req.image_height), pixels)
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
        rows = (task_index == k) & (req.num_images > 0)
        shift[rows] = spec.resolution_exponent * np.log(ratio[rows] / (ref_seen / ref_px))
    return resolution_quality(accuracy, shift)
