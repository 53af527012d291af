"""The fast prediction path of the learned predictors against straightforward references.

The fast path (``predictors/tree_ensemble.py``, ``window_quality_features``,
``window_latency_features``, the prompt and window caches) must give the numbers of the plain
one (``reference_path.py``): every pair a table row, fed to the table path that training uses,
and every tree walked one full matrix per step. For the trees, a walk of one row through one
tree at a time written from the model file's arrays is a second reference.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from reference_path import (
    instance_features,
    instance_table,
    reference_latency,
    reference_predictor,
    reference_quality,
    reference_raw_predict,
)

from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.scenarios import generate_window, sized_window
from qlmio_opt.predictors import get_predictor
from qlmio_opt.predictors.learned_features import (
    PROMPT_FEATURES,
    _parse_prompt,
    clear_caches,
    prompt_table,
    text_bag,
    window_quality_features,
    window_requests,
)
from qlmio_opt.predictors.learned_latency import (
    N_BASE_FEATURES,
    latency_features,
    window_latency_features,
)
from qlmio_opt.predictors.tree_ensemble import TreeEnsemble, compile_leaf_masks

TOLERANCE = 1e-9


def sized(requests: int, nodes: int, seed: int) -> dict:
    """A default-scenario window with ``requests`` requests and ``nodes`` nodes (as a dict)."""
    return sized_window(requests, nodes, seed)


def with_odd_requests(data: dict) -> dict:
    """The window with a few requests made unusual: no images, no prompt, a huge image."""
    data = copy.deepcopy(data)
    reqs = data["requests"]
    for r in reqs[::7]:
        r["images"] = []
    for r in reqs[3::11]:
        r.pop("prompt", None)
    for r in reqs[5::13]:
        r["prompt"] = "How many How many?\nReference OCR token: \nReference OCR token: a, b"
    reqs[1]["images"] = [{"width": 8000, "height": 300, "bytes": 900_000}]
    return data


WINDOWS = {
    "60x6 s0": lambda: sized(60, 6, 0),
    "80x12 s1": lambda: sized(80, 12, 1),
    "default 1 s3": lambda: generate_window("default", 1, 3),
    "odd 50x8 s2": lambda: with_odd_requests(sized(50, 8, 2)),
}


@pytest.fixture(scope="module")
def learned():
    return get_predictor("learned")


@pytest.fixture(scope="module", params=sorted(WINDOWS))
def instance(request) -> Instance:
    return Instance.from_dict(WINDOWS[request.param]())


def analytic_inputs(learned, instance: Instance) -> tuple[np.ndarray, np.ndarray]:
    base = learned.analytic_.predict(instance)
    ok = base.eligible
    return (
        np.where(ok, base.components["transfer_s"], 0.0),
        np.where(ok, base.components["rtt_s"], 0.0),
    )


# --------------------------------------------------------------------------------------------
# trees
# --------------------------------------------------------------------------------------------
def walk_one(arrays: dict, x: np.ndarray) -> float:
    """Baseline plus the leaves one row reaches, tree by tree, node by node."""
    total = 0.0
    offsets = arrays["tree_offsets"]
    for t in range(len(offsets) - 1):
        start, node = int(offsets[t]), 0
        while not arrays["is_leaf"][start + node]:
            i = start + node
            value = x[arrays["feature_idx"][i]]
            if np.isnan(value):
                go_left = bool(arrays["missing_go_to_left"][i])
            else:
                go_left = value <= arrays["num_threshold"][i]
            node = int(arrays["left"][i] if go_left else arrays["right"][i])
        total += float(arrays["value"][start + node])
    return float(arrays["baseline"][0]) + total


def ensembles(learned) -> dict[str, TreeEnsemble]:
    lat = learned.latency_model_
    return {
        "quality": learned.quality_model_.forest_,
        "output": lat.output_trees_,
        "latency": lat.latency_trees_,
        "p90": lat.p90_trees_,
    }


def tricky_rows(trees: TreeEnsemble, n: int, seed: int) -> np.ndarray:
    """Rows whose values are often exactly a split threshold, just above it, or extreme."""
    rng = np.random.default_rng(seed)
    a = trees.arrays
    split = ~a["is_leaf"]
    X = rng.normal(size=(n, trees.n_features)) * 3
    for f in range(trees.n_features):
        t = a["num_threshold"][split & (a["feature_idx"] == f)]
        if len(t):
            pick = rng.choice(t, size=n)
            nudge = rng.choice([0.0, 0.0, 1e-12, -1e-12], size=n) * np.maximum(1, abs(pick))
            X[:, f] = np.where(rng.random(n) < 0.8, pick + nudge, X[:, f])
    X[rng.random(X.shape) < 0.01] = np.inf
    X[rng.random(X.shape) < 0.01] = -np.inf
    return X


@pytest.mark.parametrize("name", ["quality", "output", "latency", "p90"])
def test_shipped_trees_match_a_node_by_node_walk(learned, name):
    trees = ensembles(learned)[name]
    X = tricky_rows(trees, 300, seed=len(name))
    expected = np.array([walk_one(trees.arrays, x) for x in X])
    fast = trees.raw_predict(X)
    np.testing.assert_allclose(fast, expected, rtol=0, atol=TOLERANCE)
    assert np.array_equal(fast, reference_raw_predict(trees, X))
    # rows as a window's blocks: three blocks, the first columns shared by all blocks, the
    # last ones constant per block, the rest per row
    blocks = X.reshape(3, 100, -1).copy()
    blocks[1:, :, :5] = blocks[0, :, :5]
    blocks[:, :, -4:] = blocks[:, :1, -4:]
    W = blocks.reshape(300, -1)
    want = np.array([walk_one(trees.arrays, x) for x in W])
    for n_blocks in (1, 3, 300):
        got = trees.raw_predict_blocks(W, n_blocks)
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE)
        assert np.array_equal(got, trees.raw_predict(W))


def test_missing_values_follow_the_trained_direction(learned):
    trees = ensembles(learned)["latency"]
    X = tricky_rows(trees, 120, seed=7)
    X[np.random.default_rng(8).random(X.shape) < 0.2] = np.nan
    expected = np.array([walk_one(trees.arrays, x) for x in X])
    np.testing.assert_allclose(trees.raw_predict(X), expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(trees.raw_predict_blocks(X, 4), expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("leaves", [2, 8, 15, 31])
def test_trees_of_every_size_match_scikit_learn(leaves):
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(leaves)
    X = rng.normal(size=(600, 6))
    X[:, 2] = np.round(X[:, 2])  # ties on a threshold
    X[rng.random(X.shape) < 0.05] = np.nan
    y = np.nan_to_num(X[:, 0]) * 2 + np.nan_to_num(X[:, 1]) ** 2 + rng.normal(size=600)
    fitted = HistGradientBoostingRegressor(
        max_iter=25, max_leaf_nodes=leaves, max_depth=None, early_stopping=False
    ).fit(X, y)
    trees = TreeEnsemble.from_estimator(fitted)
    assert (compile_leaf_masks(trees.arrays) is None) == (leaves > 16)
    expected = fitted.predict(X)
    np.testing.assert_allclose(trees.raw_predict(X), expected, rtol=0, atol=TOLERANCE)
    finite = np.nan_to_num(X, nan=0.5)
    np.testing.assert_allclose(
        trees.raw_predict_blocks(finite, 6), fitted.predict(finite), rtol=0, atol=TOLERANCE
    )


def test_trees_that_are_single_leaves():
    from sklearn.ensemble import HistGradientBoostingRegressor

    X = np.random.default_rng(0).normal(size=(200, 3))
    fitted = HistGradientBoostingRegressor(max_iter=5, early_stopping=False).fit(X, np.ones(200))
    trees = TreeEnsemble.from_estimator(fitted)
    assert trees.depth == 0
    np.testing.assert_allclose(trees.raw_predict(X), fitted.predict(X), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(
        trees.raw_predict_blocks(X, 4), fitted.predict(X), rtol=0, atol=TOLERANCE
    )


def test_blocks_must_divide_the_rows(learned):
    trees = ensembles(learned)["quality"]
    with pytest.raises(ValueError, match="equal blocks"):
        trees.raw_predict_blocks(np.zeros((10, trees.n_features)), 3)


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------
def test_window_quality_features_are_the_pair_rows(learned, instance):
    model = learned.quality_model_
    spec, catalog = model.feature_spec_, instance.resolved_catalog
    clear_caches()
    expected = instance_features(instance, spec, catalog, model.text_coef_)
    X, key = window_quality_features(instance, spec, catalog, model.text_coef_)
    n_req = len(instance.requests)
    rows = (key[None, :] * n_req + np.arange(n_req)[:, None]).ravel()
    assert np.array_equal(X[rows], expected)
    assert len(X) == n_req * len({(n.model, n.tier) for n in instance.nodes})


def test_window_latency_features_are_the_pair_rows(learned, instance):
    transfer, rtt = analytic_inputs(learned, instance)
    catalog = instance.resolved_catalog
    expected = latency_features(instance_table(instance, transfer, rtt, catalog), catalog)
    X, per_token, key = window_latency_features(instance, transfer, rtt, catalog)
    n_req = len(instance.requests)
    rows = (key[None, :] * n_req + np.arange(n_req)[:, None]).ravel()
    assert np.array_equal(X[rows, :N_BASE_FEATURES], expected)
    assert per_token.shape == (len(X),)


@pytest.mark.parametrize("buckets", [16, 64, 2**14])
def test_prompt_table_equals_the_sparse_bag(buckets):
    rng = np.random.default_rng(buckets)
    words = ["what", "is", "the", "how", "many", "name", "of", "brand", "year", "written"]
    words += ["why", "describe", "a", "b", "c", "d", "e"]
    prompts = [
        " ".join(rng.choice(words, size=rng.integers(0, 12)))
        + ("?\nReference OCR token: x, y" if i % 3 else "")
        for i in range(300)
    ] + ["", "\n", "Why WHY why"]
    coef = rng.normal(size=buckets)
    by_hand = np.array([_parse_prompt(p)[0] for p in prompts])
    assert by_hand.shape == (len(prompts), len(PROMPT_FEATURES))
    clear_caches(words=True)
    for _ in range(2):  # cold, then from the caches
        features, scores = prompt_table(prompts, coef)
        assert np.array_equal(features, by_hand)
        assert np.array_equal(scores, text_bag(prompts, buckets) @ coef)  # scipy's sparse product


# --------------------------------------------------------------------------------------------
# whole models
# --------------------------------------------------------------------------------------------
def test_quality_fast_path_equals_reference(learned, instance):
    model = learned.quality_model_
    clear_caches()
    for calibrated in (True, False):
        fast = model.predict_proba_instance(instance, calibrated=calibrated)
        ref = reference_quality(model, instance, calibrated=calibrated)
        assert fast.shape == ref.shape == (len(instance.requests), len(instance.nodes))
        assert fast.flags.c_contiguous
        np.testing.assert_allclose(fast, ref, rtol=0, atol=TOLERANCE)


def test_latency_fast_path_equals_reference(learned, instance):
    model = learned.latency_model_
    transfer, rtt = analytic_inputs(learned, instance)
    clear_caches()
    fast = model.predict_instance(instance, transfer, rtt)
    ref = reference_latency(model, instance, transfer, rtt)
    assert set(fast) == set(ref) == {"output_tokens", "latency_s", "latency_p90_s"}
    for name in ref:
        np.testing.assert_allclose(fast[name], ref[name], rtol=0, atol=TOLERANCE)


def test_learned_predictor_equals_reference_cold_and_warm(learned, instance):
    want = reference_predictor(learned).predict(instance)
    clear_caches(words=True)
    for _ in range(2):  # cold caches, then warm ones
        got = learned.predict(instance)
        for name in ("quality", "latency_s", "memory_gb", "eligible"):
            np.testing.assert_allclose(
                getattr(got, name), getattr(want, name), rtol=0, atol=TOLERANCE
            )
        assert set(got.components) == set(want.components)
        for name, value in want.components.items():
            np.testing.assert_allclose(got.components[name], value, rtol=0, atol=TOLERANCE)


def test_window_requests_are_kept_per_instance_object(instance):
    clear_caches()
    first = window_requests(instance)
    assert window_requests(instance) is first
    again = Instance.from_dict(instance.model_dump(mode="json", by_alias=True))
    other = window_requests(again)
    assert other is not first
    assert np.array_equal(other.prompt_tokens, first.prompt_tokens)
    with pytest.raises(ValueError):
        first.prompt_tokens[0] = 1.0  # kept arrays are read-only
    clear_caches()
    assert window_requests(instance) is not first


def test_empty_window(learned):
    data = sized(5, 3, 0)
    data["requests"] = []
    instance = Instance.from_dict(data)
    assert learned.quality_model_.predict_proba_instance(instance).shape == (0, 3)
    out = learned.latency_model_.predict_instance(instance, np.zeros((0, 3)), np.zeros((0, 3)))
    assert out["latency_s"].shape == (0, 3)
