"""The congestion model: how requests placed on one node in one window slow each other.

A node with ``c`` concurrent slots serves its ``m`` requests of the window first come, first
served. Two effects add to the requests' stand-alone latencies, in total over the node::

    queueing  Q(m) = S * sum_{i=1..m} floor((i - 1) / c)        request i waits for earlier rounds
    batching  B(m) = alpha * D * m * (min(m, c) - 1)              decode shares memory bandwidth

``S`` is the mean stand-alone service time (vision + prefill + decode) of the requests that may
use the node, ``D`` their mean decode time and ``alpha`` the decode slowdown per extra request in
the batch: one decode step reads the weights once for the whole batch plus each request's KV
cache, so ``alpha = K / (W + K)`` with ``W`` the weight bytes and ``K`` the mean KV bytes a request
reads per step. The formulation uses the lower convex envelope ``E(m)`` of ``Q(m) + B(m)`` at
integer ``m`` (the two differ only where ``B`` is concave, right after ``m = c``; :func:`curve`
reports the largest gap), so it is linear-programming friendly: ``theta >= E_i + s_i (m - m_i)``
for every segment ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class CongestionCurve:
    """A convex piecewise-linear total extra latency ``E(m)`` (seconds) for one node.

    Attributes
    ----------
    values
        ``E(0), E(1), ..., E(m_max)``; ``E(0) = E(1) = 0``.
    envelope_gap_s
        Largest ``raw(m) - E(m)`` over the integers (0 when the raw model is already convex).
    """

    values: NDArray[np.float64]
    envelope_gap_s: float = 0.0

    @property
    def max_count(self) -> int:
        return len(self.values) - 1

    def __call__(self, m: ArrayLike) -> NDArray[np.float64] | float:
        """``E(m)``; beyond ``max_count`` the last slope continues."""
        m = np.asarray(m)
        top = self.max_count
        slope = self.values[-1] - self.values[-2] if top >= 1 else 0.0
        inside = self.values[np.minimum(m, top)]
        out = np.where(m > top, self.values[-1] + slope * (m - top), inside)
        return float(out) if out.ndim == 0 else out

    def segments(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Slopes and intercepts of the distinct linear pieces: ``E(m) = max_i a_i m + b_i``."""
        values = self.values
        slopes = values[1:] - values[:-1]
        if slopes.size == 0:
            return np.zeros(1), np.zeros(1)
        keep = np.empty(slopes.size, dtype=bool)
        keep[0] = True
        np.greater(np.abs(slopes[1:] - slopes[:-1]), 1e-12, out=keep[1:])
        starts = np.flatnonzero(keep)
        a = slopes[starts]
        b = values[starts] - a * starts
        return a, b


def raw_total(
    m: ArrayLike, concurrency: int, service_s: float, decode_s: float, alpha: float
) -> NDArray[np.float64]:
    """``Q(m) + B(m)`` before the convex envelope (vectorised over integer ``m``)."""
    m = np.asarray(m, dtype=float)
    c = float(concurrency)
    full_rounds = np.floor(np.maximum(m - 1, 0) / c)
    # sum_{i=1..m} floor((i-1)/c) = c * k (k - 1) / 2 + k * (m - c k), with k = floor((m - 1) / c)
    rounds = np.where(
        m > 0, c * full_rounds * (full_rounds - 1) / 2 + full_rounds * (m - c * full_rounds), 0.0
    )
    batch = alpha * decode_s * m * (np.minimum(m, c) - 1).clip(min=0)
    return service_s * rounds + batch


def lower_convex_envelope(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """The largest convex function below ``values`` at the integers (Andrew's monotone chain)."""
    hull: list[int] = []
    for i, v in enumerate(values):
        while len(hull) >= 2:
            i1, i2 = hull[-2], hull[-1]
            # drop i2 if it lies on or above the line from i1 to i
            if (values[i2] - values[i1]) * (i - i1) >= (v - values[i1]) * (i2 - i1):
                hull.pop()
            else:
                break
        hull.append(i)
    return np.interp(np.arange(len(values)), hull, values[hull])


def curve(
    max_count: int,
    concurrency: int,
    service_s: float,
    decode_s: float,
    alpha: float,
    active: int = 0,
) -> CongestionCurve:
    """The convex congestion curve of one node for up to ``max_count`` requests.

    With ``active`` requests of earlier windows already on the node, the window's ``m`` requests
    come after them: the curve is ``raw(active + m) - raw(active)``.
    """
    m = np.arange(max(max_count, 1) + 1)
    raw = raw_total(m + active, concurrency, service_s, decode_s, alpha) - raw_total(
        np.array([active]), concurrency, service_s, decode_s, alpha
    )
    env = lower_convex_envelope(raw)
    return CongestionCurve(values=env, envelope_gap_s=float(np.max(raw - env)))


def zero_curve(max_count: int) -> CongestionCurve:
    """No congestion (matrix overrides: given latencies are final)."""
    return CongestionCurve(values=np.zeros(max(max_count, 1) + 1))
