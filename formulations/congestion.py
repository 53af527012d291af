"""The congestion model: how requests placed on one node in one window slow each other.

A node with ``c`` concurrent slots serves its ``m`` requests of the window first come, first
served. Three effects add to the requests' stand-alone latencies, in total over the node::

    queueing  Q(m) = S' * sum_{i=1..m} floor((i - 1) / c)       request i waits for earlier rounds
    batching  B(m) = alpha * D * m * (min(m, c) - 1)              decode shares memory bandwidth
    prefill   P(m) = (1 + g) * S_p * k (k - 1) / 2                prefills queue and slow decoding
                   + g * S_p * (c - 1) * max(m - c, 0),   k = min(m, c)

``S_p`` is the mean prefill work (vision + prefill) and ``g`` the engine's interference, the
seconds a decoding request loses per second of prefill work (1 for serial prefill; less for
chunked prefill, :mod:`qlmio_opt.domain.engine_load`, which also holds what the node's
live state adds per request). Prefills contend only among the requests in the slots at once: the
first ``k`` requests queue for each other's prefills and decode while the later ones prefill; a
request admitted after the first round finds ``c - 1`` others in the slots and loses ``g`` of
each one's prefill, and a round lasts ``S' = S + g * S_p * (c - 1)``. Counting every pair of the
window instead (the first form of this term) over-predicted a full 4-slot Jetson by up to 72%
(m = 18); this form is within 13% there and 6% on the other nodes
(``benchmarks/curve_vs_simulator.py``, docs/formulation.md).

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
    hull = monotone_chain_hull(values)
    return np.interp(np.arange(len(values)), hull, np.asarray(values)[hull])


def monotone_chain_hull(values: NDArray[np.float64]) -> list[int]:
    """The points of ``values``' lower hull, left to right (Andrew's monotone chain).

    A point on or above the line between its neighbours on the hull is dropped.
    """
    # over Python floats: indexing the array element by element costs 3-5x more (10,000 points);
    # the last two hull points are kept in locals (i1, v1, i2, v2) rather than read from the
    # list at every step: 1.4x faster on the 10,000 x 12 benchmark window's curves
    points: list[float] = np.asarray(values, dtype=float).tolist()
    if len(points) <= 2:
        return list(range(len(points)))
    hull = [0, 1]
    i1, v1, i2, v2 = 0, points[0], 1, points[1]
    for i in range(2, len(points)):
        v = points[i]
        # drop i2 while it lies on or above the line from i1 to i
        while (v2 - v1) * (i - i1) >= (v - v1) * (i2 - i1):
            hull.pop()
            if len(hull) < 2:
                i2, v2 = i1, v1
                break
            i2, v2 = i1, v1
            i1 = hull[-2]
            v1 = points[i1]
        hull.append(i)
        i1, v1, i2, v2 = i2, v2, i, v
    return hull


def prefill_contention(
    m: ArrayLike, prefill_s: float, interference: float, concurrency: int | None = None
) -> NDArray[np.float64]:
    """``P(m)``: the window's requests on one node delay each other through their prefills.

    The first ``k = min(m, c)`` are prefilled first come, first served, so the ``j``-th waits for
    the ``j - 1`` before it, and each decodes while the later ones are prefilled, losing
    ``interference`` seconds per second of that work: ``(1 + interference) * S * k (k - 1) / 2``
    with ``S`` the mean prefill work. Each request admitted later finds ``c - 1`` others in the
    slots and loses ``interference`` of their prefills (docs/formulation.md). ``concurrency``
    None: no slot limit.
    """
    m = np.asarray(m, dtype=float)
    c = np.inf if concurrency is None else float(concurrency)
    k = np.minimum(m, c)
    inside = (1.0 + interference) * prefill_s * k * np.maximum(k - 1.0, 0.0) / 2.0
    if concurrency is None:
        return inside
    later = interference * prefill_s * (c - 1.0) * np.maximum(m - c, 0.0)
    return inside + later


def curve(
    max_count: int,
    concurrency: int,
    service_s: float,
    decode_s: float,
    alpha: float,
    active: int = 0,
    prefill_s: float = 0.0,
    interference: float = 1.0,
) -> CongestionCurve:
    """The convex congestion curve of one node for up to ``max_count`` requests.

    With ``active`` requests of earlier windows already on the node, the window's ``m`` requests
    come after them: the queueing and batching part is ``raw(active + m) - raw(active)``; the
    prefill contention among the window's own requests is :func:`prefill_contention` (what
    they wait for from the earlier ones is a per-pair term, not part of the curve).
    """
    m = np.arange(max(max_count, 1) + 1)
    # a round lasts longer by what a request loses to the prefills of the others in the slots
    round_s = service_s + interference * prefill_s * (concurrency - 1)
    raw = raw_total(m + active, concurrency, round_s, decode_s, alpha) - raw_total(
        np.array([active]), concurrency, round_s, decode_s, alpha
    )
    raw = raw + prefill_contention(m, prefill_s, interference, concurrency)
    env = lower_convex_envelope(raw)
    return CongestionCurve(values=env, envelope_gap_s=float(np.max(raw - env)))


def zero_curve(max_count: int) -> CongestionCurve:
    """No congestion (matrix overrides: given latencies are final)."""
    return CongestionCurve(values=np.zeros(max(max_count, 1) + 1))
