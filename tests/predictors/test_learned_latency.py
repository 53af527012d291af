"""The learned latency model: contract, determinism, analytic parts and metrics."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import shared_fits
from reference_path import instance_table
from shared_fits import bench_instance

from qlmio_opt.predictors.base import NotFittedError
from qlmio_opt.predictors.learned_latency import (
    LOAD_COLUMNS,
    LearnedLatencyModel,
    analytic_parts,
    latency_metrics,
)


@pytest.fixture(scope="module")
def table():
    return shared_fits.bench().table


@pytest.fixture(scope="module")
def fitted():
    return shared_fits.bench(), shared_fits.latency_model()


def test_fit_predict_shapes_and_bounds(fitted, table):
    _, model = fitted
    pred = model.predict_table(table)
    for key in ("output_tokens", "latency_s", "latency_p90_s"):
        assert pred[key].shape == (len(table),)
        assert np.isfinite(pred[key]).all() and (pred[key] > 0).all()
    assert (pred["output_tokens"] <= table["max_output_tokens"].to_numpy()).all()
    assert (pred["output_tokens"] >= 1).all()


def test_same_random_state_same_predictions(fitted, table):
    _, model = fitted
    a = model.predict_table(table)
    b = LearnedLatencyModel(max_iter=20, random_state=0).fit(table).predict_table(table)
    for key in a:
        assert np.array_equal(a[key], b[key])


def test_unfitted_empty_and_invalid_are_clear_errors(table):
    with pytest.raises(NotFittedError, match="not fitted"):
        LearnedLatencyModel().predict_table(table)
    with pytest.raises(ValueError, match="empty"):
        LearnedLatencyModel().fit(table.iloc[:0])
    with pytest.raises(ValueError, match="max_leaf_nodes: Input should be greater than or"):
        LearnedLatencyModel(max_leaf_nodes=1).fit(table)


def test_analytic_parts_add_up(table):
    parts = analytic_parts(table)
    total = sum(parts[k] for k in ("transfer_s", "rtt_s", "vision_s", "prefill_s", "decode_s"))
    assert np.allclose(total, parts["latency_s"])
    assert np.allclose(parts["decode_s"], parts["typical_output_tokens"] * parts["per_token_s"])


def test_latency_metrics_by_hand():
    m = latency_metrics(np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 2.0]), np.array([1, 3, 3]))
    assert m["mae_s"] == pytest.approx(1.0)
    assert m["mape"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert m["median_ape"] == pytest.approx(0.5)
    assert m["p90_coverage"] == pytest.approx(2 / 3)


# -- conformal p90, instances, safe files ------------------------------------------------------
def test_fit_uses_the_train_split_and_widens_p90_on_validation(fitted):
    data, model = fitted
    table = data.table
    val = table[table["split"] == "validation"]
    pred = model.predict_table(val)
    coverage = np.mean(val["latency_s"].to_numpy() <= pred["latency_p90_s"])
    # split-conformal: at least ceil((n + 1) 0.9) / n of the validation rows are covered
    assert coverage >= 0.9
    assert model.metrics_["validation"]["p90_coverage"] == pytest.approx(coverage)
    unwidened = LearnedLatencyModel(max_iter=20, random_state=0).fit(
        table[table["split"] == "train"]
    )
    assert unwidened.p90_offset_ == 0.0 and unwidened.metrics_ == {}
    raw = unwidened.predict_table(val)
    np.testing.assert_allclose(raw["latency_s"], pred["latency_s"], rtol=1e-12)
    np.testing.assert_allclose(
        raw["latency_p90_s"] * np.exp(model.p90_offset_), pred["latency_p90_s"], rtol=1e-12
    )


def test_save_load_round_trip(fitted, tmp_path):
    data, model = fitted
    json_path, npz_path = model.save(tmp_path / "lat")
    assert json_path.name == "lat.json" and npz_path.name == "lat.npz"
    loaded = LearnedLatencyModel.load(json_path)
    a, b = model.predict_table(data.table), loaded.predict_table(data.table)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def _copy(model, tmp_path):
    json_path, npz_path = model.save(tmp_path / "m")
    return json_path, npz_path


def test_changed_arrays_fail_the_hash(fitted, tmp_path):
    _, model = fitted
    json_path, npz_path = _copy(model, tmp_path)
    with np.load(npz_path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["latency.value"] = arrays["latency.value"] + 1.0
    with open(npz_path, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(ValueError, match="npz_sha256"):
        LearnedLatencyModel.load(json_path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("format", "qlmio-opt/learned-quality", "format"),
        ("version", 99, "version"),
        ("p90_offset", "NaN", "p90_offset"),
        ("n_features", {"output": 3}, "n_features"),
        ("npz_file", "../elsewhere.npz", "npz_file"),
    ],
)
def test_tampered_json_is_refused(fitted, tmp_path, field, value, message):
    import json

    _, model = fitted
    json_path, _ = _copy(model, tmp_path)
    meta = json.loads(json_path.read_text())
    meta[field] = value
    json_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=message):
        LearnedLatencyModel.load(json_path)


def test_a_pickled_archive_is_refused(fitted, tmp_path):
    import hashlib
    import json
    import pickle

    _, model = fitted
    json_path, npz_path = _copy(model, tmp_path)
    npz_path.write_bytes(pickle.dumps({"latency.value": [1.0]}))
    meta = json.loads(json_path.read_text())
    meta["npz_sha256"] = hashlib.sha256(npz_path.read_bytes()).hexdigest()
    json_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"not an \.npz archive"):
        LearnedLatencyModel.load(json_path)


def test_out_of_range_tree_indices_are_refused(fitted, tmp_path):
    import hashlib
    import json

    _, model = fitted
    json_path, npz_path = _copy(model, tmp_path)
    with np.load(npz_path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["p90.feature_idx"] = arrays["p90.feature_idx"] + 1000
    with open(npz_path, "wb") as fh:
        np.savez(fh, **arrays)
    meta = json.loads(json_path.read_text())
    meta["npz_sha256"] = hashlib.sha256(npz_path.read_bytes()).hexdigest()
    json_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"\[p90\]: field 'feature_idx'"):
        LearnedLatencyModel.load(json_path)


def test_learned_predictor_uses_the_latency_model_at_zero_load(fitted):
    from qlmio_opt.predictors.analytic import AnalyticPredictor

    data, model = fitted
    instance = bench_instance(data, split="test")
    pred = copy.copy(shared_fits.trained_predictor())
    pred.latency_model_ = model
    p = pred.predict(instance)
    base = AnalyticPredictor().predict(instance)
    parts = base.components
    rows = instance_table(instance, parts["transfer_s"], parts["rtt_s"])
    assert all((rows[c] == 0).all() for c in LOAD_COLUMNS)
    expected = model.predict_table(rows)
    np.testing.assert_allclose(
        p.latency_s, parts["wait_s"] + expected["latency_s"].reshape(p.shape), rtol=1e-12
    )
    out = p.components["output_tokens"]
    np.testing.assert_allclose(out, expected["output_tokens"].reshape(p.shape), rtol=1e-12)
    caps = np.array([r.max_output_tokens for r in instance.requests])[:, None]
    assert (out >= 1).all() and (out <= caps).all()
    per_token = parts["decode_s"] / parts["output_tokens"]
    np.testing.assert_allclose(p.components["decode_s"], out * per_token, rtol=1e-12)
    np.testing.assert_array_equal(p.memory_gb, base.memory_gb)
    assert p.source == "learned"
