"""The world's true service speeds, calibrated to the published throughput figures.

The catalog's roofline (one efficiency per device, fitted over all its anchors) is what the
analytic predictor uses; it reproduces the published serving-engine figures only within about
35%. The world is truer to the data: on each device it multiplies the roofline by a correction
interpolated (linearly in log model size) between the device's own anchor points, so a model of
an anchor's size runs at that anchor's published speed, and models between anchors at speeds in
between. Devices without anchors keep the roofline. Lower-bound and outlier measurements are not
anchors (they only bound the speed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlmio_opt.domain.catalog.specs import DeviceSpec, Measurement, ModelSpec
from qlmio_opt.domain.catalog.throughput import measurement_roofline


def _anchors(device: DeviceSpec, metric: str) -> list[Measurement]:
    return [
        m for m in device.measurements if m.metric == metric and not m.lower_bound and not m.outlier
    ]


def _size(m: Measurement, metric: str) -> float:
    return m.weights_gb if metric == "decode_tok_s" else m.model_params_b


def correction(device: DeviceSpec, metric: str, size: float) -> float:
    """Published / roofline speed on ``device`` for a model of ``size``.

    ``size`` is the weight memory (GB) for ``decode_tok_s`` and the LLM's parameters (billions)
    for ``prefill_tok_s``. Anchors of equal size are averaged (geometric mean); beyond the
    smallest and largest anchor the correction stays constant.
    """
    if (metric == "decode_tok_s" and device.fixed_decode_tok_s is not None) or (
        metric == "prefill_tok_s" and device.fixed_prefill_tok_s is not None
    ):
        return 1.0
    anchors = _anchors(device, metric)
    if not anchors:
        return 1.0
    by_size: dict[float, list[float]] = {}
    for m in anchors:
        ratio = m.value / measurement_roofline(device, m)
        by_size.setdefault(np.log(_size(m, metric)), []).append(np.log(ratio))
    xs = np.array(sorted(by_size))
    ys = np.array([np.mean(by_size[x]) for x in xs])
    return float(np.exp(np.interp(np.log(size), xs, ys)))


@dataclass(frozen=True)
class TrueSpeeds:
    """True single-stream speeds of one model on one device.

    Attributes
    ----------
    decode_tok_s
        Tokens per second of one stream with a negligible context.
    prefill_tok_s
        Prompt tokens per second.
    vision_tok_s
        Vision-encoder patches per second.
    weights_gb
        Bytes every decode step streams once for the whole batch.
    kv_gb_per_token
        KV-cache bytes per token of context, read once per decode step by its own request.
    """

    decode_tok_s: float
    prefill_tok_s: float
    vision_tok_s: float
    weights_gb: float
    kv_gb_per_token: float

    def step_s(self, batch_kv_gb: float) -> float:
        """Time of one decode step when the batch reads ``batch_kv_gb`` of KV cache."""
        return (self.weights_gb + batch_kv_gb) / (self.decode_tok_s * self.weights_gb)


def true_speeds(device: DeviceSpec, model: ModelSpec) -> TrueSpeeds:
    """The world's speeds of ``model`` on ``device`` (roofline times the anchor correction)."""
    prefill_fix = correction(device, "prefill_tok_s", model.llm_params_b)
    return TrueSpeeds(
        decode_tok_s=device.decode_tok_s(model)
        * correction(device, "decode_tok_s", model.weights_gb),
        prefill_tok_s=device.prefill_tok_s(model) * prefill_fix,
        vision_tok_s=device.vision_tok_s(model) * prefill_fix,
        weights_gb=model.weights_gb,
        kv_gb_per_token=model.kv_bytes_per_token / 1e9,
    )
