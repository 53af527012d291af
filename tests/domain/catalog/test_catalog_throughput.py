"""The roofline against the published anchor points of every device."""

import re

import pytest

from qlmio_opt.domain.catalog import default_catalog
from qlmio_opt.domain.catalog.throughput import (
    fit_decode_efficiency,
    fit_prefill_tflops,
    measurement_roofline,
)

TOLERANCE = 1.35
"""A serving-engine anchor must be matched within a factor of 1.35 (35%) either way."""
LOOSE = 2.0
"""Every anchor except HF-transformers lower bounds, flagged or not, lies within a factor 2."""

CAT = default_catalog()
POINTS = [
    pytest.param(device, m, id=f"{device.key}-{m.metric}-{m.model[:20]}-{m.value:g}")
    for device in CAT.devices.values()
    for m in device.measurements
]
ANCHORS = [p for p in POINTS if not p.values[1].lower_bound and not p.values[1].outlier]


def test_there_are_anchors_for_decode_and_prefill():
    metrics = {p.values[1].metric for p in ANCHORS}
    assert metrics == {"decode_tok_s", "prefill_tok_s"}
    assert len(ANCHORS) >= 15


@pytest.mark.parametrize(("device", "m"), ANCHORS)
def test_roofline_reproduces_serving_anchors(device, m):
    ratio = measurement_roofline(device, m) / m.value
    assert 1 / TOLERANCE <= ratio <= TOLERANCE, f"roofline/measured = {ratio:.2f}"


@pytest.mark.parametrize(("device", "m"), [p for p in POINTS if p.values[1].lower_bound])
def test_roofline_respects_lower_bounds(device, m):
    assert measurement_roofline(device, m) >= m.value
    assert m.note


@pytest.mark.parametrize(("device", "m"), [p for p in POINTS if "HF" not in p.values[1].engine])
def test_every_serving_engine_point_is_within_a_factor_two(device, m):
    ratio = measurement_roofline(device, m) / m.value
    assert 1 / LOOSE <= ratio <= LOOSE, f"roofline/measured = {ratio:.2f}"


def test_outliers_say_why():
    outliers = [p.values[1] for p in POINTS if p.values[1].outlier]
    assert outliers
    assert all(len(m.note) > 30 for m in outliers)


@pytest.mark.parametrize("device", list(CAT.devices.values()), ids=list(CAT.devices))
def test_stored_efficiencies_are_the_fit(device):
    eta = fit_decode_efficiency(device)
    if eta is not None:
        assert device.decode_efficiency == pytest.approx(eta, rel=0.01)
        assert device.sources["decode_efficiency"].startswith("derived: ")
    tflops = fit_prefill_tflops(device)
    if tflops is not None:
        assert device.prefill_tflops == pytest.approx(tflops, rel=0.01)
        assert device.sources["prefill_tflops"].startswith("derived: ")


SAME_AS = re.compile(r"^derived: same as ([a-z0-9.-]+)")


@pytest.mark.parametrize("device", list(CAT.devices.values()), ids=list(CAT.devices))
def test_values_copied_from_siblings_match(device):
    for field, text in device.sources.items():
        match = SAME_AS.match(text)
        if match:
            sibling = CAT.device(match.group(1))
            assert getattr(device, field) == getattr(sibling, field), (field, sibling.key)


def test_roofline_formulas():
    a100, model = CAT.device("a100"), CAT.model("qwen2-vl-7b")
    assert a100.decode_tok_s(model) == pytest.approx(0.71 * 2039 / 15.4)
    assert a100.prefill_tok_s(model) == pytest.approx(198.5e12 / (2 * model.llm_params_b * 1e9))
    assert a100.vision_tok_s(model) == pytest.approx(198.5e12 / (2 * 0.675e9))
    h100x2 = CAT.device("h100x2")
    big = CAT.model("qwen2-vl-72b")
    assert h100x2.decode_tok_s(big) == pytest.approx(0.71 * 3350 * 2 * 0.85 / 136.6)
    assert a100.free_memory_gb(model) == pytest.approx(80 * 0.9 - 1.5 - 15.4)


def test_faster_hardware_is_faster():
    model = CAT.model("qwen2-vl-2b")
    order = ["jetson-orin-nano", "jetson-orin-nano-super", "jetson-agx-orin", "rtx-4090"]
    rates = [CAT.device(k).decode_tok_s(model) for k in order]
    assert rates == sorted(rates)
    big = CAT.model("qwen2-vl-72b")
    multi = ["a100x2", "a100x4", "h100x2", "h100x4", "h100x8"]
    for key in ("decode_tok_s", "prefill_tok_s"):
        values = [getattr(CAT.device(k), key)(big) for k in multi]
        assert values[0] < values[1] and values[2] < values[3] < values[4]


def test_devices_frame_lists_throughput_per_model_size():
    frame = CAT.devices_frame()
    assert list(frame.index) == list(CAT.devices)
    for size in ("2b", "7b", "72b"):
        assert f"decode_tok_s_{size}" in frame.columns
        assert f"prefill_tok_s_{size}" in frame.columns
    assert frame.loc["a100", "decode_tok_s_7b"] == pytest.approx(
        CAT.device("a100").decode_tok_s(CAT.model("qwen2-vl-7b"))
    )
    # 72B bf16 weights do not fit a single 80 GB GPU: shown as missing, not as a rate.
    assert frame["decode_tok_s_72b"].isna()["a100"]
    assert frame.loc["h100x2", "decode_tok_s_72b"] > 0
