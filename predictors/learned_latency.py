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

**Features.** One implementation of the columns (:class:`_LatencyInputs`) is fed two ways: a
bench table's rows (:func:`latency_features`: training, evaluation) and a window's distinct rows
(:func:`window_latency_features`: per request and distinct node, for prediction).

**Instances.** :meth:`LearnedLatencyModel.predict_instance` evaluates the model on every pair of
a window with **zero background load**: the formulation already charges a node's load through its
engine and state terms and its congestion curve (the node's ``state`` and the window's own
requests; :mod:`qlmio_opt.domain.engine_load`), so feeding the
load to the trees as well would count it twice. What the trees add to the analytic stand-alone
physics is the request's own output length and the devices' departures from the roofline.

**Safe files.** :meth:`~LearnedLatencyModel.save` writes ``<name>.json`` (:class:`LatencyFile`:
format, version, settings, feature counts, the conformal offset, metrics, the SHA-256 of the
arrays) and ``<name>.npz`` (the three tree ensembles' node arrays, each field prefixed by
``output.``, ``latency.`` or ``p90.``); :meth:`~LearnedLatencyModel.load` reads them through the
shared safe readers of :mod:`qlmio_opt.predictors.model_files` (the JSON validated field by
field, the hash before the archive is opened, declared sizes bounded by the settings'
``max_iter`` trees of ``max_leaf_nodes`` leaves before anything is inflated,
``numpy.load(allow_pickle=False)``), checks every tree
(:func:`~qlmio_opt.predictors.tree_ensemble.check_tree_arrays`) and refuses anything else with a
``ValueError`` naming the file and the field. Inference runs the trees in numpy
(:class:`~qlmio_opt.predictors.tree_ensemble.TreeEnsemble`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from qlmio_opt.domain.catalog import Catalog, default_catalog
from qlmio_opt.domain.instance import Instance
from qlmio_opt.predictors.base import NotFittedError, ParamsMixin
from qlmio_opt.predictors.learned_features import (
    WindowRequests,
    prompt_table,
    prompt_texts,
    window_requests,
)
from qlmio_opt.predictors.model_files import (
    ArraysFile,
    FileModel,
    json_safe,
    model_paths,
    read_header,
    read_npz,
    validated,
    write_model_json,
    write_npz,
)
from qlmio_opt.predictors.tree_ensemble import (
    TREE_FIELDS,
    TreeEnsemble,
    TreeSettings,
    check_tree_arrays,
)

__all__ = [
    "LOAD_COLUMNS",
    "MODEL_FORMAT",
    "MODEL_VERSION",
    "N_BASE_FEATURES",
    "LatencyFile",
    "LearnedLatencyModel",
    "analytic_parts",
    "latency_features",
    "latency_metrics",
    "window_latency_features",
]

MODEL_FORMAT = "qlmio-opt/learned-latency"
MODEL_VERSION = 1
_ENSEMBLES = ("output", "latency", "p90")

LOAD_COLUMNS = ("bg_requests", "bg_active", "bg_input_tokens", "link_flows")
"""The load a bench row met: background requests on the node, those still active, their input
tokens, and the uploads sharing the link (zero for a window, see the module docstring)."""

N_BASE_FEATURES = 27
"""Columns of :func:`latency_features` without the output length (the output model's input),
with the shipped catalog's six task families."""


# --------------------------------------------------------------------------------------------
# the feature columns: one implementation for tables and windows
# --------------------------------------------------------------------------------------------
def _roofline(
    model: Any, device: Any, prompt_tokens: np.ndarray, image_tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Vision and prefill seconds at the device's roofline speeds, and one decoded token's."""
    vision = image_tokens * model.vision_patches_per_token / device.vision_tok_s(model)
    prefill = (prompt_tokens + image_tokens) / device.prefill_tok_s(model)
    return vision, prefill, 1.0 / device.decode_tok_s(model)


@dataclass(frozen=True)
class _LatencyInputs:
    """What the latency features of some rows read (arrays of one entry per row, or scalars
    shared by all of them)."""

    task_one_hot: np.ndarray
    prompt_rows: np.ndarray
    prompt_tokens: np.ndarray
    image_tokens: np.ndarray
    n_images: np.ndarray
    max_output_tokens: np.ndarray
    params_b: np.ndarray | float
    cloud: np.ndarray | float
    per_token_s: np.ndarray | float
    vision_prefill_s: np.ndarray
    link_s: np.ndarray
    load: np.ndarray | float
    max_concurrency: np.ndarray | float

    def features(self) -> np.ndarray:
        """``(n, N_BASE_FEATURES)``: one-hot task, prompt, token counts, output allowance,
        model size and tier, the roofline parts, the load and the node's concurrency."""
        n = len(self.prompt_tokens)

        def column(value: np.ndarray | float) -> np.ndarray:
            return np.broadcast_to(value, (n,))

        return np.column_stack(
            [
                self.task_one_hot,
                self.prompt_rows,
                np.log1p(self.prompt_tokens),
                np.log1p(self.image_tokens),
                self.n_images,
                np.log(self.max_output_tokens),
                np.log(column(self.params_b)),
                column(self.cloud),
                np.log(column(self.per_token_s)),
                np.log1p(self.vision_prefill_s),
                np.log1p(self.link_s),
                np.broadcast_to(np.log1p(self.load), (n, len(LOAD_COLUMNS))),
                column(self.max_concurrency),
            ]
        )


def _per_key(keys: Iterable[Any], value: Callable[[Any], float]) -> np.ndarray:
    """``value(key)`` for every entry of ``keys``, each distinct key looked up once."""
    index: dict[Any, int] = {}
    codes = np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.intp)
    return np.array([float(value(k)) for k in index], dtype=float)[codes]


def _one_hot(values: np.ndarray, levels: tuple[str, ...]) -> np.ndarray:
    return (values[:, None] == np.array(levels, dtype=object)[None, :]).astype(float)


def analytic_parts(table: Any, catalog: Catalog | None = None) -> dict[str, np.ndarray]:
    """The analytic predictor's stand-alone latency parts for every row of a bench table.

    Upload at the row's path bandwidth, its RTT, vision and prefill at the roofline speeds, and
    decode of ``min(max_output_tokens, task's typical output)`` tokens; ``per_token_s`` is the
    roofline decode time of one token, so a predicted length can replace the typical one. A
    table that has ``transfer_s`` and ``rtt_s`` already (a window's pairs as rows) keeps them.
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
        vision[rows], prefill[rows], per_token[rows] = _roofline(
            catalog.model(model_key),
            catalog.device(device_key),
            prompt_tokens[rows],
            image_tokens[rows],
        )
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


def latency_features(
    table: Any, catalog: Catalog | None = None, output_tokens: np.ndarray | None = None
) -> np.ndarray:
    """Features of every row of a bench table (see the module docstring); ``output_tokens``
    (predicted) adds the decode time of that length and the length itself."""
    catalog = catalog or default_catalog()
    parts = analytic_parts(table, catalog)
    inputs = _LatencyInputs(
        task_one_hot=_one_hot(np.asarray(table["task"], dtype=object), tuple(catalog.tasks)),
        prompt_rows=prompt_table(prompt_texts(table["prompt"]))[0],
        prompt_tokens=np.asarray(table["prompt_tokens"], float),
        image_tokens=np.asarray(table["image_tokens"], float),
        n_images=np.asarray(table["n_images"], float),
        max_output_tokens=np.asarray(table["max_output_tokens"], float),
        params_b=_per_key(table["model"], lambda m: catalog.model(m).params_b),
        cloud=(np.asarray(table["tier"], dtype=object) == "cloud").astype(float),
        per_token_s=parts["per_token_s"],
        vision_prefill_s=parts["vision_s"] + parts["prefill_s"],
        link_s=parts["transfer_s"] + parts["rtt_s"],
        load=np.column_stack([np.asarray(table[c], float) for c in LOAD_COLUMNS]),
        max_concurrency=np.asarray(table["max_concurrency"], float),
    )
    base = inputs.features()
    if output_tokens is None:
        return base
    return _with_output(base, output_tokens, parts["per_token_s"])


def _with_output(base: np.ndarray, output_tokens: np.ndarray, per_token_s: np.ndarray):
    """The base features plus the output length's: its log and its decode time's."""
    out = np.asarray(output_tokens, float)
    return np.column_stack([base, np.log1p(out), np.log1p(out * per_token_s)])


def window_latency_features(
    instance: Instance,
    transfer_s: np.ndarray,
    rtt_s: np.ndarray,
    catalog: Catalog | None = None,
    requests: WindowRequests | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`latency_features` of every pair of a window at zero load, each distinct row
    computed once.

    The per-request columns (task, prompt, token counts, output allowance) are computed once
    per request, the per-model and per-node ones once per node; nodes with the same model,
    device, tier and concurrency and the same upload plus round trip for every request share
    their rows. ``transfer_s`` and ``rtt_s`` (``(R, N)``, the analytic predictor's upload and
    round trip) stand for a bench table's bandwidth and RTT.

    Returns
    -------
    tuple
        ``(K * R, N_BASE_FEATURES + 2)`` features, key-major, of which the first
        :data:`N_BASE_FEATURES` are filled (the output length's two columns are left for the
        caller); ``(K * R,)`` the roofline decode time of one token; ``(N,)`` every node's key
        (the row of pair ``(r, j)`` is ``key[j] * R + r``).
    """
    catalog = catalog or instance.resolved_catalog
    req = requests if requests is not None else window_requests(instance)
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
    one_hot, prompt_rows = _one_hot(req.task, tuple(catalog.tasks)), req.prompt_features()
    blocks, per_token = [], np.empty((len(keys), len(req)))
    for k, j in enumerate(first):
        node = instance.nodes[j]
        model, device = catalog.model(node.model), catalog.device(node.device)
        tokens = req.image_tokens(model.image_tokens)
        vision, prefill, per_token[k] = _roofline(model, device, req.prompt_tokens, tokens)
        inputs = _LatencyInputs(
            one_hot, prompt_rows, req.prompt_tokens, tokens, req.n_images, req.max_output_tokens,
            float(model.params_b), float(node.tier == "cloud"), per_token[k],
            vision + prefill, link[:, j], 0.0, float(node.max_concurrency or 1),
        )  # fmt: skip
        blocks.append(inputs.features())
    X = np.zeros((len(keys), len(req), blocks[0].shape[1] + 2))  # + the output length's two
    X[:, :, :-2] = blocks
    return X.reshape(len(keys) * len(req), -1), per_token.reshape(-1), node_key


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


# --------------------------------------------------------------------------------------------
# the model and its file
# --------------------------------------------------------------------------------------------
class EnsembleFeatures(FileModel):
    """The number of feature columns each of the three ensembles reads."""

    output: int = Field(ge=1)
    latency: int = Field(ge=1)
    p90: int = Field(ge=1)


class LatencyFile(ArraysFile):
    """The JSON of a :class:`LearnedLatencyModel` (format :data:`MODEL_FORMAT`)."""

    format: Literal["qlmio-opt/learned-latency"]
    version: Literal[1]
    settings: TreeSettings
    n_features: EnsembleFeatures
    p90_offset: float


class LearnedLatencyModel(ParamsMixin):
    """Output length, latency and its 90th percentile by gradient boosting (see the module).

    scikit-learn's estimator contract (:class:`~qlmio_opt.predictors.base.ParamsMixin`).

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
    settings_ : TreeSettings
        The settings the model was fitted with (what :meth:`save` records).
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
        max_leaf_nodes: int | None = 15,
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

    def fit(self, table: Any, y: Any = None) -> LearnedLatencyModel:
        """Fit on the ``train`` rows of a bench table and widen the p90 on its ``validation``
        rows; a table without a ``split`` column is all training rows (no widening).

        Raises
        ------
        ValueError
            If a setting is invalid or there are no training rows.
        """
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "catalog"}
        settings = validated(TreeSettings, params)
        catalog = self.catalog or default_catalog()
        if "split" in table:
            split = np.asarray(table["split"], dtype=object)
            train, val = split == "train", split == "validation"
        else:
            train, val = np.ones(len(table), bool), np.zeros(len(table), bool)
        if not train.any():
            raise ValueError("cannot fit on an empty table (no train rows)")
        self.settings_ = settings
        self._fit_trees(settings, _rows(table, train), catalog)
        self.p90_offset_ = 0.0
        self.metrics_: dict[str, Any] = {}
        if val.any():
            self._widen_p90(_rows(table, val))
        return self

    def _fit_trees(self, settings: TreeSettings, rows: Any, catalog: Catalog) -> None:
        """The three ensembles, on one OpenMP thread (deterministic, and fastest here)."""
        from sklearn.ensemble import HistGradientBoostingRegressor
        from threadpoolctl import threadpool_limits

        def fitted(X: np.ndarray, target: np.ndarray, **loss: Any) -> TreeEnsemble:
            params = settings.estimator_params() | loss
            return TreeEnsemble.from_estimator(
                HistGradientBoostingRegressor(**params).fit(X, target)
            )

        base = latency_features(rows, catalog)
        log_latency = np.log(np.asarray(rows["latency_s"], float))
        with threadpool_limits(limits=1):
            log_output = np.log1p(np.asarray(rows["output_tokens"], float))
            self.output_trees_ = fitted(base, log_output)
            full = latency_features(rows, catalog, self._output(base, rows))
            self.latency_trees_ = fitted(full, log_latency)
            self.p90_trees_ = fitted(full, log_latency, loss="quantile", quantile=0.9)
        self.n_features_ = full.shape[1]

    def _widen_p90(self, held: Any) -> None:
        """Split-conformal widening of the p90 on the ``held`` rows, and their metrics."""
        pred = self.predict_table(held)
        actual = np.asarray(held["latency_s"], float)
        residual = np.log(actual) - np.log(pred["latency_p90_s"])
        n = len(residual)
        level = min(1.0, math.ceil((n + 1) * 0.9) / n)
        self.p90_offset_ = float(np.quantile(residual, level, method="higher"))
        pred = self.predict_table(held)
        self.metrics_ = {
            "validation": latency_metrics(actual, pred["latency_s"], pred["latency_p90_s"])
        }

    def _check_fitted(self) -> None:
        if not hasattr(self, "latency_trees_"):
            raise NotFittedError("the model is not fitted; call fit(table) or load first")

    def _output(self, base: np.ndarray, table: Any) -> np.ndarray:
        cap = np.asarray(table["max_output_tokens"], float)
        return np.clip(np.expm1(self.output_trees_.raw_predict(base)), 1.0, cap)

    def predict_table(
        self, table: Any, catalog: Catalog | None = None, p90: bool = True
    ) -> dict[str, np.ndarray]:
        """``output_tokens``, ``latency_s`` and (with ``p90``) ``latency_p90_s`` for every row
        of ``table``."""
        self._check_fitted()
        catalog = catalog or self.catalog or default_catalog()
        base = latency_features(table, catalog)
        out = self._output(base, table)
        full = _with_output(base, out, analytic_parts(table, catalog)["per_token_s"])
        result = {"output_tokens": out, "latency_s": np.exp(self.latency_trees_.raw_predict(full))}
        if p90:
            p90_raw = self.p90_trees_.raw_predict(full)
            result["latency_p90_s"] = np.exp(p90_raw + self.p90_offset_)
        return result

    def predict_instance(
        self,
        instance: Instance,
        transfer_s: np.ndarray,
        rtt_s: np.ndarray,
        catalog: Catalog | None = None,
        p90: bool = True,
    ) -> dict[str, np.ndarray]:
        """``(R, N)`` output length, stand-alone latency and (with ``p90``) its 90th percentile
        for every pair of ``instance``.

        ``transfer_s`` and ``rtt_s`` are the analytic upload and round-trip times (``(R, N)``);
        the pairs are evaluated at zero background load (module docstring). The features come
        from :func:`window_latency_features` (each distinct row once).
        """
        self._check_fitted()
        shape = (len(instance.requests), len(instance.nodes))
        names = ("output_tokens", "latency_s", "latency_p90_s")[: 3 if p90 else 2]
        if not shape[0]:
            return {k: np.zeros(shape) for k in names}
        req = window_requests(instance)
        X, per_token, node_key = window_latency_features(
            instance, transfer_s, rtt_s, catalog or instance.resolved_catalog, requests=req
        )
        n_base = self.output_trees_.n_features
        if n_base != X.shape[1] - 2 or self.latency_trees_.n_features != X.shape[1]:
            raise ValueError(
                f"the latency model reads {n_base} and {self.latency_trees_.n_features} "
                f"features; this code computes {X.shape[1] - 2} and {X.shape[1]}"
            )
        n_blocks = len(X) // shape[0]
        out = np.expm1(self.output_trees_.raw_predict_blocks(X, n_blocks))
        out = np.clip(out, 1.0, np.tile(req.max_output_tokens, n_blocks))
        X[:, n_base] = np.log1p(out)
        X[:, n_base + 1] = np.log1p(out * per_token)
        result = {
            "output_tokens": out,
            "latency_s": np.exp(self.latency_trees_.raw_predict_blocks(X, n_blocks)),
        }
        if p90:
            p90_raw = self.p90_trees_.raw_predict_blocks(X, n_blocks)
            result["latency_p90_s"] = np.exp(p90_raw + self.p90_offset_)
        return {k: np.ascontiguousarray(result[k].reshape(-1, shape[0])[node_key].T) for k in names}

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.json`` and ``<path>.npz`` (a ``.json``/``.npz`` suffix is dropped)."""
        self._check_fitted()
        from qlmio_opt import __version__

        json_path, npz_path = model_paths(path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        trees = self._ensembles()
        write_npz(
            npz_path,
            {f"{name}.{f}": trees[name].arrays[f] for name in _ENSEMBLES for f in TREE_FIELDS},
        )
        meta = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "package_version": __version__,
            "settings": self._in_init_order(self.settings_.model_dump()),
            "n_features": {name: trees[name].n_features for name in _ENSEMBLES},
            "p90_offset": self.p90_offset_,
            "metrics": json_safe(self.metrics_),
        }
        write_model_json(json_path, npz_path, meta, LatencyFile)
        return json_path, npz_path

    def _ensembles(self) -> dict[str, TreeEnsemble]:
        return {
            "output": self.output_trees_,
            "latency": self.latency_trees_,
            "p90": self.p90_trees_,
        }

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
        json_path, _ = model_paths(path)
        header = read_header(json_path, LatencyFile)
        npz_path = json_path.parent / header.npz_file
        per_ensemble = header.settings.array_specs()  # at most one tree per boosting iteration
        specs = {f"{n}.{f}": per_ensemble[f] for n in _ENSEMBLES for f in TREE_FIELDS}
        arrays = read_npz(json_path, npz_path, header.npz_sha256, specs)
        trees = {}
        for name in _ENSEMBLES:
            n_features = getattr(header.n_features, name)
            fields = {f: arrays[f"{name}.{f}"] for f in TREE_FIELDS}
            checked = check_tree_arrays(fields, f"{npz_path} [{name}]", n_features)
            trees[name] = TreeEnsemble(checked, n_features)
        model = cls(**header.settings.model_dump(), catalog=catalog)
        model.settings_ = header.settings
        model.output_trees_, model.latency_trees_ = trees["output"], trees["latency"]
        model.p90_trees_ = trees["p90"]
        model.n_features_ = header.n_features.latency
        model.p90_offset_ = header.p90_offset
        model.metrics_ = header.metrics
        return model


def _rows(table: Any, rows: np.ndarray) -> Any:
    """The selected rows of a ``DataFrame`` or of a mapping of columns."""
    if hasattr(table, "loc"):
        return table[rows]
    return {k: np.asarray(v)[rows] for k, v in table.items()}
