"""The learned latency model: output length, end-to-end latency and its 90th percentile.

The output length is not known before a request runs, so the model predicts it first, then the
end-to-end latency (upload, RTT, queueing, vision and prefill, decode) from the request, the node
and the load it meets, with the physics of the analytic model as features:

- ``output``: gradient boosting on ``log1p(output_tokens)`` from the task, the prompt (the
  learned quality model's prompt features), the output allowance and the model;
- ``latency``: gradient boosting on ``log(latency_s)`` from the same features, the predicted
  output length, the analytic stand-alone parts (upload at the path's bandwidth, RTT, vision and
  prefill at the roofline speed, decode of the predicted length at the roofline speed) and the
  load (background requests on the node and still active, their input tokens, uploads sharing
  the link);
- ``p90``: the same features, quantile loss at 0.9, for a latency the request beats nine times in
  ten.

The analytic predictor knows only the stand-alone physics with the task's typical output length;
the comparison is in ``benchmarks/learned_latency.py``.

Trained on a bench table with a ``split`` column, the trees learn from the ``train`` rows and the
90th percentile is widened on the ``validation`` rows by split-conformal calibration: the
``ceil((n + 1) 0.9) / n`` quantile of ``log(latency) - log(p90)`` there is added to every
``log(p90)``, so that nine latencies in ten fall under it on exchangeable data.

**Instances.** :meth:`LearnedLatencyModel.predict_instance` evaluates the model on every pair of
a window with **zero background load**: the formulation already charges a node's load through its
congestion curve (the node's ``active_requests`` and the window's own requests), so feeding the
load to the trees as well would count it twice. What the trees add to the analytic stand-alone
physics is the request's own output length and the devices' departures from the roofline.

**Safe files.** :meth:`~LearnedLatencyModel.save` writes ``<name>.json`` (format, version,
settings, feature count, the conformal offset, metrics, the SHA-256 of the arrays) and
``<name>.npz`` (the three tree ensembles' node arrays, each field prefixed by ``output.``,
``latency.`` or ``p90.``); :meth:`~LearnedLatencyModel.load` reads them through the shared
safe readers of :mod:`qlmio_opt.predictors.model_files` (hash before the archive is opened,
declared sizes bounded by the settings' ``max_iter`` trees of ``max_leaf_nodes`` leaves before
anything is inflated, ``numpy.load(allow_pickle=False)``), checks every field as the quality
model's loader does and refuses anything else with a ``ValueError`` naming the file and the
field. Inference runs the
trees in numpy (:class:`~qlmio_opt.predictors.learned_quality.TreeEnsemble`); a window's
features are computed once per request and distinct node (:func:`window_latency_features`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qlmio_opt.domain.catalog import Catalog, default_catalog
from qlmio_opt.domain.instance import Instance
from qlmio_opt.predictors.learned_features import (
    WindowRequests,
    pairs_from_instance,
    prompt_features,
    window_requests,
)
from qlmio_opt.predictors.learned_quality import (
    TreeEnsemble,
    _check_arrays,
    _identity,
    _is_count,
    _Refused,
    max_tree_nodes,
    tree_array_specs,
)
from qlmio_opt.predictors.model_files import json_safe as _json_safe
from qlmio_opt.predictors.model_files import model_paths as _paths
from qlmio_opt.predictors.model_files import read_model_json, read_npz, write_model_json

__all__ = [
    "MODEL_FORMAT",
    "N_BASE_FEATURES",
    "LearnedLatencyModel",
    "analytic_parts",
    "instance_table",
    "latency_features",
    "latency_metrics",
    "window_latency_features",
]

MODEL_FORMAT = "qlmio-opt/learned-latency"
MODEL_VERSION = 1
_ENSEMBLES = ("output", "latency", "p90")
_TREE_FIELDS = (
    "value",
    "feature_idx",
    "num_threshold",
    "missing_go_to_left",
    "left",
    "right",
    "is_leaf",
    "tree_offsets",
    "baseline",
)
_SETTINGS = ("max_iter", "learning_rate", "max_leaf_nodes", "max_depth", "min_samples_leaf")

LOAD_COLUMNS = ("bg_requests", "bg_active", "bg_input_tokens", "link_flows")


def analytic_parts(table: Any, catalog: Catalog | None = None) -> dict[str, np.ndarray]:
    """The analytic predictor's stand-alone latency parts for every row of a bench table.

    Upload at the row's path bandwidth, its RTT, vision and prefill at the roofline speeds, and
    decode of ``min(max_output_tokens, task's typical output)`` tokens; ``per_token_s`` is the
    roofline decode time of one token, so a predicted length can replace the typical one. A
    table that has ``transfer_s`` and ``rtt_s`` already (:func:`instance_table`) keeps them.
    """
    catalog = catalog or default_catalog()
    n = len(table["task"])
    vision, prefill, per_token = np.zeros(n), np.zeros(n), np.zeros(n)
    models = np.asarray(table["model"], dtype=object)
    devices = np.asarray(table["device"], dtype=object)
    image_tokens = np.asarray(table["image_tokens"], dtype=float)
    prompt_tokens = np.asarray(table["prompt_tokens"], dtype=float)
    for model_key, device_key in set(zip(models, devices, strict=True)):
        rows = (models == model_key) & (devices == device_key)
        model, device = catalog.model(model_key), catalog.device(device_key)
        vision[rows] = (
            image_tokens[rows] * model.vision_patches_per_token / device.vision_tok_s(model)
        )
        prefill[rows] = (prompt_tokens[rows] + image_tokens[rows]) / device.prefill_tok_s(model)
        per_token[rows] = 1.0 / device.decode_tok_s(model)
    typical = _per_key(table["task"], lambda t: catalog.task(t).typical_output_tokens)
    out = np.minimum(np.asarray(table["max_output_tokens"], dtype=float), typical)
    if "bandwidth_mbps" in table:
        transfer = (
            8.0
            * np.asarray(table["upload_bytes"], float)
            / (np.asarray(table["bandwidth_mbps"], float) * 1e6)
        )
        rtt = np.asarray(table["rtt_ms"], float) / 1000.0
    else:
        transfer = np.asarray(table["transfer_s"], float)
        rtt = np.asarray(table["rtt_s"], float)
    decode = out * per_token
    return {
        "transfer_s": transfer,
        "rtt_s": rtt,
        "vision_s": vision,
        "prefill_s": prefill,
        "decode_s": decode,
        "per_token_s": per_token,
        "typical_output_tokens": out,
        "latency_s": transfer + rtt + vision + prefill + decode,
    }


def _per_key(keys: Any, value: Any) -> np.ndarray:
    """``value(key)`` for every entry of ``keys``, each distinct key looked up once."""
    import pandas as pd

    codes, distinct = pd.factorize(np.asarray(keys, dtype=object), sort=False)
    return np.array([float(value(k)) for k in distinct], dtype=float)[codes]


def _one_hot(values: np.ndarray, levels: tuple[str, ...]) -> np.ndarray:
    return (values[:, None] == np.array(levels, dtype=object)[None, :]).astype(float)


def latency_features(
    table: Any, catalog: Catalog | None = None, output_tokens: np.ndarray | None = None
) -> np.ndarray:
    """Features of every row (see the module docstring); ``output_tokens`` (predicted) adds the
    decode time of that length and the length itself."""
    catalog = catalog or default_catalog()
    parts = analytic_parts(table, catalog)
    tasks = tuple(catalog.tasks)
    params = _per_key(table["model"], lambda m: catalog.model(m).params_b)
    columns = [
        _one_hot(np.asarray(table["task"], dtype=object), tasks),
        prompt_features(list(table["prompt"])),
        np.log1p(np.asarray(table["prompt_tokens"], float))[:, None],
        np.log1p(np.asarray(table["image_tokens"], float))[:, None],
        np.asarray(table["n_images"], float)[:, None],
        np.log(np.asarray(table["max_output_tokens"], float))[:, None],
        np.log(params)[:, None],
        (np.asarray(table["tier"], dtype=object) == "cloud").astype(float)[:, None],
        np.log(parts["per_token_s"])[:, None],
        np.log1p(parts["vision_s"] + parts["prefill_s"])[:, None],
        np.log1p(parts["transfer_s"] + parts["rtt_s"])[:, None],
        np.column_stack([np.log1p(np.asarray(table[c], float)) for c in LOAD_COLUMNS]),
        np.asarray(table["max_concurrency"], float)[:, None],
    ]
    base = np.column_stack(columns)
    if output_tokens is None:
        return base
    return _with_output(base, output_tokens, parts["per_token_s"])


def _with_output(base: np.ndarray, output_tokens: np.ndarray, per_token_s: np.ndarray):
    """The base features plus the output length's: its log and its decode time's."""
    out = np.asarray(output_tokens, float)
    return np.column_stack([base, np.log1p(out), np.log1p(out * per_token_s)])


def latency_metrics(
    actual: np.ndarray, predicted: np.ndarray, p90: np.ndarray | None = None
) -> dict[str, float]:
    """MAE (s), MAPE, median absolute percentage error and, with ``p90``, its coverage (the
    share of rows whose latency is at or below it; 0.9 is right)."""
    actual, predicted = np.asarray(actual, float), np.asarray(predicted, float)
    ape = np.abs(predicted - actual) / actual
    out = {
        "mae_s": float(np.mean(np.abs(predicted - actual))),
        "mape": float(np.mean(ape)),
        "median_ape": float(np.median(ape)),
    }
    if p90 is not None:
        out["p90_coverage"] = float(np.mean(actual <= np.asarray(p90, float)))
    return out


def instance_table(
    instance: Instance, transfer_s: np.ndarray, rtt_s: np.ndarray, catalog: Catalog | None = None
) -> dict[str, np.ndarray]:
    """The columns :func:`latency_features` reads, for every pair of ``instance`` (request-major).

    ``transfer_s`` and ``rtt_s`` (``(R, N)``, the analytic predictor's upload and round trip)
    stand for the bench table's bandwidth and RTT; the load columns are zero (see the module).
    """
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


N_BASE_FEATURES = 27
"""Columns of :func:`latency_features` without the output length (the output model's input)."""


def window_latency_features(
    instance: Instance,
    transfer_s: np.ndarray,
    rtt_s: np.ndarray,
    catalog: Catalog | None = None,
    requests: WindowRequests | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`latency_features` of every pair of a window, each distinct row computed once.

    The per-request columns (task, prompt, token counts, output allowance) are computed once
    per request, the per-model and per-node ones once per node; nodes with the same model,
    device, tier and concurrency and the same upload plus round trip for every request share
    their rows. The rows equal those of :func:`instance_table` + :func:`latency_features`.

    Returns
    -------
    tuple
        ``(K * R, 29)`` features, key-major, of which the first :data:`N_BASE_FEATURES` are
        filled (the output length's two columns are left for the caller); ``(K * R,)`` the
        roofline decode time of one token; ``(N,)`` every node's key (the row of pair
        ``(r, j)`` is ``key[j] * R + r``).
    """
    catalog = catalog or instance.resolved_catalog
    req = requests if requests is not None else window_requests(instance)
    n_req = len(req)
    link = np.asarray(transfer_s, float) + np.asarray(rtt_s, float)  # (R, N)
    keys: dict[tuple[Any, ...], int] = {}
    first: list[int] = []
    node_key = np.empty(len(instance.nodes), dtype=np.intp)
    for j, n in enumerate(instance.nodes):
        key = (n.model, n.device, n.tier, n.max_concurrency or 1, link[:, j].tobytes())
        if key not in keys:
            keys[key] = len(keys)
            first.append(j)
        node_key[j] = keys[key]
    X = np.empty((len(keys), n_req, N_BASE_FEATURES + 2))
    tasks = tuple(catalog.tasks)
    X[:, :, : len(tasks)] = _one_hot(req.task, tasks)
    col = len(tasks)
    X[:, :, col : col + 7] = req.prompt_features()
    col += 7
    X[:, :, col] = np.log1p(req.prompt_tokens)
    X[:, :, col + 2] = req.n_images
    X[:, :, col + 3] = np.log(req.max_output_tokens)
    X[:, :, col + 9 : col + 13] = 0.0  # log1p of the zero background load
    X[:, :, N_BASE_FEATURES:] = 0.0  # the output length's columns, filled by the caller
    per_token = np.empty((len(keys), n_req))
    for k, j in enumerate(first):
        node = instance.nodes[j]
        model, device = catalog.model(node.model), catalog.device(node.device)
        tok = req.image_tokens(model.image_tokens)
        vision = tok * model.vision_patches_per_token / device.vision_tok_s(model)
        prefill = (req.prompt_tokens + tok) / device.prefill_tok_s(model)
        per_token[k] = 1.0 / device.decode_tok_s(model)
        X[k, :, col + 1] = np.log1p(tok)
        X[k, :, col + 4] = np.log(np.full(n_req, float(model.params_b)))
        X[k, :, col + 5] = float(node.tier == "cloud")
        X[k, :, col + 6] = np.log(per_token[k])
        X[k, :, col + 7] = np.log1p(vision + prefill)
        X[k, :, col + 8] = np.log1p(link[:, j])
        X[k, :, col + 13] = float(node.max_concurrency or 1)
    return X.reshape(len(keys) * n_req, -1), per_token.reshape(-1), node_key


class LearnedLatencyModel:
    """Output length, latency and its 90th percentile by gradient boosting (see the module).

    Parameters
    ----------
    max_iter, learning_rate, max_leaf_nodes, max_depth, min_samples_leaf
        Settings of the three ``HistGradientBoostingRegressor`` models. The defaults (60
        trees of at most 15 leaves and depth 5) were chosen for speed among five sizes
        compared on the test split of the shipped model's 6,000-request table: 100 trees were
        0.3 points of MAPE better and about 40% slower to evaluate, 200 unbounded trees worse
        (``benchmarks/learned_latency.py`` prints the accuracy on other data).
    catalog
        Catalog of the models and devices in the table; default: the shipped one.
    random_state
        Seed of the boosting (deterministic with it).

    Attributes
    ----------
    output_trees_, latency_trees_, p90_trees_ : TreeEnsemble
        The fitted models as numpy trees.
    p90_offset_ : float
        The conformal widening of ``log(p90)`` (0 without validation rows).
    n_features_ : int
    metrics_ : dict
        Validation metrics (empty without validation rows).
    """

    def __init__(
        self,
        max_iter: int = 60,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 15,
        max_depth: int | None = 5,
        min_samples_leaf: int = 40,
        catalog: Catalog | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.catalog = catalog
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The settings (scikit-learn convention)."""
        return {
            **{k: getattr(self, k) for k in _SETTINGS},
            "catalog": self.catalog,
            "random_state": self.random_state,
        }

    def _regressor(self, **extra: Any):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            early_stopping=False,
            random_state=self.random_state,
            **extra,
        )

    def fit(self, table: Any, y: Any = None) -> LearnedLatencyModel:
        """Fit on the ``train`` rows of a bench table and widen the p90 on its ``validation``
        rows; a table without a ``split`` column is all training rows (no widening).

        Raises
        ------
        ValueError
            If there are no training rows.
        """
        from threadpoolctl import threadpool_limits

        catalog = self.catalog or default_catalog()
        if "split" in table:
            split = np.asarray(table["split"], dtype=object)
            train, val = split == "train", split == "validation"
        else:
            train, val = np.ones(len(table), bool), np.zeros(len(table), bool)
        if not train.any():
            raise ValueError("cannot fit on an empty table (no train rows)")
        rows = table[train] if hasattr(table, "loc") else _take(table, train)
        base = latency_features(rows, catalog)
        log_latency = np.log(np.asarray(rows["latency_s"], float))
        with threadpool_limits(limits=1):
            output = self._regressor().fit(base, np.log1p(np.asarray(rows["output_tokens"], float)))
            self.output_trees_ = TreeEnsemble.from_estimator(output)
            full = latency_features(rows, catalog, self._output(base, rows))
            self.latency_trees_ = TreeEnsemble.from_estimator(
                self._regressor().fit(full, log_latency)
            )
            self.p90_trees_ = TreeEnsemble.from_estimator(
                self._regressor(loss="quantile", quantile=0.9).fit(full, log_latency)
            )
        self.n_features_ = full.shape[1]
        self.p90_offset_ = 0.0
        self.metrics_: dict[str, Any] = {}
        if val.any():
            held = table[val] if hasattr(table, "loc") else _take(table, val)
            pred = self.predict_table(held)
            residual = np.log(np.asarray(held["latency_s"], float)) - np.log(pred["latency_p90_s"])
            n = len(residual)
            level = min(1.0, math.ceil((n + 1) * 0.9) / n)
            self.p90_offset_ = float(np.quantile(residual, level, method="higher"))
            pred = self.predict_table(held)
            self.metrics_ = {
                "validation": latency_metrics(
                    np.asarray(held["latency_s"], float), pred["latency_s"], pred["latency_p90_s"]
                )
            }
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "latency_trees_"):
            raise ValueError("the model is not fitted; call fit(table) or load first")

    def _output(self, base: np.ndarray, table: Any, reference: bool = False) -> np.ndarray:
        cap = np.asarray(table["max_output_tokens"], float)
        raw = self.output_trees_.raw_predict(base, reference=reference)
        return np.clip(np.expm1(raw), 1.0, cap)

    def predict_table(
        self, table: Any, catalog: Catalog | None = None, p90: bool = True, reference: bool = False
    ) -> dict[str, np.ndarray]:
        """``output_tokens``, ``latency_s`` and (with ``p90``) ``latency_p90_s`` for every row
        of ``table`` (``reference=True``: trees walked the straightforward way, same numbers)."""
        self._check_fitted()
        catalog = catalog or self.catalog or default_catalog()
        base = latency_features(table, catalog)
        out = self._output(base, table, reference)
        full = _with_output(base, out, analytic_parts(table, catalog)["per_token_s"])
        latency = self.latency_trees_.raw_predict(full, reference=reference)
        result = {"output_tokens": out, "latency_s": np.exp(latency)}
        if p90:
            p90_raw = self.p90_trees_.raw_predict(full, reference=reference)
            result["latency_p90_s"] = np.exp(p90_raw + self.p90_offset_)
        return result

    def predict_instance(
        self,
        instance: Instance,
        transfer_s: np.ndarray,
        rtt_s: np.ndarray,
        catalog: Catalog | None = None,
        p90: bool = True,
        reference: bool = False,
    ) -> dict[str, np.ndarray]:
        """``(R, N)`` output length, stand-alone latency and (with ``p90``) its 90th percentile
        for every pair of ``instance``.

        ``transfer_s`` and ``rtt_s`` are the analytic upload and round-trip times (``(R, N)``);
        the pairs are evaluated at zero background load (module docstring). The features come
        from :func:`window_latency_features` (each distinct row once); ``reference=True`` takes
        the straightforward path instead (every pair a row of :func:`instance_table`, the trees
        walked by :func:`~qlmio_opt.predictors.tree_ensemble.reference_raw_sum`): slower, the
        same numbers.
        """
        self._check_fitted()
        shape = (len(instance.requests), len(instance.nodes))
        names = ("output_tokens", "latency_s", "latency_p90_s")[: 3 if p90 else 2]
        if not shape[0]:
            return {k: np.zeros(shape) for k in names}
        catalog = catalog or instance.resolved_catalog
        if reference:
            cols = instance_table(instance, transfer_s, rtt_s, catalog)
            predicted = self.predict_table(cols, catalog, p90=p90, reference=True)
            return {k: predicted[k].reshape(shape) for k in names}
        req = window_requests(instance)
        X, per_token, node_key = window_latency_features(
            instance, transfer_s, rtt_s, catalog, requests=req
        )
        n_base = self.output_trees_.n_features
        if n_base != N_BASE_FEATURES or self.latency_trees_.n_features != X.shape[1]:
            raise ValueError(
                f"the latency model reads {n_base} and {self.latency_trees_.n_features} "
                f"features; this code computes {N_BASE_FEATURES} and {X.shape[1]}"
            )
        cap = np.tile(req.max_output_tokens, len(X) // shape[0])
        n_blocks = len(X) // shape[0]
        out = np.clip(np.expm1(self.output_trees_.raw_predict_blocks(X, n_blocks)), 1.0, cap)
        X[:, n_base] = np.log1p(out)
        X[:, n_base + 1] = np.log1p(out * per_token)
        latency = self.latency_trees_.raw_predict_blocks(X, n_blocks)
        result = {"output_tokens": out, "latency_s": np.exp(latency)}
        if p90:
            p90_raw = self.p90_trees_.raw_predict_blocks(X, n_blocks)
            result["latency_p90_s"] = np.exp(p90_raw + self.p90_offset_)
        return {k: np.ascontiguousarray(result[k].reshape(-1, shape[0])[node_key].T) for k in names}

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.json`` and ``<path>.npz`` (a ``.json``/``.npz`` suffix is dropped)."""
        self._check_fitted()
        from qlmio_opt import __version__

        json_path, npz_path = _paths(path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            f"{name}.{field}": np.ascontiguousarray(getattr(self, f"{name}_trees_").arrays[field])
            for name in _ENSEMBLES
            for field in _TREE_FIELDS
        }
        with open(npz_path, "wb") as fh:
            np.savez(fh, **arrays)
        meta = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "package_version": __version__,
            "settings": {k: getattr(self, k) for k in (*_SETTINGS, "random_state")},
            "n_features": {n: getattr(self, f"{n}_trees_").n_features for n in _ENSEMBLES},
            "p90_offset": self.p90_offset_,
            "metrics": _json_safe(self.metrics_),
        }
        write_model_json(json_path, npz_path, meta)
        return json_path, npz_path

    @classmethod
    def load(cls, path: str | Path, catalog: Catalog | None = None) -> LearnedLatencyModel:
        """Read a model written by :meth:`save` (JSON and plain arrays only, no pickle).

        Raises
        ------
        ValueError
            Naming the file and the field, if anything is missing, malformed or inconsistent.
        FileNotFoundError
            If a file is missing.
        """
        json_path, _ = _paths(path)
        meta = _read_meta(json_path)
        npz_path = json_path.parent / meta["npz_file"]
        trees = _read_trees(json_path, npz_path, meta)
        settings = meta["settings"]
        model = cls(**{k: settings[k] for k in (*_SETTINGS, "random_state")}, catalog=catalog)
        model.output_trees_, model.latency_trees_, model.p90_trees_ = trees
        model.n_features_ = meta["n_features"]["latency"]
        model.p90_offset_ = float(meta["p90_offset"])
        model.metrics_ = meta["metrics"]
        return model


def _take(table: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[rows] for k, v in table.items()}


def _read_meta(path: Path) -> dict[str, Any]:
    meta = read_model_json(path)

    def fail(field: str, problem: str) -> ValueError:
        return ValueError(f"{path}: field '{field}': {problem}")

    for key in ("format", "version", "settings", "n_features", "p90_offset", "npz_file"):
        if key not in meta:
            raise fail(key, "missing")
    if meta["format"] != MODEL_FORMAT:
        raise fail("format", f"expected {MODEL_FORMAT!r}, got {meta['format']!r}")
    if meta["version"] != MODEL_VERSION:
        raise fail("version", f"unsupported version {meta['version']!r} (reads {MODEL_VERSION})")
    settings = meta["settings"]
    if not isinstance(settings, dict) or any(k not in settings for k in (*_SETTINGS,)):
        raise fail("settings", f"must be an object with {', '.join(_SETTINGS)}")
    if not _is_count(settings["max_iter"]):
        raise fail("settings.max_iter", f"must be a positive integer; got {settings['max_iter']!r}")
    counts = meta["n_features"]
    if not isinstance(counts, dict) or any(
        not isinstance(counts.get(n), int) or counts[n] < 1 for n in _ENSEMBLES
    ):
        raise fail("n_features", f"must give a positive integer for each of {_ENSEMBLES}")
    offset = meta["p90_offset"]
    if not isinstance(offset, int | float) or not math.isfinite(offset):
        raise fail("p90_offset", "must be a finite number")
    name = meta["npz_file"]
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise fail("npz_file", "must be a bare file name next to the JSON")
    sha = meta.get("npz_sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise fail("npz_sha256", "must be a hex SHA-256")
    return meta


def _read_trees(
    json_path: Path, npz_path: Path, meta: Mapping[str, Any]
) -> tuple[TreeEnsemble, ...]:
    """The three checked ensembles of the ``.npz`` that the checked JSON ``meta`` names."""
    settings, n_features = meta["settings"], meta["n_features"]
    # each ensemble has at most one tree per boosting iteration
    per_ensemble = tree_array_specs(settings["max_iter"], max_tree_nodes(settings, json_path))
    specs = {f"{n}.{f}": per_ensemble[f] for n in _ENSEMBLES for f in _TREE_FIELDS}
    arrays = read_npz(json_path, npz_path, meta["npz_sha256"], specs)
    out = []
    for name in _ENSEMBLES:
        fields = {field: arrays[f"{name}.{field}"] for field in _TREE_FIELDS}
        try:
            checked = _check_arrays(
                {**fields, **_identity()}, f"{npz_path} [{name}]", n_features[name]
            )
        except _Refused as exc:
            raise ValueError(str(exc)) from None
        out.append(TreeEnsemble(checked, n_features[name]))
    return tuple(out)
