"""The learned quality model (issue MGQP): features, numpy inference, safe files, predictor."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import shared_fits
from shared_fits import bench_instance

from qlmio_opt.predictors import AnalyticPredictor, Predictor
from qlmio_opt.predictors.base import NotFittedError
from qlmio_opt.predictors.learned import LearnedPredictor
from qlmio_opt.predictors.learned_features import (
    TEXT_FEATURES,
    FeatureSpec,
    analytic_logit,
    prompt_table,
    quality_features,
    question_buckets,
    text_bag,
    window_quality_features,
)
from qlmio_opt.predictors.learned_quality import LearnedQualityModel
from qlmio_opt.predictors.tree_ensemble import TREE_FIELDS
from qlmio_opt.simulator.dataset import BenchData


@pytest.fixture(scope="module")
def bench() -> BenchData:
    return shared_fits.bench()


@pytest.fixture(scope="module")
def model() -> LearnedQualityModel:
    return shared_fits.quality_model()


@pytest.fixture(scope="module")
def test_rows(bench: BenchData):
    return bench.table[bench.table["split"] == "test"]


@pytest.fixture(scope="module")
def saved(model: LearnedQualityModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("model") / "quality"
    model.save(base)
    return base


# -- fit and predict ----------------------------------------------------------------------------
def test_calibration_maps_by_hand(model, bench, test_rows) -> None:
    from qlmio_opt.predictors.learned_quality import tier_logistic_inputs

    # tier-logistic (default): per tier, sigmoid(b0 + b1 * analytic logit + b2 * deviation)
    X = model.features_table(test_rows)
    raw = model.predict_proba_features(X, calibrated=False)
    analytic, deviation, cloud = tier_logistic_inputs(raw, X, model.feature_spec_)
    c = model.calibration_tier_.reshape(2, 3)[cloud.astype(int)]
    expected = 1 / (1 + np.exp(-(c[:, 0] + c[:, 1] * analytic + c[:, 2] * deviation)))
    np.testing.assert_allclose(model.predict_proba_features(X), expected, rtol=1e-12)
    assert cloud.any() and (~cloud).any()
    assert not np.allclose(model.calibration_tier_[:3], model.calibration_tier_[3:])
    # one map for both tiers: the two halves are equal (small trees, no text: the map is what
    # is checked)
    single = LearnedQualityModel(calibration="logistic", max_iter=5, text_buckets=0)
    single.fit(bench.table)
    np.testing.assert_array_equal(single.calibration_tier_[:3], single.calibration_tier_[3:])
    assert not np.array_equal(single.calibration_tier_[:3], [0.0, 1.0, 1.0])  # not the identity
    with pytest.raises(ValueError, match="calibration: Input should be 'tier-logistic'"):
        LearnedQualityModel(calibration="platt").fit(bench.table)


def test_fit_predict_shapes_and_probabilities(model, test_rows, bench) -> None:
    p = model.predict_proba_table(test_rows)
    assert p.shape == (len(test_rows),)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    assert model.forest_.n_trees == model.max_iter
    assert model.forest_.depth <= model.max_depth
    assert model.training_data_["train_rows"] == int((bench.table["split"] == "train").sum())
    assert set(model.metrics_) == {
        "validation_uncalibrated",
        "validation_calibrated_in_sample",
        "validation_text",
    }
    assert model.text_coef_.shape == (model.feature_spec_.text_buckets,)
    assert np.isfinite(model.text_coef_).all() and np.abs(model.text_coef_).max() > 0


def test_two_fits_with_the_same_random_state_are_identical(model, test_rows) -> None:
    # the shared LearnedPredictor fitted its quality model as LearnedQualityModel(random_state=0)
    again = shared_fits.trained_predictor().quality_model_
    assert again is not model
    np.testing.assert_array_equal(
        again.predict_proba_table(test_rows), model.predict_proba_table(test_rows)
    )
    for key in TREE_FIELDS:
        np.testing.assert_array_equal(again.forest_.arrays[key], model.forest_.arrays[key])
    for name in ("calibration_x_", "calibration_y_", "calibration_tier_", "text_coef_"):
        np.testing.assert_array_equal(getattr(again, name), getattr(model, name))


@pytest.mark.parametrize("text_buckets", [0, 2**12])
def test_features_from_table_and_window_are_identical(bench, text_buckets) -> None:
    """Training reads the simulator's table, prediction the window: the same rows."""
    instance = bench_instance(bench)
    catalog = instance.resolved_catalog
    spec = FeatureSpec.from_catalog(catalog, text_buckets)
    coef = np.random.default_rng(0).normal(size=text_buckets)
    from_table = quality_features(bench.table, catalog, spec, coef)
    window, key = window_quality_features(instance, spec, catalog, coef)
    n_req = len(instance.requests)
    pair_rows = (key[None, :] * n_req + np.arange(n_req)[:, None]).ravel()  # request-major
    assert from_table.shape == (len(bench.table), len(spec.names()))
    np.testing.assert_array_equal(from_table, window[pair_rows])
    if text_buckets:
        with pytest.raises(ValueError, match="text_coef or text_score"):
            quality_features(bench.table, catalog, spec)
        with pytest.raises(ValueError, match="text_coef must have shape"):
            quality_features(bench.table, catalog, spec, coef[:-1])


def test_text_bag_is_a_fixed_normalised_hash_of_the_question_words() -> None:
    n = 2**14
    word = int.from_bytes(hashlib.blake2b(b"team", digest_size=8).digest(), "little") % n
    prompt = "What is the name of this TEAM team?\nReference OCR token: ignored, words"
    buckets = question_buckets(prompt, n)
    assert len(buckets) == 7 and word in buckets  # distinct words of the first line only
    bag = text_bag([prompt, None, prompt], n).toarray()
    assert bag.shape == (3, n)
    np.testing.assert_allclose(bag[0][buckets], 1 / np.sqrt(7))
    assert bag[0].sum() == pytest.approx(7 / np.sqrt(7)) and (bag[1] == 0).all()
    np.testing.assert_array_equal(bag[0], bag[2])
    coef = np.random.default_rng(1).normal(size=n)
    scores = prompt_table([prompt, ""], coef)[1]
    assert scores is not None
    np.testing.assert_allclose(scores, [bag[0] @ coef, 0.0])
    np.testing.assert_allclose(analytic_logit(np.array([0.0, 0.5, 1.0])), [-4.59512, 0, 4.59512])


def test_features_have_no_model_id_and_read_the_prompt() -> None:
    names = FeatureSpec(tasks=("ocr",), families=("Qwen2-VL",)).names()
    assert not any(n.startswith("model=") for n in names)
    assert set(TEXT_FEATURES) <= set(names)
    assert not set(TEXT_FEATURES) & set(FeatureSpec(("ocr",), ("Qwen2-VL",), 0).names())
    with pytest.raises(ValueError, match="power of two"):
        FeatureSpec(tasks=("ocr",), families=(), text_buckets=1000)
    rows, _ = prompt_table(
        [
            "Is this a cat?\nReference OCR token: a, b, c",
            "How many people are there?",
            "What is written on the sign?",
            "",
        ]
    )
    assert rows[0, :3].tolist() == [1.0, 0.0, 0.0]  # yes/no
    assert rows[0, 5] == pytest.approx(np.log1p(3))  # three OCR tokens
    assert rows[1, 1] == 1.0 and rows[2, 2] == 1.0  # numeric, reading
    assert (rows[3] == 0).all()


def test_numpy_inference_equals_sklearn(model, test_rows) -> None:
    X = model.features_table(test_rows)
    ours = model.predict_proba_features(X, calibrated=False)
    theirs = model.estimator_.predict_proba(X)[:, 1]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    # missing values follow each split's missing_go_to_left, as in scikit-learn
    rng = np.random.default_rng(0)
    X_nan = X.copy()
    X_nan[rng.random(X.shape) < 0.2] = np.nan
    np.testing.assert_allclose(
        model.predict_proba_features(X_nan, calibrated=False),
        model.estimator_.predict_proba(X_nan)[:, 1],
        rtol=0,
        atol=1e-9,
    )


def test_learned_predictor_follows_the_contract(bench, model, saved) -> None:
    instance = bench_instance(bench, split="test")
    pred = LearnedPredictor(quality_model_path=saved.with_suffix(".json"))
    assert isinstance(pred, Predictor)
    assert pred.fit() is pred
    p = pred.predict(instance)
    base = AnalyticPredictor().predict(instance)
    assert p.shape == base.shape == (len(instance.requests), len(instance.nodes))
    assert p.source == "learned"
    np.testing.assert_array_equal(p.latency_s, base.latency_s)
    np.testing.assert_array_equal(p.memory_gb, base.memory_gb)
    np.testing.assert_array_equal(p.eligible, base.eligible)
    rows = bench.table["split"] == "test"
    expected = model.predict_proba_table(bench.table[rows]).reshape(p.shape)
    np.testing.assert_allclose(p.quality, expected, rtol=0, atol=1e-12)
    trained = shared_fits.trained_predictor()  # LearnedPredictor().fit(bench)
    np.testing.assert_array_equal(trained.predict(instance).quality, p.quality)
    with pytest.raises(NotFittedError, match="not fitted"):
        LearnedPredictor().predict(instance)
    with pytest.raises(ValueError, match="quality_model_path"):
        LearnedPredictor().fit()


# -- safe files ---------------------------------------------------------------------------------
def test_save_load_round_trip_without_pickle(model, saved, test_rows, monkeypatch) -> None:
    def no_pickle(*args, **kwargs):
        raise AssertionError("load must never unpickle")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    loaded = LearnedQualityModel.load(saved)
    assert loaded.estimator_ is None
    np.testing.assert_array_equal(
        loaded.predict_proba_table(test_rows), model.predict_proba_table(test_rows)
    )
    meta = json.loads(saved.with_suffix(".json").read_text())
    assert meta["feature_names"] == list(model.feature_names_)
    assert meta["settings"]["max_iter"] == model.max_iter
    assert meta["training_data"]["train_rows"] == model.training_data_["train_rows"]
    assert "validation_uncalibrated" in meta["metrics"]
    assert meta["feature_spec"]["text_buckets"] == model.feature_spec_.text_buckets
    np.testing.assert_array_equal(loaded.text_coef_, model.text_coef_)


@pytest.fixture(scope="module")
def small_text_model(bench: BenchData) -> LearnedQualityModel:
    """A model with a 256-bucket text score: the out-of-fold test below refits the text model
    twice, which at the default 2**14 buckets takes seconds each."""
    return LearnedQualityModel(text_buckets=256, max_iter=10).fit(bench.table)


def test_train_rows_get_out_of_fold_text_scores(small_text_model, bench) -> None:
    """A train request's text score does not depend on its own outcomes (no target leakage)."""
    model = small_text_model
    t = bench.table
    spec = model.feature_spec_
    train = (t["split"] == "train").to_numpy()
    X = model.features_table(t)
    offset = analytic_logit(X[:, model.feature_names_.index("analytic_quality")])
    y = t["completed"].to_numpy().astype(np.int64)
    coef, score = model._fit_text(t, spec, train, offset, y)
    np.testing.assert_array_equal(coef, model.text_coef_)  # what fit computed
    full = text_bag(t["prompt"], spec.text_buckets) @ coef
    np.testing.assert_allclose(score[~train], full[~train], rtol=0, atol=1e-12)
    assert not np.allclose(score[train], full[train])
    one = (t["request"] == t.loc[train, "request"].iloc[0]).to_numpy()
    flipped = np.where(one, 1 - y, y)
    coef2, score2 = model._fit_text(t, spec, train, offset, flipped)
    np.testing.assert_allclose(score2[one], score[one], rtol=0, atol=1e-6)
    assert not np.allclose(coef2, coef)


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


def _first_split(arrays: dict[str, np.ndarray]) -> int:
    return int(np.flatnonzero(~arrays["is_leaf"].astype(bool))[0])


def _wrong_shape(a):
    a["value"] = a["value"][:, None]


def _short(a):
    a["left"] = a["left"][:-1]


def _nan(a):
    a["num_threshold"] = a["num_threshold"].copy()
    a["num_threshold"][_first_split(a)] = np.nan


def _bad_child(a):
    a["right"] = a["right"].copy()
    a["right"][_first_split(a)] = 10_000


def _cycle(a):
    a["left"] = a["left"].copy()
    a["left"][_first_split(a)] = 0


def _bad_feature(a):
    a["feature_idx"] = a["feature_idx"].copy()
    a["feature_idx"][_first_split(a)] = 999


def _missing(a):
    del a["calibration_y"]


def _float_offsets(a):
    a["tree_offsets"] = a["tree_offsets"].astype(float)


def _short_text(a):
    a["text_coef"] = a["text_coef"][:-1]


def _inf_text(a):
    a["text_coef"] = a["text_coef"].copy()
    a["text_coef"][3] = np.inf


def _nan_text(a):
    a["text_coef"] = a["text_coef"].copy()
    a["text_coef"][3] = np.nan


def _no_text(a):
    del a["text_coef"]


def _int_text(a):
    a["text_coef"] = a["text_coef"].astype("U8")


@pytest.mark.parametrize(
    ("tamper", "field"),
    [
        (_wrong_shape, "value"),
        (_short, "left"),
        (_nan, "num_threshold"),
        (_bad_child, "right"),
        (_cycle, "left"),
        (_bad_feature, "feature_idx"),
        (_missing, "calibration_y"),
        (_float_offsets, "tree_offsets"),
        (_short_text, "text_coef"),
        (_inf_text, "text_coef"),
        (_nan_text, "text_coef"),
        (_no_text, "text_coef"),
        (_int_text, "text_coef"),
    ],
)
def test_tampered_arrays_are_refused(saved, tmp_path, tamper, field) -> None:
    base = _copy(saved, tmp_path)
    arrays = _arrays(base)
    tamper(arrays)
    np.savez(base.with_suffix(".npz"), **arrays)
    _rehash(base)
    with pytest.raises(ValueError, match=rf"quality\.npz: field '{field}'"):
        LearnedQualityModel.load(base)


def test_changed_numbers_fail_the_hash(saved, tmp_path) -> None:
    base = _copy(saved, tmp_path)
    arrays = _arrays(base)
    arrays["value"] = arrays["value"] + 0.5  # well-formed, but not the recorded model
    np.savez(base.with_suffix(".npz"), **arrays)
    with pytest.raises(ValueError, match=r"quality\.json: field 'npz_sha256'"):
        LearnedQualityModel.load(base)


@pytest.mark.parametrize("payload", ["pickle", "object-array", "garbage"])
def test_non_array_files_are_refused(saved, tmp_path, payload) -> None:
    base = _copy(saved, tmp_path)
    npz = base.with_suffix(".npz")
    if payload == "pickle":
        npz.write_bytes(pickle.dumps({"value": np.zeros(3)}))
        match = r"quality\.npz: not an \.npz archive"
    elif payload == "object-array":
        arrays = _arrays(base)
        arrays["value"] = np.array([{"x": 1}], dtype=object)
        np.savez(npz, **arrays)
        match = r"quality\.npz: field 'value'"
    else:
        npz.write_bytes(b"PK\x03\x04 truncated")
        match = r"quality\.npz: not an \.npz archive"
    _rehash(base)
    with pytest.raises(ValueError, match=match):
        LearnedQualityModel.load(base)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.pop("settings"), "settings"),
        (lambda m: m.update(format="something-else"), "format"),
        (lambda m: m.update(feature_version=0), "feature_version"),
        (lambda m: m["feature_names"].reverse(), "feature_names"),
        (lambda m: m.update(npz_file="../elsewhere.npz"), "npz_file"),
        (lambda m: m["feature_spec"].update(text_buckets=1000), "feature_spec.text_buckets"),
        (lambda m: m["feature_spec"].pop("text_buckets"), "feature_spec.text_buckets"),
        (lambda m: m["feature_spec"]["tasks"].append("ocr"), "feature_spec.tasks"),
        (lambda m: m["settings"].update(max_iter="60"), "settings.max_iter"),
        (lambda m: m["settings"].update(max_leaf_nodes=1), "settings.max_leaf_nodes"),
        (lambda m: m["settings"].update(extra=1), "settings.extra"),
        (lambda m: m.update(n_trees=True), "n_trees"),
        (lambda m: m.update(npz_sha256="ab" * 31), "npz_sha256"),
    ],
)
def test_tampered_json_is_refused(saved, tmp_path, edit, field) -> None:
    base = _copy(saved, tmp_path)
    path = base.with_suffix(".json")
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"quality\.json: field '{field}'"):
        LearnedQualityModel.load(base)
