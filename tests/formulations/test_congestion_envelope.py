"""The congestion curve's convex envelope against the plain monotone chain it replaced.

``monotone_chain_hull`` keeps the last two hull points in locals; it must drop exactly the points
the plain loop (kept here, as it was) drops, float comparison for float comparison, so every
envelope and every problem built from it stays the same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.scenarios import sized_window
from qlmio_opt.formulations import congestion
from qlmio_opt.formulations.congestion import lower_convex_envelope, monotone_chain_hull


def plain_chain(values: np.ndarray) -> list[int]:
    """The loop before: the hull's last two points read from the list at every step."""
    points = values.tolist()
    hull: list[int] = []
    for i, v in enumerate(points):
        while len(hull) >= 2:
            i1, i2 = hull[-2], hull[-1]
            v1 = points[i1]
            if (points[i2] - v1) * (i - i1) >= (v - v1) * (i2 - i1):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def curves_of_every_kind(rng: np.random.Generator) -> list[np.ndarray]:
    """Noisy, rounded (ties), concave, collinear-in-runs, flat-in-steps and tiny curves."""
    out = []
    for n in (0, 1, 2, 3, 5, 17, 64):
        x = np.arange(n, dtype=float)
        out += [
            rng.normal(size=n),
            np.round(rng.normal(size=n), 1),
            -(x**2) + 0.01 * rng.normal(size=n),
            0.3 * x + 0.7 * np.floor(x / 3) * x,
            np.repeat(rng.normal(size=n // 3 + 1), 3)[:n],
            np.zeros(n),
        ]
    return out


def test_the_hull_drops_the_points_the_plain_loop_drops() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        for values in curves_of_every_kind(rng):
            assert monotone_chain_hull(values) == plain_chain(values)


@pytest.mark.parametrize("concurrency", [4, 8, 96])
def test_congestion_curves_are_the_plain_loops_envelopes(concurrency: int) -> None:
    """On the curves of a real node (float noise in the collinear runs decides the hull)."""
    raw = congestion.raw_total(np.arange(3000), concurrency, 1.7, 0.3, 0.02)
    raw = raw + congestion.prefill_contention(np.arange(3000), 0.4, 0.8, concurrency)
    hull = plain_chain(raw)
    expected = np.interp(np.arange(raw.size), hull, raw[hull])
    assert len(hull) < raw.size  # the noise makes the loop drop points: the case that matters
    np.testing.assert_array_equal(lower_convex_envelope(raw), expected)


def test_a_windows_curves_are_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every curve of a generated window, envelope by envelope, against the plain loop's."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    original = congestion.lower_convex_envelope

    def recording(values: np.ndarray) -> np.ndarray:
        envelope = original(values)
        seen.append((values.copy(), envelope))
        return envelope

    monkeypatch.setattr(congestion, "lower_convex_envelope", recording)
    from qlmio_opt.formulations import build_problem
    from qlmio_opt.predictors import predict

    instance = Instance.from_dict(sized_window(600, 8, 3))
    build_problem(instance, predict(instance))
    assert seen
    for values, envelope in seen:
        hull = plain_chain(values)
        np.testing.assert_array_equal(
            envelope, np.interp(np.arange(values.size), hull, values[hull])
        )
