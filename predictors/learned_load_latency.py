"""Latency under load: the engine-aware analytic latency times a learned, bounded correction.

The formulation already predicts what a request meets on a node in a live state
(:mod:`qlmio_opt.domain.engine_load`: the backlog of prefill work ahead of it, the batch's
KV reads, the look-ahead stretch of its decode). Call that the **engine-aware analytic
latency** ``A`` of a pair: the analytic stand-alone latency (wait, upload, RTT, vision and
prefill at the roofline speed, decode of the task's typical length) plus the state's delay
``D``. :class:`LoadLatencyModel` learns the median of the log ratio ``rho = log(latency / A)``
(absolute loss) from the request (its prompt's features too), the node, its engine and its
observed state, clipped to ``+-max_log_ratio`` (so the correction is bounded whatever the
trees say), and a 90th percentile of it (quantile loss at
0.9, widened by split-conformal calibration on the ``validation`` rows as
:mod:`~qlmio_opt.predictors.learned_latency` does)::

    latency = A * exp(clip(rho_hat, -b, b))        p90 = A * exp(clip(rho90_hat, -b, b) + offset)

The median, not the mean: on the state table's test split a squared loss on ``rho`` (or on
the ratio) was 4-19% worse than the analytic model in MAPE on busy nodes, the absolute loss
level with it and better in MAE (docs/predictors.md). It trains on the state table of
:mod:`qlmio_opt.simulator.state_dataset` (``bench-data --state``).

**Plugging into the formulation exactly.** The formulation adds ``D`` to each pair's
``Predictions.latency_s`` (:func:`~qlmio_opt.domain.engine_load.state_pair_loads`), so the
predictor returns ``latency_s = L0 + (latency - A)``: after the formulation's addition the
pair's latency is the learned one, to rounding. The components stay analytic (the engine terms
and the window's congestion curve read them) and ``load_correction_s`` carries ``latency - A``.

**Off-support guard.** The model records what it was trained on: the device-model pairs, the
engines each was seen with, and per pair and engine the largest state seen (requests in flight,
prefill load, analytic backlog). A pair of a window outside that support keeps ``rho = 0``: its
latency is the engine-aware analytic one, and its p90 the analytic one widened by the analytic
model's own conformal offset. :meth:`LoadLatencyModel.guard` says which pairs, and why
(``unseen_pair``, ``unseen_engine``, ``state``); the predictor's report counts them.

**Safe files.** ``<name>.json`` (:class:`LoadLatencyFile`: settings, bound, offsets, support,
metrics, the SHA-256 of the arrays) and ``<name>.npz`` (the two tree ensembles, fields
prefixed ``rho.`` and ``p90.``), read through :mod:`qlmio_opt.predictors.model_files` (hash
checked before anything is inflated, no pickle) and every tree checked before use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from qlmio_opt.domain.catalog import Catalog, default_catalog
from qlmio_opt.domain.engine_load import (
    NodeLoad,
    pair_loads,
    state_load,
    state_pair_loads,
)
from qlmio_opt.domain.instance import Instance, NodeState
from qlmio_opt.predictors.base import NotFittedError, ParamsMixin, Predictions
from qlmio_opt.predictors.learned_features import prompt_table, prompt_texts
from qlmio_opt.predictors.learned_latency import analytic_parts, latency_metrics
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
    "GUARD_REASONS",
    "MODEL_FORMAT",
    "MODEL_VERSION",
    "LoadLatencyFile",
    "LoadLatencyModel",
    "PairRows",
    "SupportEntry",
    "engine_aware_rows",
    "state_features",
    "table_rows",
]

MODEL_FORMAT = "qlmio-opt/learned-load-latency"
MODEL_VERSION = 1
GUARD_REASONS = ("unseen_pair", "unseen_engine", "state")
_ENSEMBLES = ("rho", "p90")


# --------------------------------------------------------------------------------------------
# rows: one implementation of the features for tables and windows
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairRows:
    """Request-node-engine-state rows, the arrays of one entry per row.

    ``standalone_s`` is the analytic stand-alone latency with the wait, ``delay_s`` what the
    state adds (the formulation's ``D``), ``load`` each row's :class:`NodeLoad`.
    """

    task: np.ndarray
    prompt: np.ndarray
    prompt_tokens: np.ndarray
    image_tokens: np.ndarray
    n_images: np.ndarray
    max_output_tokens: np.ndarray
    model: np.ndarray
    device: np.ndarray
    cloud: np.ndarray
    max_concurrency: np.ndarray
    chunked: np.ndarray
    budget: np.ndarray
    per_token_s: np.ndarray
    compute_s: np.ndarray
    standalone_s: np.ndarray
    delay_s: np.ndarray
    states: tuple[NodeState | None, ...]
    load: tuple[NodeLoad, ...]

    @property
    def analytic_s(self) -> np.ndarray:
        """The engine-aware analytic latency ``A``."""
        return self.standalone_s + self.delay_s

    @property
    def engine(self) -> np.ndarray:
        return np.where(self.chunked, "chunked-prefill", "serial-prefill")


STATE_FEATURES = (
    "n_running",
    "n_prefilling",
    "n_waiting",
    "running_input_tokens",
    "running_output_tokens",
    "waiting_input_tokens",
    "kv_used_gb",
    "prefill_load",
)


def state_features(state: NodeState | None) -> tuple[float, ...]:
    """The observed state's summary (:data:`STATE_FEATURES`): counts, token sums, KV in use,
    prefill load; zeros for an idle node (None)."""
    if state is None:
        return (0.0,) * len(STATE_FEATURES)
    running, waiting = state.running, state.waiting
    return (
        float(len(running)),
        float(sum(1 for r in running if r.output_tokens == 0)),
        float(len(waiting)),
        float(sum(r.prompt_tokens + r.image_tokens for r in running)),
        float(sum(r.output_tokens for r in running)),
        float(sum(r.prompt_tokens + r.image_tokens for r in waiting)),
        float(state.kv_used_gb or 0.0),
        float(state.prefill_load or 0.0),
    )


def _features(rows: PairRows, tasks: Sequence[str]) -> np.ndarray:
    """The model's input columns for every row."""
    state = np.array([state_features(s) for s in rows.states], dtype=float).reshape(-1, 8)
    backlog = np.array([ld.backlog_s for ld in rows.load])
    stretch = np.array([ld.stretch for ld in rows.load])
    slowdown = np.array([ld.batch_slowdown for ld in rows.load])
    analytic = rows.analytic_s
    one_hot = (rows.task[:, None] == np.array(tasks, dtype=object)[None, :]).astype(float)
    return np.column_stack(
        [
            one_hot,
            prompt_table(list(rows.prompt))[0],
            np.log1p(rows.prompt_tokens),
            np.log1p(rows.image_tokens),
            rows.n_images,
            np.log(rows.max_output_tokens),
            rows.cloud,
            np.log(rows.per_token_s),
            np.log1p(rows.compute_s),
            np.log(rows.max_concurrency),
            rows.chunked,
            np.log(rows.budget),
            state[:, :3],
            np.log1p(state[:, 3:6]),
            state[:, 6:],
            np.log1p(backlog),
            stretch,
            slowdown,
            np.log(analytic),
            np.log1p(rows.delay_s),
            rows.delay_s / analytic,
        ]
    )


def engine_aware_rows(
    columns: Mapping[str, Any],
    states: Sequence[NodeState | None],
    chunked: np.ndarray,
    budget: np.ndarray,
    window_s: np.ndarray | float,
    catalog: Catalog,
) -> PairRows:
    """:class:`PairRows` of table-like ``columns`` (one entry per row: the request's
    ``task``, ``prompt``, ``prompt_tokens``, ``image_tokens``, ``n_images``, ``max_output_tokens``,
    ``upload_bytes``, the node's ``model``, ``device``, ``tier``, ``max_concurrency``, the path's
    ``bandwidth_mbps`` and ``rtt_ms`` or ``transfer_s`` and ``rtt_s``, and ``wait_s``), each in
    its node's observed state under its engine; ``D`` as the formulation computes it, each row
    standing for one node."""
    parts = analytic_parts(columns, catalog)
    n = len(parts["latency_s"])
    models = np.asarray(columns["model"], dtype=object)
    devices = np.asarray(columns["device"], dtype=object)
    loads = tuple(
        state_load(
            states[k],
            catalog.model(models[k]),
            catalog.device(devices[k]),
            bool(chunked[k]),
            int(budget[k]),
        )
        for k in range(n)
    )
    compute = parts["vision_s"] + parts["prefill_s"]
    start = parts["transfer_s"] + parts["rtt_s"] + compute
    delay = np.zeros(n)
    window_s = np.broadcast_to(np.asarray(window_s, float), (n,))
    for w in np.unique(window_s):  # rows as the columns of one window each
        pick = np.flatnonzero(window_s == w)
        delay[pick] = pair_loads(
            tuple(loads[k] for k in pick),
            compute[None, pick],
            parts["decode_s"][None, pick],
            start[None, pick],
            float(w),
        ).delay_s[0]
    wait = np.asarray(columns["wait_s"], float) if "wait_s" in columns else np.zeros(n)
    return PairRows(
        task=np.asarray(columns["task"], dtype=object),
        prompt=np.asarray(prompt_texts(columns["prompt"]), dtype=object),
        prompt_tokens=np.asarray(columns["prompt_tokens"], float),
        image_tokens=np.asarray(columns["image_tokens"], float),
        n_images=np.asarray(columns["n_images"], float),
        max_output_tokens=np.asarray(columns["max_output_tokens"], float),
        model=models,
        device=devices,
        cloud=(np.asarray(columns["tier"], dtype=object) == "cloud").astype(float),
        max_concurrency=np.asarray(columns["max_concurrency"], float),
        chunked=np.asarray(chunked, bool),
        budget=np.asarray(budget, float),
        per_token_s=parts["per_token_s"],
        compute_s=compute,
        standalone_s=wait + parts["latency_s"],
        delay_s=delay,
        states=tuple(states),
        load=loads,
    )


def table_rows(table: Any, catalog: Catalog | None = None) -> PairRows:
    """:class:`PairRows` of a state table (``bench-data --state``), its ``state_json`` parsed
    into the instance's ``NodeState``."""
    catalog = catalog or default_catalog()
    states = [NodeState.model_validate_json(s) for s in table["state_json"]]
    chunked = np.asarray(table["engine"], dtype=object) == "chunked-prefill"
    return engine_aware_rows(
        table,
        states,
        chunked,
        np.asarray(table["max_batched_tokens"], float),
        np.asarray(table["window_s"], float),
        catalog,
    )


# --------------------------------------------------------------------------------------------
# the model's file
# --------------------------------------------------------------------------------------------
class SupportEntry(FileModel):
    """One device-model pair under one engine seen in training, and the largest state seen."""

    device: str
    model: str
    engine: Literal["chunked-prefill", "serial-prefill"]
    max_in_flight: float = Field(ge=0)
    max_prefill_load: float = Field(ge=0)
    max_backlog_s: float = Field(ge=0)


class LoadLatencyFile(ArraysFile):
    """The JSON of a :class:`LoadLatencyModel` (format :data:`MODEL_FORMAT`)."""

    format: Literal["qlmio-opt/learned-load-latency"]
    version: Literal[1]
    settings: TreeSettings
    max_log_ratio: float = Field(gt=0, le=5)
    tasks: list[str]
    n_features: int = Field(ge=1)
    p90_offset: float
    analytic_p90_offset: float
    support: list[SupportEntry]


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
class LoadLatencyModel(ParamsMixin):
    """The engine-aware analytic latency times a learned, bounded correction (module docstring).

    Parameters
    ----------
    max_log_ratio
        The bound ``b`` on the learned log ratio: the correction stays within ``exp(+-b)``.
        The default ``log 3`` bounds it at a factor of 3 either way; 3.2% of the rows of the
        1,500-request seed-0 state table lie beyond it (docs/predictors.md). Chosen by hand.
    max_iter, learning_rate, max_leaf_nodes, max_depth, min_samples_leaf
        Settings of the two gradient-boosting ensembles (``rho`` and its 0.9 quantile), chosen
        by hand at about the stand-alone latency model's size (150 trees of 31 leaves); not
        tuned.
    catalog
        Catalog of the models and devices; default: the shipped one.
    random_state
        Seed of the boosting.

    Attributes
    ----------
    rho_trees_, p90_trees_ : TreeEnsemble
    p90_offset_, analytic_p90_offset_ : float
        Conformal offsets of the learned and of the analytic log p90 (0 without validation rows).
    support_ : tuple of SupportEntry
    tasks_ : tuple of str
    metrics_ : dict
    """

    def __init__(
        self,
        max_log_ratio: float = math.log(3.0),
        max_iter: int = 150,
        learning_rate: float = 0.1,
        max_leaf_nodes: int | None = 31,
        max_depth: int | None = 6,
        min_samples_leaf: int = 40,
        catalog: Catalog | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.max_log_ratio = max_log_ratio
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.catalog = catalog
        self.random_state = random_state

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, table: Any, y: Any = None) -> LoadLatencyModel:
        """Fit on the ``train`` rows of a state table, widen the p90 on its ``validation``
        rows (a table without ``split`` is all training rows).

        Raises
        ------
        ValueError
            If a setting is invalid or there are no training rows.
        """
        names = list(TreeSettings.model_fields)
        settings = validated(TreeSettings, {k: getattr(self, k) for k in names})
        if not 0 < float(self.max_log_ratio) <= 5:
            raise ValueError(f"max_log_ratio must be in (0, 5]; got {self.max_log_ratio!r}")
        catalog = self.catalog or default_catalog()
        split = (
            np.asarray(table["split"], dtype=object)
            if "split" in table
            else np.full(len(table), "train", dtype=object)
        )
        train, val = split == "train", split == "validation"
        if not train.any():
            raise ValueError("cannot fit on a table without train rows")
        self.settings_ = settings
        self.tasks_ = tuple(catalog.tasks)
        rows = table_rows(table[train], catalog)
        actual = np.asarray(table["latency_s"], float)[train]
        self._fit_trees(settings, rows, actual)
        self.support_ = _support(rows)
        self.p90_offset_, self.analytic_p90_offset_ = 0.0, 0.0
        self.metrics_: dict[str, Any] = {}
        if val.any():
            self._calibrate(table_rows(table[val], catalog), np.asarray(table["latency_s"])[val])
        return self

    def _fit_trees(self, settings: TreeSettings, rows: PairRows, actual: np.ndarray) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor
        from threadpoolctl import threadpool_limits

        X = _features(rows, self.tasks_)
        b = float(self.max_log_ratio)
        rho = np.clip(np.log(actual / rows.analytic_s), -b, b)
        with threadpool_limits(limits=1):
            params = settings.estimator_params()
            self.rho_trees_ = TreeEnsemble.from_estimator(
                HistGradientBoostingRegressor(**params, loss="absolute_error").fit(X, rho)
            )
            self.p90_trees_ = TreeEnsemble.from_estimator(
                HistGradientBoostingRegressor(**params, loss="quantile", quantile=0.9).fit(X, rho)
            )
        self.n_features_ = X.shape[1]

    def _calibrate(self, rows: PairRows, actual: np.ndarray) -> None:
        """Split-conformal offsets of the learned and the analytic p90, and the metrics."""
        actual = np.asarray(actual, float)
        level = min(1.0, math.ceil((len(actual) + 1) * 0.9) / len(actual))

        def offset(log_p90: np.ndarray) -> float:
            return float(np.quantile(np.log(actual) - log_p90, level, method="higher"))

        pred = self.predict_rows(rows, guard=False)
        self.p90_offset_ = offset(np.log(pred["latency_p90_s"]))
        self.analytic_p90_offset_ = offset(np.log(rows.analytic_s))
        pred = self.predict_rows(rows, guard=False)
        self.metrics_ = {
            "validation": {
                "learned": latency_metrics(actual, pred["latency_s"], pred["latency_p90_s"]),
                "analytic": latency_metrics(actual, rows.analytic_s),
            }
        }

    def _check_fitted(self) -> None:
        if not hasattr(self, "rho_trees_"):
            raise NotFittedError("the model is not fitted; call fit(table) or load first")

    # -- predicting ------------------------------------------------------------------------
    def guard(self, rows: PairRows) -> np.ndarray:
        """Per row, ``""`` inside the training support, else the reason it is outside
        (:data:`GUARD_REASONS`)."""
        self._check_fitted()
        by_key = {(s.device, s.model, s.engine): s for s in self.support_}
        pairs = {(s.device, s.model) for s in self.support_}
        out = np.full(len(rows.task), "", dtype=object)
        engines = rows.engine
        for k in range(len(out)):
            entry = by_key.get((rows.device[k], rows.model[k], engines[k]))
            if entry is None:
                seen = (rows.device[k], rows.model[k]) in pairs
                out[k] = "unseen_engine" if seen else "unseen_pair"
            elif _beyond(entry, rows.states[k], rows.load[k]):
                out[k] = "state"
        return out

    def predict_rows(self, rows: PairRows, guard: bool = True) -> dict[str, np.ndarray]:
        """``latency_s``, ``latency_p90_s``, ``analytic_s`` and (with ``guard``) the ``guard``
        reasons of every row; rows outside the support keep the analytic latency."""
        self._check_fitted()
        b = float(self.max_log_ratio)
        analytic = rows.analytic_s
        X = _features(rows, self.tasks_)
        if X.shape[1] != self.n_features_:
            raise ValueError(
                f"the load latency model reads {self.n_features_} features; this code computes "
                f"{X.shape[1]} (a catalog with other task families?)"
            )
        rho = np.clip(self.rho_trees_.raw_predict(X), -b, b)
        log_p90 = np.clip(self.p90_trees_.raw_predict(X), -b, b) + self.p90_offset_
        reasons = self.guard(rows) if guard else np.full(len(analytic), "", dtype=object)
        off = reasons != ""
        rho = np.where(off, 0.0, rho)
        log_p90 = np.where(off, self.analytic_p90_offset_, log_p90)
        return {
            "latency_s": analytic * np.exp(rho),
            "latency_p90_s": analytic * np.exp(log_p90),
            "analytic_s": analytic,
            "guard": reasons,
        }

    def predict_table(self, table: Any, guard: bool = True) -> dict[str, np.ndarray]:
        """:meth:`predict_rows` of a state table's rows."""
        return self.predict_rows(table_rows(table, self.catalog or default_catalog()), guard)

    def adjust(self, instance: Instance, base: Predictions) -> tuple[Predictions, dict[str, float]]:
        """``base`` (analytic predictions of ``instance``) with the learned latency under each
        node's state, and the guard's report (pairs learned, pairs kept analytic by reason).

        Ineligible pairs keep their (infinite) latency and count nowhere.
        """
        self._check_fitted()
        shape = base.shape
        ok = base.eligible.ravel()
        report = {"latency_load_learned_pairs": 0.0}
        report |= {f"latency_load_fallback_{r}": 0.0 for r in GUARD_REASONS}
        if not ok.any():
            return base, report
        rows = _instance_rows(instance, base, self.catalog or instance.resolved_catalog, ok)
        pred = self.predict_rows(rows)
        correction = np.zeros(shape[0] * shape[1])
        correction[ok] = pred["latency_s"] - pred["analytic_s"]
        correction = correction.reshape(shape)
        components = dict(base.components)
        components["load_correction_s"] = correction
        report["latency_load_learned_pairs"] = float(np.sum(pred["guard"] == ""))
        for reason in GUARD_REASONS:
            report[f"latency_load_fallback_{reason}"] = float(np.sum(pred["guard"] == reason))
        adjusted = Predictions(
            quality=base.quality,
            latency_s=np.where(base.eligible, base.latency_s + correction, base.latency_s),
            memory_gb=base.memory_gb,
            eligible=base.eligible,
            upload_bytes=base.upload_bytes,
            components=components,
            congestion=base.congestion,
            source=base.source,
            report={**base.report, **report},
        )
        return adjusted, report

    # -- files -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.json`` and ``<path>.npz`` (a ``.json``/``.npz`` suffix is dropped)."""
        self._check_fitted()
        from qlmio_opt import __version__

        json_path, npz_path = model_paths(path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        trees = {"rho": self.rho_trees_, "p90": self.p90_trees_}
        write_npz(
            npz_path,
            {f"{name}.{f}": trees[name].arrays[f] for name in _ENSEMBLES for f in TREE_FIELDS},
        )
        meta = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "package_version": __version__,
            "settings": self.settings_.model_dump(),
            "max_log_ratio": float(self.max_log_ratio),
            "tasks": list(self.tasks_),
            "n_features": int(self.n_features_),
            "p90_offset": self.p90_offset_,
            "analytic_p90_offset": self.analytic_p90_offset_,
            "support": [s.model_dump() for s in self.support_],
            "metrics": json_safe(self.metrics_),
        }
        write_model_json(json_path, npz_path, meta, LoadLatencyFile)
        return json_path, npz_path

    @classmethod
    def load(cls, path: str | Path, catalog: Catalog | None = None) -> LoadLatencyModel:
        """Read a model written by :meth:`save` (JSON and plain arrays, hash checked before the
        arrays are opened, no pickle).

        Raises
        ------
        ValueError
            Naming the file and the field, if anything is missing, malformed or inconsistent.
        FileNotFoundError
            If a file is missing.
        """
        json_path, _ = model_paths(path)
        header = read_header(json_path, LoadLatencyFile)
        npz_path = json_path.parent / header.npz_file
        per_ensemble = header.settings.array_specs()
        specs = {f"{n}.{f}": per_ensemble[f] for n in _ENSEMBLES for f in TREE_FIELDS}
        arrays = read_npz(json_path, npz_path, header.npz_sha256, specs)
        trees = {}
        for name in _ENSEMBLES:
            fields = {f: arrays[f"{name}.{f}"] for f in TREE_FIELDS}
            checked = check_tree_arrays(fields, f"{npz_path} [{name}]", header.n_features)
            trees[name] = TreeEnsemble(checked, header.n_features)
        model = cls(
            max_log_ratio=header.max_log_ratio, **header.settings.model_dump(), catalog=catalog
        )
        model.settings_ = header.settings
        model.rho_trees_, model.p90_trees_ = trees["rho"], trees["p90"]
        model.n_features_ = header.n_features
        model.tasks_ = tuple(header.tasks)
        model.p90_offset_ = header.p90_offset
        model.analytic_p90_offset_ = header.analytic_p90_offset
        model.support_ = tuple(header.support)
        model.metrics_ = header.metrics
        return model


def _in_flight(state: NodeState | None) -> float:
    return 0.0 if state is None else float(len(state.running) + len(state.waiting))


def _beyond(entry: SupportEntry, state: NodeState | None, load: NodeLoad) -> bool:
    """Whether a state is beyond the largest one seen for its pair and engine."""
    prefill = 0.0 if state is None else float(state.prefill_load or 0.0)
    return (
        _in_flight(state) > entry.max_in_flight
        or prefill > entry.max_prefill_load
        or load.backlog_s > entry.max_backlog_s
    )


def _support(rows: PairRows) -> tuple[SupportEntry, ...]:
    """Per device-model pair and engine of the training rows, the largest state seen."""
    found: dict[tuple[str, str, str], list[float]] = {}
    engines = rows.engine
    for k in range(len(rows.task)):
        key = (str(rows.device[k]), str(rows.model[k]), str(engines[k]))
        state = rows.states[k]
        seen = (
            _in_flight(state),
            0.0 if state is None else float(state.prefill_load or 0.0),
            rows.load[k].backlog_s,
        )
        top = found.setdefault(key, [0.0, 0.0, 0.0])
        found[key] = [max(a, b) for a, b in zip(top, seen, strict=True)]
    return tuple(
        SupportEntry(
            device=d,
            model=m,
            engine=e,  # type: ignore[arg-type]
            max_in_flight=v[0],
            max_prefill_load=v[1],
            max_backlog_s=v[2],
        )
        for (d, m, e), v in sorted(found.items())
    )


def _instance_rows(
    instance: Instance, base: Predictions, catalog: Catalog, ok: np.ndarray
) -> PairRows:
    """:class:`PairRows` of ``instance``'s eligible pairs (``ok``, request-major), the state's
    delay taken from the formulation's own function, so ``A`` is what the formulation adds."""
    n_req, n_nodes = base.shape
    parts = base.components
    delay = state_pair_loads(instance, parts, base.congestion).delay_s

    def flat(values: Any) -> np.ndarray:
        return np.asarray(values).reshape(n_req * n_nodes)[ok]

    def per_request(values: Sequence[Any]) -> np.ndarray:
        return flat(np.repeat(np.asarray(values, dtype=object)[:, None], n_nodes, axis=1))

    def per_node(values: Sequence[Any]) -> np.ndarray:
        return flat(np.repeat(np.asarray(values, dtype=object)[None, :], n_req, axis=0))

    nodes, requests = instance.nodes, instance.requests
    engines = instance.node_engines
    columns = {
        "task": per_request([r.task for r in requests]),
        "prompt": per_request([r.prompt or "" for r in requests]),
        "prompt_tokens": per_request([r.prompt_tokens for r in requests]).astype(float),
        "n_images": per_request([len(r.images) for r in requests]).astype(float),
        "max_output_tokens": per_request([r.max_output_tokens for r in requests]).astype(float),
        "upload_bytes": per_request([r.upload_bytes for r in requests]).astype(float),
        "image_tokens": flat(parts["image_tokens"]),
        "model": per_node([n.model for n in nodes]),
        "device": per_node([n.device for n in nodes]),
        "tier": per_node([n.tier for n in nodes]),
        "max_concurrency": per_node(list(instance.node_concurrency)).astype(float),
        "transfer_s": flat(parts["transfer_s"]),
        "rtt_s": flat(parts["rtt_s"]),
    }
    states = per_node([n.state for n in nodes])
    chunked = per_node([e.chunked for e in engines]).astype(bool)
    budget = per_node([e.max_batched_tokens for e in engines]).astype(float)
    rows = engine_aware_rows(columns, list(states), chunked, budget, instance.window_s, catalog)
    # the formulation's own delay and the predictor's stand-alone latency, exactly
    return replace(rows, standalone_s=flat(base.latency_s), delay_s=flat(delay))
