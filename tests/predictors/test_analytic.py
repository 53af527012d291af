"""The analytic predictor against hand computations (instances/small/analytic.json)."""

import numpy as np
import pytest
from conftest import INSTANCES, SMALL
from hypothesis import given, settings
from hypothesis import strategies as st

from qlmio_opt import read_instance
from qlmio_opt.predictors import AnalyticPredictor, Predictor, predict


@pytest.fixture(scope="module")
def analytic():
    return read_instance(SMALL / "analytic.json")


def test_latency_by_hand(analytic):
    p = predict(analytic)
    # r0 edge: wait 1.5 + 8*250400/80e6 + 0.010 + 500/10000 + 600/2500 + 16/12.5
    edge = 1.5 + 8 * 250400 / 80e6 + 0.010 + 500 / 10000 + 600 / 2500 + 16 / 12.5
    # r0 cloud: bottleneck 40 Mbps, RTT 10 + 30 ms, vision 500/1e5, prefill 600/1000, decode 16/10
    cloud = 1.5 + 8 * 250400 / 40e6 + 0.040 + 500 / 100000 + 600 / 1000 + 16 / 10
    # r1 (text only, arrives at the window's end, output capped at max_output_tokens = 128)
    r1_edge = 0 + 8 * 200 / 80e6 + 0.010 + 0 + 50 / 2500 + 128 / 12.5
    r1_cloud = 0 + 8 * 200 / 40e6 + 0.040 + 0 + 50 / 1000 + 128 / 10
    np.testing.assert_allclose(p.latency_s, [[edge, cloud], [r1_edge, r1_cloud]], rtol=1e-12)
    assert edge == pytest.approx(3.10504)


def test_components_sum_to_latency(analytic):
    p = predict(analytic)
    parts = ("wait_s", "transfer_s", "rtt_s", "vision_s", "prefill_s", "decode_s")
    np.testing.assert_allclose(sum(p.components[k] for k in parts), p.latency_s)
    np.testing.assert_array_equal(p.components["image_tokens"], [[500, 500], [0, 0]])
    np.testing.assert_array_equal(p.components["output_tokens"], [[16, 16], [128, 128]])


def test_quality_by_hand(analytic):
    p = predict(analytic)
    # fixed 500x500 input: the model sees 250,000 of the image's 500,000 pixels; the (inline)
    # reference size 500x500 is seen whole, so the odds of completion are multiplied by
    # f = 0.5 ** resolution_exponent(0.5): q = a f / (1 - a + a f).
    f = 0.5**0.5
    edge, cloud = 0.6 * f / (0.4 + 0.6 * f), 0.9 * f / (0.1 + 0.9 * f)
    np.testing.assert_allclose(p.quality, [[edge, cloud], [0.8, 0.9]])
    assert edge == pytest.approx(0.51472, abs=1e-5) and cloud == pytest.approx(0.86420, abs=1e-5)


def test_quality_stays_a_probability_by_construction():
    from qlmio_opt.predictors.features import resolution_quality

    accuracy = np.array([0.0, 0.3, 0.95, 1.0])
    for shift in (-50.0, -1.0, 0.0, 1.0, 50.0, 1e6):
        q = resolution_quality(accuracy, np.full(4, shift))
        assert np.all((q >= 0) & (q <= 1)) and q[0] == 0 and q[-1] == 1
    np.testing.assert_allclose(resolution_quality(accuracy, np.zeros(4)), accuracy)


def test_no_committed_window_needs_clipping():
    # every eligible pair's quality is inside [0, 1] before any clip could act
    for path in sorted(INSTANCES.glob("window_0[0-4]*.json")):
        p = predict(read_instance(path))
        q = p.quality[p.eligible]
        assert q.min() >= 0 and q.max() <= 1


def test_memory_and_upload_by_hand(analytic):
    p = predict(analytic)
    np.testing.assert_allclose(
        p.memory_gb, [[664 * 100_000 / 1e9, 664 * 200_000 / 1e9], [178e5 / 1e9, 178 * 2e5 / 1e9]]
    )
    np.testing.assert_array_equal(p.upload_bytes, [250_400, 200])
    # memory_gb "auto": 24 GB * 0.9 usable - 1.6 reserved - 4 GB of weights
    np.testing.assert_allclose(analytic.node_memory_gb, [16.0, np.inf])


def test_predictor_contract():
    pred = AnalyticPredictor()
    assert isinstance(pred, Predictor)
    assert pred.fit() is pred and pred.is_fitted_


def test_predictions_are_read_only(analytic):
    p = predict(analytic)
    with pytest.raises(ValueError):
        p.latency_s[0, 0] = 0.0


def test_overrides_replace_predictions_and_switch_off_congestion():
    instance = read_instance(SMALL / "infeasible.json")
    p = predict(instance)
    assert p.source == "overrides" and not p.congestion
    assert not p.eligible[0, 1] and np.isinf(p.latency_s[0, 1])  # null latency = not allowed
    np.testing.assert_array_equal(p.quality[:, 0], [0.8, 0.85, 0.7])


def test_benchmark_window_predictions_are_sane():
    instance = read_instance(INSTANCES / "window_042.json")
    p = predict(instance)
    r, n = p.shape
    assert (r, n) == (len(instance.requests), len(instance.nodes))
    ok = p.eligible
    assert ok.all(axis=1).any()
    assert np.all((p.quality >= 0) & (p.quality <= 1))
    assert np.all(np.isfinite(p.latency_s[ok])) and np.all(p.latency_s[ok] > 0)
    assert np.all(p.memory_gb > 0)
    cloud = np.array([node.tier == "cloud" for node in instance.nodes])
    # the 72B cloud models are more accurate than every edge model on average
    assert p.quality[:, cloud].mean() > p.quality[:, ~cloud].mean()


@settings(max_examples=25, deadline=None)
@given(
    width=st.integers(64, 4000),
    height=st.integers(64, 4000),
    extra_bytes=st.integers(1, 5_000_000),
)
def test_bigger_uploads_never_arrive_sooner(analytic, width, height, extra_bytes):
    """Monotonicity: more bytes never lower the predicted latency; pixels never raise quality
    above the published accuracy beyond the clip."""
    data = analytic.to_dict()
    img = {"width": width, "height": height, "bytes": 1000}
    data["requests"][0]["images"] = [img]
    small = predict(type(analytic).from_dict(data))
    data["requests"][0]["images"] = [dict(img, bytes=1000 + extra_bytes)]
    big = predict(type(analytic).from_dict(data))
    assert np.all(big.latency_s >= small.latency_s)
    assert np.all((small.quality >= 0) & (small.quality <= 1))
