"""The shipped catalog: required entries, spot values from calibration.md, and sources."""

import re

import pytest

from qlmio_opt.domain.catalog import TASK_FAMILIES, default_catalog
from qlmio_opt.domain.catalog.build import DEVICE_FIELDS, DEVICE_OPTIONAL, MODEL_FIELDS, TASK_FIELDS

MODELS = [
    "qwen2-vl-2b",
    "qwen2-vl-7b",
    "qwen2-vl-72b",
    "qwen2.5-vl-3b",
    "qwen2.5-vl-7b",
    "qwen2.5-vl-72b",
    "internvl2-1b",
    "internvl2-2b",
    "internvl2-4b",
    "internvl2-8b",
    "minicpm-v-2.6",
    "llava-1.5-7b",
    "llava-1.5-13b",
    "smolvlm",
    "gpt-4o",
]
DEVICES = [
    "jetson-orin-nano",
    "jetson-orin-nano-super",
    "jetson-agx-orin",
    "jetson-agx-orin-32gb",
    "rtx-4090",
    "l4",
    "a100",
    "h100",
    "a100x2",
    "a100x4",
    "h100x2",
    "h100x4",
    "h100x8",
    "api",
]
SOURCE_FORMAT = re.compile(r"^(S\d+[^:]*|derived|assumption): \S")
TAG = re.compile(r"\bS(\d+)\b")


@pytest.fixture(scope="module")
def cat():
    return default_catalog()


def test_required_keys(cat):
    assert sorted(cat.models) == sorted(MODELS)
    assert sorted(cat.devices) == sorted(DEVICES)
    assert tuple(cat.tasks) == TASK_FAMILIES


@pytest.mark.parametrize(
    ("key", "field", "value"),
    [
        ("qwen2-vl-7b", "kv_bytes_per_token", 57344),
        ("qwen2-vl-7b", "weights_gb", 15.4),
        ("qwen2-vl-2b", "kv_bytes_per_token", 28672),
        ("qwen2-vl-72b", "kv_bytes_per_token", 327680),
        ("qwen2-vl-72b", "weights_gb", 136.6),
        ("qwen2.5-vl-3b", "kv_bytes_per_token", 36864),
        ("qwen2.5-vl-3b", "weights_gb", 7.0),
        ("internvl2-1b", "kv_bytes_per_token", 12288),
        ("internvl2-2b", "weights_gb", 4.1),
        ("internvl2-2b", "kv_bytes_per_token", 98304),
        ("internvl2-4b", "kv_bytes_per_token", 393216),
        ("internvl2-8b", "kv_bytes_per_token", 131072),
        ("internvl2-8b", "params_b", 8.1),
        ("minicpm-v-2.6", "kv_bytes_per_token", 57344),
        ("minicpm-v-2.6", "weights_gb", 15.0),
        ("llava-1.5-7b", "kv_bytes_per_token", 524288),
        ("llava-1.5-13b", "kv_bytes_per_token", 819200),
        ("smolvlm", "kv_bytes_per_token", 196608),
        ("qwen2-vl-7b", "vision_params_b", 0.675),
    ],
)
def test_model_spot_values(cat, key, field, value):
    assert getattr(cat.model(key), field) == value


@pytest.mark.parametrize(
    ("key", "task", "value"),
    [
        ("qwen2-vl-2b", "document", 0.901),
        ("qwen2-vl-2b", "chart", 0.735),
        ("qwen2-vl-7b", "general-vqa", 0.830),
        ("qwen2-vl-72b", "document", 0.965),
        ("internvl2-8b", "chart", 0.833),
        ("llava-1.5-7b", "general-vqa", 0.643),
        ("gpt-4o", "document", 0.928),
    ],
)
def test_accuracy_spot_values(cat, key, task, value):
    assert cat.model(key).accuracy[task] == pytest.approx(value)


def test_vision_patches_per_token(cat):
    expected = {"Qwen2-VL": 4, "Qwen2.5-VL": 4, "InternVL2": 4, "LLaVA-1.5": 1, "SmolVLM": 9}
    expected["MiniCPM-V"] = 16
    for model in cat.models.values():
        if model.family in expected:
            assert model.vision_patches_per_token == expected[model.family], model.key


def test_model_sizes_are_consistent(cat):
    for model in cat.models.values():
        parts = model.llm_params_b + model.vision_params_b
        assert parts == pytest.approx(model.params_b, rel=0.06), model.key
        assert model.accuracy.keys() == set(TASK_FAMILIES)
        assert model.modalities == ("text", "image")
        # bf16: about 2 bytes per parameter (checkpoint "GB" read as GiB allows ~7% less)
        if model.key != "gpt-4o":
            assert 1.7 <= model.weights_gb / model.params_b <= 2.1, model.key


def _needed_sources(entry, fields, optional=()):
    names = [n for n in fields if getattr(entry, n, None) is not None]
    names += [n for n in optional if getattr(entry, n, None) is not None]
    return names


def test_every_model_field_has_a_source(cat):
    for model in cat.models.values():
        needed = [*_needed_sources(model, MODEL_FIELDS), "image_tokens"]
        needed += [f"accuracy.{t}" for t in model.accuracy]
        missing = [n for n in needed if n not in model.sources]
        assert not missing, (model.key, missing)


def test_every_device_field_has_a_source(cat):
    for device in cat.devices.values():
        needed = _needed_sources(device, DEVICE_FIELDS, DEVICE_OPTIONAL)
        missing = [n for n in needed if n not in device.sources]
        assert not missing, (device.key, missing)
        for m in device.measurements:
            assert SOURCE_FORMAT.match(m.source), m.source


def test_every_task_field_has_a_source(cat):
    for task in cat.tasks.values():
        missing = [n for n in TASK_FIELDS if n not in task.sources]
        assert not missing, (task.key, missing)


def _all_source_texts(cat):
    for group in (cat.models, cat.devices, cat.tasks):
        for entry in group.values():
            for field, text in entry.sources.items():
                yield f"{entry.key}.{field}", text
    for device in cat.devices.values():
        for m in device.measurements:
            yield f"{device.key}.measurements", m.source
            yield f"{device.key}.measurements.note", m.note


def test_sources_start_with_a_tag_derived_or_assumption(cat):
    for where, text in _all_source_texts(cat):
        if where.endswith(".note"):
            continue
        assert SOURCE_FORMAT.match(text), (where, text)


def test_every_tag_mentioned_is_defined(cat):
    for where, text in _all_source_texts(cat):
        for number in TAG.findall(text):
            assert f"S{number}" in cat.sources, (where, text)


def test_sources_table_matches_calibration_tags(cat):
    assert set(cat.sources) == {f"S{i}" for i in range(1, 38) if i != 33}
    assert "Qwen2.5-VL" in cat.sources["S5"]


def test_assumptions_that_need_a_reason(cat):
    # "assumption" alone is not enough: say why.
    for where, text in _all_source_texts(cat):
        if text.startswith("assumption:"):
            assert len(text) > len("assumption: ") + 10, where


def test_edge_and_cloud_devices(cat):
    edge = {k for k, d in cat.devices.items() if d.tier_hint == "edge"}
    assert {"jetson-orin-nano", "jetson-agx-orin", "rtx-4090"} <= edge
    assert cat.device("jetson-orin-nano").memory_gb == 8
    assert cat.device("jetson-agx-orin").memory_gb == 64
    assert cat.device("a100").memory_gb == 80
    assert cat.device("h100x8").memory_gb == 640
    for device in cat.devices.values():
        assert (device.parallel_efficiency == 1.0) == (device.num_gpus == 1), device.key


def test_api_device_has_fixed_throughputs(cat):
    api = cat.device("api")
    for key in ("gpt-4o", "qwen2-vl-2b"):
        assert api.decode_tok_s(cat.model(key)) == api.fixed_decode_tok_s
        assert api.prefill_tok_s(cat.model(key)) == api.fixed_prefill_tok_s
    others = [d for d in cat.devices.values() if d.key != "api"]
    assert all(d.fixed_decode_tok_s is None and d.fixed_prefill_tok_s is None for d in others)


def test_fits(cat):
    nano, agx = cat.device("jetson-orin-nano"), cat.device("jetson-agx-orin")
    assert nano.free_memory_gb(cat.model("qwen2-vl-2b")) > 0
    assert nano.free_memory_gb(cat.model("qwen2-vl-7b")) < 0
    assert agx.free_memory_gb(cat.model("qwen2-vl-7b")) > 0
    assert cat.device("a100").free_memory_gb(cat.model("qwen2-vl-72b")) < 0
    assert cat.device("a100x2").free_memory_gb(cat.model("qwen2-vl-72b")) > 0
    assert cat.device("api").free_memory_gb(cat.model("gpt-4o")) > 0
