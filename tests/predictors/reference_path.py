"""The straightforward prediction path, kept as the oracle of the fast one (not a test module).

Production predicts a window from its distinct rows (``window_quality_features``,
``window_latency_features``) and walks the trees in reused blocks or through leaf masks. The
oracle takes every (request, node) pair as one row of a bench table, request-major
(:func:`pairs_from_instance`, :func:`instance_table`), feeds those rows to the table path that
training uses (``quality_features``, ``latency_features``), and walks every tree one full
``(rows, trees)`` matrix per step (:func:`reference_raw_sum`). ``test_fast_path.py`` checks that
both give the same numbers; ``benchmarks/predictor_speed.py`` times the fast path against this
one (its ``before`` columns).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.instance import Instance
from qlmio_opt.predictors.learned_features import FeatureSpec, quality_features
from qlmio_opt.predictors.learned_latency import LOAD_COLUMNS, latency_features
from qlmio_opt.predictors.tree_ensemble import CompiledTrees, TreeEnsemble


def pairs_from_instance(
    instance: Instance, catalog: Catalog | None = None
) -> dict[str, np.ndarray]:
    """The ``PAIR_COLUMNS`` of every (request, node) pair, request-major like a bench table.

    Image tokens are the node's model's tokens summed over the request's images (the catalog
    rule the simulator applies); everything else per image is reduced to the request's totals,
    exactly the information the bench table holds.
    """
    catalog = catalog or instance.resolved_catalog
    reqs, nodes = instance.requests, instance.nodes
    n_req, n_node = len(reqs), len(nodes)
    flat = [(i, im.width, im.height) for i, r in enumerate(reqs) for im in r.images]
    img = np.array(flat, dtype=np.int64).reshape(-1, 3)
    owner, width, height = img[:, 0], img[:, 1], img[:, 2]
    pixels = np.bincount(owner, weights=(width * height).astype(float), minlength=n_req)
    tokens = np.zeros((n_req, n_node))
    for key in dict.fromkeys(n.model for n in nodes):
        cols = [j for j, n in enumerate(nodes) if n.model == key]
        if len(owner):
            per_image = catalog.model(key).image_tokens.tokens_array(width, height).astype(float)
            tokens[:, cols] = np.bincount(owner, weights=per_image, minlength=n_req)[:, None]

    def per_request(values: Sequence[Any], dtype: Any) -> np.ndarray:
        return np.repeat(np.asarray(values, dtype=dtype), n_node)

    def per_node(values: Sequence[Any]) -> np.ndarray:
        return np.tile(np.asarray(values, dtype=object), n_req)

    return {
        "task": per_request([r.task for r in reqs], object),
        "prompt": per_request([r.prompt or "" for r in reqs], object),
        "prompt_tokens": per_request([r.prompt_tokens for r in reqs], float),
        "n_images": per_request([len(r.images) for r in reqs], float),
        "image_pixels": np.repeat(pixels, n_node),
        "image_tokens": tokens.ravel(),
        "model": per_node([n.model for n in nodes]),
        "tier": per_node([n.tier for n in nodes]),
    }


def instance_features(
    instance: Instance,
    spec: FeatureSpec,
    catalog: Catalog | None = None,
    text_coef: np.ndarray | None = None,
) -> np.ndarray:
    """``(R * N, n_features)``: the table path's quality features of every pair, request-major."""
    catalog = catalog or instance.resolved_catalog
    return quality_features(pairs_from_instance(instance, catalog), catalog, spec, text_coef)


def instance_table(
    instance: Instance, transfer_s: np.ndarray, rtt_s: np.ndarray, catalog: Catalog | None = None
) -> dict[str, np.ndarray]:
    """The columns ``latency_features`` reads, for every pair of ``instance`` (request-major):
    ``transfer_s`` and ``rtt_s`` (``(R, N)``) stand for the bench table's bandwidth and RTT, the
    load columns are zero (a window is predicted at zero background load)."""
    catalog = catalog or instance.resolved_catalog
    cols: dict[str, Any] = dict(pairs_from_instance(instance, catalog))
    n_req, n_node = len(instance.requests), len(instance.nodes)
    cols["device"] = np.tile(np.array([n.device for n in instance.nodes], dtype=object), n_req)
    cols["max_concurrency"] = np.tile(
        np.array([n.max_concurrency or 1 for n in instance.nodes], dtype=float), n_req
    )
    cols["max_output_tokens"] = np.repeat(
        np.array([r.max_output_tokens for r in instance.requests], dtype=float), n_node
    )
    cols["transfer_s"] = np.asarray(transfer_s, float).ravel()
    cols["rtt_s"] = np.asarray(rtt_s, float).ravel()
    for col in LOAD_COLUMNS:
        cols[col] = np.zeros(n_req * n_node)
    return cols


def reference_raw_sum(trees: CompiledTrees, X: np.ndarray) -> np.ndarray:
    """``CompiledTrees.raw_sum`` the straightforward way: all rows at once, one full
    ``(n, n_trees)`` matrix per step, nothing reused."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    n, n_cols = X.shape
    node = np.broadcast_to(trees.roots2, (n, trees.n_trees))
    flat = X.ravel()
    row = (np.arange(n, dtype=np.intp) * n_cols)[:, None]
    has_nan = bool(np.isnan(flat).any())
    for _ in range(trees.depth):
        x = np.take(flat, row + np.take(trees.feature2, node, mode="clip"), mode="clip")
        right = x > np.take(trees.threshold2, node, mode="clip")
        if has_nan:
            right |= np.isnan(x) & np.take(trees.missing_right2, node, mode="clip")
        node = np.take(trees.children2, node + right, mode="clip")
    return np.take(trees.value2, node, mode="clip").sum(axis=1)


def reference_raw_predict(trees: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """The baseline plus :func:`reference_raw_sum`."""
    return trees.baseline + reference_raw_sum(trees.compiled, X)


def reference_quality(
    model: Any, instance: Instance, calibrated: bool = True, catalog: Catalog | None = None
) -> np.ndarray:
    """``(R, N)``: a learned quality model's probabilities, every pair a table row."""
    catalog = catalog or instance.resolved_catalog
    shape = (len(instance.requests), len(instance.nodes))
    X = instance_features(instance, model.feature_spec_, catalog, model.text_coef_)
    raw = 1.0 / (1.0 + np.exp(-reference_raw_predict(model.forest_, X)))
    p = model._calibrate(raw, X) if calibrated else raw
    return p.reshape(shape)


def reference_latency(
    model: Any,
    instance: Instance,
    transfer_s: np.ndarray,
    rtt_s: np.ndarray,
    catalog: Catalog | None = None,
    p90: bool = True,
) -> dict[str, np.ndarray]:
    """``(R, N)`` arrays of a learned latency model's predictions, every pair a table row."""
    catalog = catalog or instance.resolved_catalog
    shape = (len(instance.requests), len(instance.nodes))
    rows = instance_table(instance, transfer_s, rtt_s, catalog)
    base = latency_features(rows, catalog)
    raw_output = reference_raw_predict(model.output_trees_, base)
    out = np.clip(np.expm1(raw_output), 1.0, rows["max_output_tokens"])
    full = latency_features(rows, catalog, out)
    result = {
        "output_tokens": out,
        "latency_s": np.exp(reference_raw_predict(model.latency_trees_, full)),
    }
    if p90:
        raw_p90 = reference_raw_predict(model.p90_trees_, full)
        result["latency_p90_s"] = np.exp(raw_p90 + model.p90_offset_)
    return {k: v.reshape(shape) for k, v in result.items()}


class _ReferenceQuality:
    def __init__(self, model: Any) -> None:
        self.model = model

    def predict_proba_instance(
        self, instance: Instance, calibrated: bool = True, catalog: Catalog | None = None
    ) -> np.ndarray:
        return reference_quality(self.model, instance, calibrated, catalog)


class _ReferenceLatency:
    def __init__(self, model: Any) -> None:
        self.model = model

    def predict_instance(
        self,
        instance: Instance,
        transfer_s: np.ndarray,
        rtt_s: np.ndarray,
        catalog: Catalog | None = None,
        p90: bool = True,
    ) -> dict[str, np.ndarray]:
        return reference_latency(self.model, instance, transfer_s, rtt_s, catalog, p90)


def reference_predictor(learned: Any) -> Any:
    """A copy of a fitted ``LearnedPredictor`` whose models take the oracle's path."""
    ref = copy.copy(learned)
    ref.quality_model_ = _ReferenceQuality(learned.quality_model_)
    ref.latency_model_ = _ReferenceLatency(learned.latency_model_)
    return ref
