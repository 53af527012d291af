"""Lookups, merging user entries, TOML override files, and determinism."""

import copy

import pytest

from qlmio_opt.domain.catalog import (
    Catalog,
    DeviceSpec,
    ModelSpec,
    TaskSpec,
    default_catalog,
    load_catalog,
)
from qlmio_opt.domain.catalog.build import to_raw
from qlmio_opt.domain.errors import CatalogError, InputError

NEW_MODEL = {
    "display_name": "My VLM",
    "family": "Mine",
    "params_b": 3.0,
    "llm_params_b": 2.5,
    "vision_params_b": 0.5,
    "weights_gb": 6.0,
    "kv_bytes_per_token": 65536,
    "modalities": ["text", "image"],
    "image_tokens": {"rule": "fixed", "tokens": 256, "input_px": 448},
    "vision_patches_per_token": 4,
    "accuracy": {
        "ocr": 0.5,
        "document": 0.5,
        "chart": 0.5,
        "general-vqa": 0.6,
        "reasoning": 0.3,
        "captioning": 0.6,
    },
}
NEW_DEVICE = {
    "display_name": "My box",
    "tier_hint": "edge",
    "num_gpus": 1,
    "memory_gb": 16,
    "memory_bandwidth_gbs": 400,
    "decode_efficiency": 0.7,
    "prefill_tflops": 40,
    "parallel_efficiency": 1.0,
    "default_max_concurrency": 4,
    "usable_memory_fraction": 0.9,
    "reserved_gb": 1.0,
}


def _paths(err: CatalogError) -> list[str]:
    return [issue.path for issue in err.issues]


@pytest.fixture(scope="module")
def cat():
    return default_catalog()


# -- lookups -----------------------------------------------------------------------------------
def test_lookups_return_specs(cat):
    assert isinstance(cat.model("qwen2-vl-7b"), ModelSpec)
    assert isinstance(cat.device("a100"), DeviceSpec)
    assert isinstance(cat.task("ocr"), TaskSpec)


@pytest.mark.parametrize("kind", ["model", "device", "task"])
def test_unknown_key_names_it_and_lists_known_ones(cat, kind):
    with pytest.raises(CatalogError) as info:
        getattr(cat, kind)("qwen9")
    message = str(info.value)
    assert f'unknown {kind} "qwen9"' in message
    assert "known:" in message
    assert isinstance(info.value, InputError)


def test_catalog_is_immutable(cat):
    with pytest.raises(TypeError):
        cat.models["x"] = cat.model("qwen2-vl-7b")  # type: ignore[index]
    with pytest.raises(AttributeError):
        cat.model("qwen2-vl-7b").weights_gb = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        cat.model("qwen2-vl-7b").accuracy["ocr"] = 1.0  # type: ignore[index]


# -- merging -----------------------------------------------------------------------------------
def test_partial_override_changes_only_that_field(cat):
    new = cat.with_entries(models={"qwen2-vl-7b": {"weights_gb": 8.5}})
    old_m, new_m = cat.model("qwen2-vl-7b"), new.model("qwen2-vl-7b")
    assert new_m.weights_gb == 8.5
    assert new_m.sources["weights_gb"] == "user-supplied"
    old_raw, new_raw = to_raw(old_m), to_raw(new_m)
    del old_raw["weights_gb"], new_raw["weights_gb"]
    del old_raw["sources"]["weights_gb"], new_raw["sources"]["weights_gb"]
    assert old_raw == new_raw
    assert cat.model("qwen2-vl-7b").weights_gb == 15.4  # the original is untouched
    assert new.model("qwen2-vl-2b") == cat.model("qwen2-vl-2b")


def test_nested_tables_merge_key_by_key(cat):
    new = cat.with_entries(
        models={
            "qwen2-vl-2b": {"accuracy": {"ocr": 0.5}, "image_tokens": {"max_tokens": 256}},
        }
    )
    model = new.model("qwen2-vl-2b")
    assert model.accuracy["ocr"] == 0.5
    assert model.accuracy["document"] == cat.model("qwen2-vl-2b").accuracy["document"]
    assert model.image_tokens.params["max_tokens"] == 256
    assert model.image_tokens.params["patch_px"] == 28
    assert model.sources["accuracy.ocr"] == "user-supplied"
    assert model.sources["image_tokens.max_tokens"] == "user-supplied"
    assert model.sources["accuracy.document"].startswith("S5")


def test_changing_the_rule_kind_replaces_its_parameters(cat):
    new = cat.with_entries(
        models={"qwen2-vl-2b": {"image_tokens": {"rule": "fixed", "tokens": 100, "input_px": 224}}}
    )
    model = new.model("qwen2-vl-2b")
    assert model.image_tokens.tokens(1000, 1000) == 100
    assert model.sources["image_tokens"] == "user-supplied"
    assert "image_tokens.max_tokens" not in model.sources


def test_new_complete_entries(cat):
    new = cat.with_entries(models={"my-vlm": NEW_MODEL}, devices={"my-box": NEW_DEVICE})
    model, device = new.model("my-vlm"), new.device("my-box")
    assert model.image_tokens.tokens(10, 10) == 256
    assert set(model.sources.values()) == {"user-supplied"}
    assert device.decode_tok_s(model) == pytest.approx(0.7 * 400 / 6.0)
    assert device.measurements == ()
    assert "my-vlm" not in cat.models


def test_user_sources_are_kept(cat):
    entry = {**NEW_MODEL, "sources": {"weights_gb": "measured on our box"}}
    model = cat.with_entries(models={"my-vlm": entry}).model("my-vlm")
    assert model.sources["weights_gb"] == "measured on our box"
    assert model.sources["params_b"] == "user-supplied"


@pytest.mark.parametrize("field", ["weights_gb", "accuracy", "image_tokens", "modalities"])
def test_incomplete_new_model_names_the_missing_field(cat, field):
    entry = {k: v for k, v in NEW_MODEL.items() if k != field}
    with pytest.raises(CatalogError) as info:
        cat.with_entries(models={"my-model": entry})
    assert any(p.startswith(f"models.my-model.{field}") for p in _paths(info.value))
    assert "missing" in str(info.value)


def test_incomplete_new_accuracy_names_the_task(cat):
    entry = copy.deepcopy(NEW_MODEL)
    del entry["accuracy"]["chart"]
    with pytest.raises(CatalogError) as info:
        cat.with_entries(models={"my-model": entry})
    assert _paths(info.value) == ["models.my-model.accuracy.chart"]


def test_incomplete_new_device(cat):
    entry = {k: v for k, v in NEW_DEVICE.items() if k != "prefill_tflops"}
    with pytest.raises(CatalogError) as info:
        cat.with_entries(devices={"box": entry}, path_prefix="catalog.")
    assert _paths(info.value) == ["catalog.devices.box.prefill_tflops"]


@pytest.mark.parametrize(
    ("update", "path", "message"),
    [
        (
            {"weights_gb": -1},
            "models.my-model.weights_gb",
            "must be a positive finite number (got -1)",
        ),
        ({"weights_gb": float("nan")}, "models.my-model.weights_gb", "positive finite"),
        ({"weights_gb": True}, "models.my-model.weights_gb", "positive finite"),
        ({"weights_gb": "big"}, "models.my-model.weights_gb", "positive finite"),
        ({"kv_bytes_per_token": 1.5}, "models.my-model.kv_bytes_per_token", "positive integer"),
        ({"accuracy": {"ocr": 1.2}}, "models.my-model.accuracy.ocr", "[0, 1]"),
        ({"accuracy": {"juggling": 0.5}}, "models.my-model.accuracy.juggling", "unknown task"),
        ({"image_tokens": {"rule": "spiral"}}, "models.my-model.image_tokens.rule", "unknown"),
        (
            {"image_tokens": {"max_tokens": 0}},
            "models.my-model.image_tokens.max_tokens",
            "positive",
        ),
        ({"modalities": ["text", "smell"]}, "models.my-model.modalities", "non-empty list"),
        ({"colour": "red"}, "models.my-model.colour", "unknown field"),
        ({"sources": {"colour": "x"}}, "models.my-model.sources.colour", "unknown field"),
    ],
)
def test_bad_values_fail_with_their_path(cat, update, path, message):
    base = {"my-model": {**NEW_MODEL, "image_tokens": {"rule": "patch"}}}
    cat2 = cat.with_entries(models=base)
    with pytest.raises(CatalogError) as info:
        cat2.with_entries(models={"my-model": update})
    assert path in _paths(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("update", "path"),
    [
        ({"tier_hint": "fog"}, "devices.a100.tier_hint"),
        ({"decode_efficiency": 1.5}, "devices.a100.decode_efficiency"),
        ({"num_gpus": 0}, "devices.a100.num_gpus"),
        ({"parallel_efficiency": 0.8}, "devices.a100.parallel_efficiency"),
        ({"reserved_gb": -1}, "devices.a100.reserved_gb"),
        ({"measurements": [{"model": "x"}]}, "devices.a100.measurements[0].value"),
        ({"measurements": "fast"}, "devices.a100.measurements"),
    ],
)
def test_bad_device_values(cat, update, path):
    with pytest.raises(CatalogError) as info:
        cat.with_entries(devices={"a100": update})
    assert path in _paths(info.value)


def test_every_problem_is_reported_at_once(cat):
    with pytest.raises(CatalogError) as info:
        cat.with_entries(
            models={"qwen2-vl-7b": {"weights_gb": -1, "params_b": 0}},
            tasks={"ocr": {"resolution_exponent": -0.1}},
            path_prefix="catalog.",
        )
    assert set(_paths(info.value)) == {
        "catalog.models.qwen2-vl-7b.weights_gb",
        "catalog.models.qwen2-vl-7b.params_b",
        "catalog.tasks.ocr.resolution_exponent",
    }


def test_entries_must_be_tables(cat):
    with pytest.raises(CatalogError) as info:
        cat.with_entries(models={"x": 3})
    assert _paths(info.value) == ["models.x"]


def test_new_task_needs_accuracy_in_every_model(cat):
    task = {
        "display_name": "Counting",
        "benchmarks": [],
        "typical_output_tokens": 4,
        "resolution_exponent": 0.1,
        "reference_width": 640,
        "reference_height": 480,
    }
    with pytest.raises(CatalogError) as info:
        cat.with_entries(tasks={"counting": task})
    assert "models.qwen2-vl-7b.accuracy.counting" in _paths(info.value)
    updates = {key: {"accuracy": {"counting": 0.5}} for key in cat.models}
    new = cat.with_entries(tasks={"counting": task}, models=updates)
    assert new.task("counting").typical_output_tokens == 4
    assert new.model("smolvlm").accuracy["counting"] == 0.5


def test_task_override(cat):
    new = cat.with_entries(tasks={"ocr": {"typical_output_tokens": 32}})
    assert new.task("ocr").typical_output_tokens == 32
    assert new.task("ocr").resolution_exponent == cat.task("ocr").resolution_exponent


# -- TOML files ----------------------------------------------------------------------------------
def test_toml_override_file(tmp_path, cat):
    path = tmp_path / "mine.toml"
    path.write_text(
        """
[models.qwen2-vl-7b]
weights_gb = 5.5

[models.qwen2-vl-7b.sources]
weights_gb = "AWQ checkpoint"

[models.my-vlm]
display_name = "My VLM"
family = "Mine"
params_b = 3.0
llm_params_b = 2.5
vision_params_b = 0.5
weights_gb = 6.0
kv_bytes_per_token = 65536
modalities = ["text", "image"]
image_tokens = { rule = "patch", max_tokens = 512 }
vision_patches_per_token = 4

[models.my-vlm.accuracy]
ocr = 0.5
document = 0.5
chart = 0.5
general-vqa = 0.6
reasoning = 0.3
captioning = 0.6

[devices.jetson-agx-orin]
default_max_concurrency = 2

[sources]
X1 = "our lab notebook"
""",
        encoding="utf-8",
    )
    loaded = load_catalog(path)
    assert loaded.model("qwen2-vl-7b").weights_gb == 5.5
    assert loaded.model("qwen2-vl-7b").sources["weights_gb"] == "AWQ checkpoint"
    assert loaded.model("my-vlm").image_tokens.tokens(4000, 3000) <= 512
    assert loaded.device("jetson-agx-orin").default_max_concurrency == 2
    assert loaded.sources["X1"] == "our lab notebook"
    assert loaded.sources["S5"] == cat.sources["S5"]
    assert default_catalog().model("qwen2-vl-7b").weights_gb == 15.4


def test_later_files_win(tmp_path):
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text("[devices.l4]\nreserved_gb = 2.0\n", encoding="utf-8")
    second.write_text("[devices.l4]\nreserved_gb = 3.0\n", encoding="utf-8")
    assert load_catalog(first, second).device("l4").reserved_gb == 3.0


def test_toml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[models.x\nweights_gb = ", encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert info.value.source == str(path)
    assert "broken.toml" in str(info.value)
    assert "invalid TOML" in str(info.value)


def test_toml_value_error_names_file_and_path(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[models.qwen2-vl-7b]\nweights_gb = -1\n", encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(info.value) == (
        f"{path}: models.qwen2-vl-7b.weights_gb: must be a positive finite number (got -1)"
    )


def test_toml_unknown_table_and_missing_file(tmp_path):
    path = tmp_path / "odd.toml"
    path.write_text("[gpus.a100]\nx = 1\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="unknown table"):
        load_catalog(path)
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "nope.toml")


# -- determinism and caching -----------------------------------------------------------------------
def test_default_catalog_is_cached_and_deterministic():
    assert default_catalog() is default_catalog()
    fresh = default_catalog.__wrapped__()
    assert fresh == default_catalog()
    assert fresh.models_frame().equals(default_catalog().models_frame())
    assert fresh.devices_frame().equals(default_catalog().devices_frame())
    assert list(fresh.models) == list(default_catalog().models)


def test_round_trip_through_plain_data(cat):
    rebuilt = Catalog({}, {}, {}, {}).with_entries(
        tasks={k: to_raw(t) for k, t in cat.tasks.items()},
        models={k: to_raw(m) for k, m in cat.models.items()},
        devices={k: to_raw(d) for k, d in cat.devices.items()},
        sources=cat.sources,
    )
    assert rebuilt == cat


def test_frames(cat):
    models = cat.models_frame()
    assert list(models.index) == list(cat.models)
    assert models.loc["qwen2-vl-7b", "weights_gb"] == 15.4
    assert models.loc["gpt-4o", "tokens_1024x768"] == 765
    tasks = cat.tasks_frame()
    assert list(tasks.index) == list(cat.tasks)
