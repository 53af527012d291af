"""A learned latency model over the benchmark table (first version: trained and evaluated on
tables; not yet a predictor of instances, nor saved to a model file).

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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qlmio_opt.catalog import Catalog, default_catalog
from qlmio_opt.predictors.learned_features import prompt_features

__all__ = ["LearnedLatencyModel", "analytic_parts", "latency_features", "latency_metrics"]

LOAD_COLUMNS = ("bg_requests", "bg_active", "bg_input_tokens", "link_flows")


def analytic_parts(table: Any, catalog: Catalog | None = None) -> dict[str, np.ndarray]:
    """The analytic predictor's stand-alone latency parts for every row of a bench table.

    Upload at the row's path bandwidth, its RTT, vision and prefill at the roofline speeds, and
    decode of ``min(max_output_tokens, task's typical output)`` tokens; ``per_token_s`` is the
    roofline decode time of one token, so a predicted length can replace the typical one.
    """
    catalog = catalog or default_catalog()
    n = len(table)
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
    typical = np.array([catalog.task(t).typical_output_tokens for t in table["task"]], float)
    out = np.minimum(np.asarray(table["max_output_tokens"], dtype=float), typical)
    transfer = (
        8.0
        * np.asarray(table["upload_bytes"], float)
        / (np.asarray(table["bandwidth_mbps"], float) * 1e6)
    )
    rtt = np.asarray(table["rtt_ms"], float) / 1000.0
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
    params = np.array([catalog.model(m).params_b for m in table["model"]], dtype=float)
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
    if output_tokens is not None:
        columns.append(np.log1p(output_tokens)[:, None])
        columns.append(np.log1p(output_tokens * parts["per_token_s"])[:, None])
    return np.column_stack(columns)


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


class LearnedLatencyModel:
    """Output length, latency and its 90th percentile by gradient boosting (see the module).

    Parameters
    ----------
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf
        Settings of the three ``HistGradientBoostingRegressor`` models.
    catalog
        Catalog of the models and devices in the table; default: the shipped one.
    random_state
        Seed of the boosting (deterministic with it).

    Attributes
    ----------
    output_model_, latency_model_, p90_model_
        The fitted regressors.
    """

    def __init__(
        self,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 40,
        catalog: Catalog | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.catalog = catalog
        self.random_state = random_state

    def _regressor(self, **extra: Any):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            early_stopping=False,
            random_state=self.random_state,
            **extra,
        )

    def fit(self, table: Any, y: Any = None) -> LearnedLatencyModel:
        """Fit on the rows of ``table`` (a bench table, or its ``train`` split by the caller)."""
        if len(table) == 0:
            raise ValueError("cannot fit on an empty table")
        catalog = self.catalog or default_catalog()
        base = latency_features(table, catalog)
        self.output_model_ = self._regressor().fit(
            base, np.log1p(np.asarray(table["output_tokens"], float))
        )
        out = self._output(base, table)
        full = latency_features(table, catalog, out)
        log_latency = np.log(np.asarray(table["latency_s"], float))
        self.latency_model_ = self._regressor().fit(full, log_latency)
        self.p90_model_ = self._regressor(loss="quantile", quantile=0.9).fit(full, log_latency)
        return self

    def _output(self, base: np.ndarray, table: Any) -> np.ndarray:
        cap = np.asarray(table["max_output_tokens"], float)
        return np.clip(np.expm1(self.output_model_.predict(base)), 1.0, cap)

    def predict_table(self, table: Any) -> dict[str, np.ndarray]:
        """``output_tokens``, ``latency_s`` and ``latency_p90_s`` for every row of ``table``."""
        if not hasattr(self, "latency_model_"):
            raise ValueError("the model is not fitted; call fit(table) first")
        catalog = self.catalog or default_catalog()
        out = self._output(latency_features(table, catalog), table)
        full = latency_features(table, catalog, out)
        return {
            "output_tokens": out,
            "latency_s": np.exp(self.latency_model_.predict(full)),
            "latency_p90_s": np.exp(self.p90_model_.predict(full)),
        }
