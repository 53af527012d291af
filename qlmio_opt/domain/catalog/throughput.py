"""Roofline throughput formulas and their fit to published measurements.

Decode streams every weight once per token, so it is bound by memory bandwidth; prefill and
vision encoding cost about ``2 * params`` FLOPs per token, so they are bound by compute.
The efficiencies are fitted (geometric mean of the ratios) to the published anchor points
listed with each device; lower-bound and outlier points are not used in the fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qlmio_opt.domain.catalog.specs import DeviceSpec, Measurement

__all__ = [
    "compute_tok_s",
    "decode_tok_s",
    "fit_decode_efficiency",
    "fit_prefill_tflops",
    "measurement_roofline",
]


def decode_tok_s(
    efficiency: float,
    bandwidth_gbs: float,
    num_gpus: int,
    parallel_efficiency: float,
    weights_gb: float,
) -> float:
    """Memory-bound decode rate: ``efficiency * bandwidth * gpus * parallel_eff / weights``."""
    return efficiency * bandwidth_gbs * num_gpus * parallel_efficiency / weights_gb


def compute_tok_s(
    tflops: float, num_gpus: int, parallel_efficiency: float, params_b: float
) -> float:
    """Compute-bound rate (prefill tokens or vision patches): ``flops / (2 * params)``."""
    return tflops * 1e12 * num_gpus * parallel_efficiency / (2.0 * params_b * 1e9)


def measurement_roofline(device: DeviceSpec, m: Measurement) -> float:
    """What the device's roofline predicts for the measured run (its own weights/params)."""
    if m.metric == "decode_tok_s":
        return decode_tok_s(
            device.decode_efficiency,
            device.memory_bandwidth_gbs,
            device.num_gpus,
            device.parallel_efficiency,
            m.weights_gb,
        )
    return compute_tok_s(
        device.prefill_tflops, device.num_gpus, device.parallel_efficiency, m.model_params_b
    )


def _anchors(device: DeviceSpec, metric: str) -> list[Measurement]:
    return [
        m for m in device.measurements if m.metric == metric and not m.lower_bound and not m.outlier
    ]


def _geomean(values: Iterable[float]) -> float | None:
    logs = [math.log(v) for v in values]
    return math.exp(sum(logs) / len(logs)) if logs else None


def fit_decode_efficiency(device: DeviceSpec) -> float | None:
    """Decode efficiency that best fits the device's own decode anchors (None if none)."""
    per_gpu = device.memory_bandwidth_gbs * device.num_gpus * device.parallel_efficiency
    return _geomean(m.value * m.weights_gb / per_gpu for m in _anchors(device, "decode_tok_s"))


def fit_prefill_tflops(device: DeviceSpec) -> float | None:
    """Per-GPU prefill TFLOP/s that best fits the device's own prefill anchors (or None)."""
    scale = device.num_gpus * device.parallel_efficiency
    return _geomean(
        m.value * 2.0 * m.model_params_b * 1e9 / (scale * 1e12)
        for m in _anchors(device, "prefill_tok_s")
    )
