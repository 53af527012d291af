"""The torch quality model: the predictor contract, determinism and safe files.

These tests need torch (the ``torch`` extra) to train; loading and predicting do not. Without
torch they skip (the default test set-up); CI installs the extra and runs them.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import shared_fits
from conftest import INSTANCES
from reference_path import instance_features, pairs_from_instance

from qlmio_opt import read_instance
from qlmio_opt.predictors.base import NotFittedError
from qlmio_opt.predictors.learned_torch import TorchQualityModel
from qlmio_opt.simulator.dataset import BenchData

pytestmark = pytest.mark.torch

SMALL = {"epochs": 4, "patience": 2, "hidden_sizes": (16, 8), "text_buckets": 256}


@pytest.fixture(scope="module")
def bench() -> BenchData:
    return shared_fits.bench()


@pytest.fixture(scope="module")
def model(bench: BenchData) -> TorchQualityModel:
    pytest.importorskip("torch", reason="training needs the torch extra")
    return TorchQualityModel(random_state=0, **SMALL).fit(bench.table)


@pytest.fixture(scope="module")
def test_rows(bench: BenchData):
    return bench.table[bench.table["split"] == "test"]


@pytest.fixture(scope="module")
def saved(model: TorchQualityModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("torch-model") / "quality"
    model.save(base)
    return base


# -- fit and predict ----------------------------------------------------------------------------
def test_fit_predict_shapes_and_probabilities(model, bench, test_rows) -> None:
    p = model.predict_proba_table(test_rows)
    assert p.shape == (len(test_rows),)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    raw = model.predict_proba_table(test_rows, calibrated=False)
    assert raw.shape == p.shape and ((raw > 0) & (raw < 1)).all()
    assert model.feature_spec_.text_buckets == 0  # the text is a separate input
    assert model.arrays_["text_embedding"].shape == (256, model.text_dim)
    assert model.arrays_["weight_0"].shape == (16, len(model.feature_names_) + model.text_dim)
    history = model.metrics_["training"]
    assert 1 <= history["best_epoch"] <= history["epochs_run"] <= SMALL["epochs"]
    assert {"validation_uncalibrated", "validation_calibrated_in_sample"} <= set(model.metrics_)
    assert model.training_data_["train_rows"] == int((bench.table["split"] == "train").sum())
    assert 0 < model.training_data_["early_stopping_rows"] < model.training_data_["train_rows"]
    X = model.features_table(test_rows)
    prompts = test_rows["prompt"].to_numpy()
    np.testing.assert_array_equal(model.predict_proba_features(X, prompts=prompts), p)
    with pytest.raises(ValueError, match="prompt"):
        model.predict_proba_features(X)
    with pytest.raises(ValueError, match="shape"):
        model.predict_proba_features(X[:, :-1], prompts=prompts)


def test_predict_proba_instance_on_a_committed_window(model) -> None:
    instance = read_instance(INSTANCES / "window_042.json")
    p = model.predict_proba_instance(instance)
    assert p.shape == (len(instance.requests), len(instance.nodes))
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    X = instance_features(instance, model.feature_spec_)  # every pair a table row
    prompts = pairs_from_instance(instance)["prompt"]
    expected = model.predict_proba_features(X, prompts=prompts).reshape(p.shape)
    np.testing.assert_array_equal(p, expected)
    assert np.ptp(p) > 0


def test_same_random_state_same_model_and_torch_state_restored(model, bench, test_rows) -> None:
    import torch

    threads = torch.get_num_threads()
    rng_state = torch.get_rng_state()
    again = TorchQualityModel(random_state=0, **SMALL).fit(bench.table)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert again.arrays_.keys() == model.arrays_.keys()
    for key, value in model.arrays_.items():
        np.testing.assert_array_equal(again.arrays_[key], value, err_msg=key)
    np.testing.assert_array_equal(
        again.predict_proba_table(test_rows), model.predict_proba_table(test_rows)
    )
    other = TorchQualityModel(random_state=1, **SMALL).fit(bench.table)
    assert not np.array_equal(other.arrays_["weight_0"], model.arrays_["weight_0"])


def test_invalid_settings_and_tables(bench) -> None:
    pytest.importorskip("torch", reason="training needs the torch extra")
    with pytest.raises(ValueError, match="hidden_sizes"):
        TorchQualityModel(hidden_sizes=()).fit(bench.table)
    with pytest.raises(ValueError, match="text_buckets"):
        TorchQualityModel(text_buckets=1000).fit(bench.table)
    with pytest.raises(ValueError, match="calibration"):
        TorchQualityModel(calibration="platt").fit(bench.table)
    with pytest.raises(ValueError, match="completed"):
        TorchQualityModel().fit(bench.table.drop(columns="completed"))
    with pytest.raises(NotFittedError, match="not fitted"):
        TorchQualityModel().predict_proba_table(bench.table)


def test_without_torch_fit_names_the_extra_and_load_still_works(
    saved, test_rows, model, bench, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'qlmio-opt\[torch\]'"):
        TorchQualityModel(**SMALL).fit(bench.table)
    loaded = TorchQualityModel.load(saved)
    np.testing.assert_array_equal(
        loaded.predict_proba_table(test_rows), model.predict_proba_table(test_rows)
    )


# -- safe files ---------------------------------------------------------------------------------
def test_save_load_round_trip_without_pickle(model, saved, test_rows, monkeypatch) -> None:
    def no_pickle(*args, **kwargs):
        raise AssertionError("load must never unpickle")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    loaded = TorchQualityModel.load(saved.with_suffix(".json"))
    np.testing.assert_array_equal(
        loaded.predict_proba_table(test_rows), model.predict_proba_table(test_rows)
    )
    for key, value in model.arrays_.items():
        np.testing.assert_array_equal(loaded.arrays_[key], value, err_msg=key)
    assert loaded.get_params() == model.get_params()
    meta = json.loads(saved.with_suffix(".json").read_text())
    assert meta["settings"]["hidden_sizes"] == [16, 8]
    assert meta["torch_version"] == model.torch_version_
    assert meta["metrics"]["training"]["epochs_run"] == model.metrics_["training"]["epochs_run"]


def _copy(saved: Path, tmp_path: Path) -> Path:
    base = tmp_path / "quality"
    for suffix in (".json", ".npz"):
        base.with_suffix(suffix).write_bytes(saved.with_suffix(suffix).read_bytes())
    return base


def _arrays(base: Path) -> dict[str, np.ndarray]:
    with np.load(base.with_suffix(".npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _rehash(base: Path) -> None:
    """Record the ``.npz``'s new SHA-256 in the JSON, so the load gets past the hash check
    (which comes first) to the check under test."""
    path = base.with_suffix(".json")
    meta = json.loads(path.read_text())
    meta["npz_sha256"] = hashlib.sha256(base.with_suffix(".npz").read_bytes()).hexdigest()
    path.write_text(json.dumps(meta))


def _set(key, value):
    def edit(a):
        a[key] = value(a[key])

    return edit


def _nan(a):
    a["weight_1"] = a["weight_1"].copy()
    a["weight_1"][0, 0] = np.nan


@pytest.mark.parametrize(
    ("tamper", "field"),
    [
        (_set("weight_0", lambda w: w[:, :-1]), "weight_0"),
        (_set("bias_2", lambda b: b[:, None]), "bias_2"),
        (_set("text_embedding", lambda e: e[:-1]), "text_embedding"),
        (_nan, "weight_1"),
        (_set("feature_scale", lambda s: -s), "feature_scale"),
        (_set("temperature", lambda t: t * 0), "temperature"),
        (_set("calibration_y", lambda c: c + 2), "calibration_y"),
        (_set("feature_mean", lambda m: m.astype(np.int64)), "feature_mean"),
        (lambda a: a.pop("bias_0"), "bias_0"),
        (lambda a: a.update(extra=np.zeros(2)), "extra"),
    ],
)
def test_tampered_arrays_are_refused(saved, tmp_path, tamper, field) -> None:
    base = _copy(saved, tmp_path)
    arrays = _arrays(base)
    tamper(arrays)
    np.savez(base.with_suffix(".npz"), **arrays)
    _rehash(base)
    with pytest.raises(ValueError, match=rf"quality\.npz: field '{field}'"):
        TorchQualityModel.load(base)


def test_changed_numbers_fail_the_hash(saved, tmp_path) -> None:
    base = _copy(saved, tmp_path)
    arrays = _arrays(base)
    arrays["bias_0"] = arrays["bias_0"] + 0.5  # well-formed, but not the recorded model
    np.savez(base.with_suffix(".npz"), **arrays)
    with pytest.raises(ValueError, match=r"quality\.json: field 'npz_sha256'"):
        TorchQualityModel.load(base)


@pytest.mark.parametrize("payload", ["pickle", "object-array", "garbage"])
def test_non_array_files_are_refused(saved, tmp_path, payload) -> None:
    base = _copy(saved, tmp_path)
    npz = base.with_suffix(".npz")
    if payload == "pickle":
        npz.write_bytes(pickle.dumps({"bias_0": np.zeros(3)}))
        match = r"quality\.npz: not an \.npz archive"
    elif payload == "object-array":
        arrays = _arrays(base)
        arrays["bias_0"] = np.array([{"x": 1}], dtype=object)
        np.savez(npz, **arrays)
        match = r"quality\.npz: field 'bias_0'"
    else:
        npz.write_bytes(b"PK\x03\x04 truncated")
        match = r"quality\.npz: not an \.npz archive"
    _rehash(base)
    with pytest.raises(ValueError, match=match):
        TorchQualityModel.load(base)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.pop("settings"), "settings"),
        (lambda m: m.update(format="qlmio-opt/learned-quality"), "format"),
        (lambda m: m.update(feature_version=0), "feature_version"),
        (lambda m: m["feature_names"].reverse(), "feature_names"),
        (lambda m: m.update(npz_file="../elsewhere.npz"), "npz_file"),
        (lambda m: m["settings"].update(hidden_sizes=[16, 8, 4]), "weight_3"),
        (lambda m: m["settings"].update(hidden_sizes="16"), "settings.hidden_sizes"),
        (lambda m: m["settings"].pop("text_dim"), "settings.text_dim"),
        (lambda m: m["feature_spec"].update(text_buckets=1024), "feature_spec"),
    ],
)
def test_tampered_json_is_refused(saved, tmp_path, edit, field) -> None:
    base = _copy(saved, tmp_path)
    path = base.with_suffix(".json")
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"quality\.(json|npz): field '{field}'"):
        TorchQualityModel.load(base)
