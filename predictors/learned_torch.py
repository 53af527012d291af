"""The torch quality model: a small network with the scikit-learn model's interface (issue MGQP).

:class:`TorchQualityModel` is the alternative family to
:class:`~qlmio_opt.predictors.learned_quality.LearnedQualityModel` (the default) and has the same
interface: settings in ``__init__``, ``fit(table)`` on a bench table, learned attributes ending
in ``_``, ``predict_proba_table`` / ``predict_proba_instance`` / ``predict_proba_features`` and a
safe ``save`` / ``load``. It needs PyTorch only to **train** (the ``torch`` extra:
``pip install 'qlmio-opt[torch]'``, torch 2.13.0); torch is imported lazily, so the package
imports without it, and :meth:`~TorchQualityModel.fit` raises ``ImportError`` naming the extra
when it is missing. **Loading and prediction are numpy only**: after training the weights are
copied out as float32 arrays and every prediction, right after ``fit`` as after ``load``, runs
the same numpy forward pass (so a loaded model predicts bit-identically): the standardisation
and the text embedding folded into the first layer once, float32 matrix products on one BLAS
thread, a few milliseconds for a 500-request x 6-node window.

**Inputs.** The dense features of :func:`~qlmio_opt.predictors.learned_features.quality_features`
without the learned text score (a ``FeatureSpec`` with ``text_buckets=0``; the same one-hot,
prompt, image, resolution and catalog-model columns as the scikit-learn model), standardised with
the ``train`` rows' mean and standard deviation; and the question's hashed bag of words
(:func:`~qlmio_opt.predictors.learned_features.text_bag`, ``text_buckets`` buckets, each distinct
word worth ``1 / sqrt(distinct words)``) through a learned ``text_buckets x text_dim`` embedding
(an ``EmbeddingBag`` in sum mode with those weights: in numpy, ``bag @ embedding``). The network
learns the text jointly with the rest instead of the scikit-learn model's separate out-of-fold
linear text score.

**Network.** ``[standardised dense, text embedding] -> Linear -> ReLU`` for each of
``hidden_sizes``, then ``Linear -> 1`` logit. The output layer starts at zero (probability 1/2
everywhere), the embedding at ``N(0, 0.05**2)``, the hidden layers at torch's defaults. With
``analytic_offset`` the logit of the analytic quality
(:func:`~qlmio_opt.predictors.learned_features.analytic_logit` of a feature column) is added to
the output, so training starts from the analytic predictor and learns a correction; it is off by
default because it did worse on the validation split (below).

**Training.** Binary cross-entropy on the ``train`` rows' observed ``completed``, AdamW
(``lr``, ``weight_decay``), mini-batches of ``batch_size`` rows in a seeded numpy order. A share
``validation_fraction`` of the train *requests* (grouped, so a request's nodes stay together) is
held out for early stopping: the weights of the epoch with the lowest loss on it are kept,
training stops after ``patience`` epochs without improvement or after ``epochs``. Determinism:
initial weights come from ``torch.manual_seed(random_state)`` inside ``torch.random.fork_rng``
(the global generator is left as it was), ``torch.set_num_threads(n_threads)`` holds during
training and is restored afterwards, and the batch order and the early-stopping split come from
numpy generators seeded the same way; the same ``random_state`` on the same machine gives the
same weights (``None`` means 0, as the scikit-learn model's text folds). Deterministic
algorithms are not forced (:func:`_torch_state` says why).

**Calibration** on the table's ``validation`` split (never trained on): ``"temperature"`` (the
logit divided by one temperature fitted by log loss, the default), ``"isotonic"`` (an isotonic
map of the probability, stored as knots) or ``"none"``. Temperature won a 2-fold
cross-validation on the validation split of the 3,000-request seed-0 table (folds grouped by
request; log loss and ECE, two seeds) against isotonic and a two-parameter Platt map.

**Safe model files.** :meth:`~TorchQualityModel.save` writes ``<name>.json`` (format, versions,
settings, feature specification and names, metrics, training data, the ``.npz`` name and its
SHA-256) and ``<name>.npz`` of plain float arrays (:meth:`TorchQualityModel.npz_shapes`).
:meth:`~TorchQualityModel.load` uses the shared safe readers of
:mod:`qlmio_opt.predictors.model_files` only (hash before the archive is opened, every member's
declared size bounded by the shape the settings give it before anything is inflated,
``numpy.load(allow_pickle=False)``), never ``torch.load``, checks every field (presence, dtype,
shape, finiteness, positive scales and temperature, a monotone calibration map in [0, 1]) and
refuses anything else with a ``ValueError`` naming the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from qlmio_opt.domain.catalog import Catalog, default_catalog
from qlmio_opt.domain.instance import Instance
from qlmio_opt.predictors.learned_features import (
    FEATURE_VERSION,
    FeatureSpec,
    analytic_logit,
    pairs_from_instance,
    quality_features,
    text_bag,
)
from qlmio_opt.predictors.learned_quality import _describe, quality_metrics
from qlmio_opt.predictors.model_files import (
    ArraySpec,
    read_model_json,
    read_npz,
    write_model_json,
)
from qlmio_opt.predictors.model_files import json_safe as _json_safe
from qlmio_opt.predictors.model_files import model_paths as _paths

__all__ = ["MODEL_FORMAT", "MODEL_VERSION", "TORCH_INSTALL", "TorchQualityModel"]

MODEL_FORMAT = "qlmio-opt/learned-quality-torch"
MODEL_VERSION = 1
TORCH_INSTALL = "pip install 'qlmio-opt[torch]'"
_CALIBRATIONS = ("temperature", "isotonic", "none")
_JSON_KEYS = (
    "format",
    "version",
    "package_version",
    "torch_version",
    "settings",
    "feature_version",
    "feature_spec",
    "feature_names",
    "metrics",
    "training_data",
    "npz_file",
    "npz_sha256",
)


def _import_torch() -> Any:
    """``torch``, or an ``ImportError`` that names the extra to install."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            "TorchQualityModel needs PyTorch to train, an optional dependency: "
            f"{TORCH_INSTALL} (torch==2.13.0, the CPU build is enough). Loading a saved model "
            "and predicting need numpy only."
        ) from exc
    return torch


@contextmanager
def _torch_state(torch: Any, seed: int, n_threads: int | None) -> Iterator[None]:
    """Seeded torch with ``n_threads`` threads; the generator and thread count restored on exit.

    ``torch.use_deterministic_algorithms`` is not switched on: its first call imports
    ``torch._inductor`` (seconds), and the CPU kernels used here (linear layers, a summing
    ``EmbeddingBag``, AdamW) are deterministic on one thread anyway (the tests check that two
    fits give identical weights).
    """
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            if n_threads:
                torch.set_num_threads(n_threads)
            yield
        finally:
            torch.set_num_threads(threads)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


class TorchQualityModel:
    """Probability that a node's model completes a request, from a small torch network.

    Parameters
    ----------
    hidden_sizes
        Widths of the hidden ReLU layers (one to four).
    text_buckets
        Hash buckets of the question's bag of words (``0``: no text input); ``0`` or a power of
        two from 16 to 2**20.
    text_dim
        Width of the text embedding.
    epochs
        Most passes over the training rows.
    patience
        Epochs without improvement of the early-stopping loss before training stops.
    lr, weight_decay
        AdamW's learning rate and decoupled weight decay.
    batch_size
        Rows per step.
    validation_fraction
        Share of the train requests held out for early stopping (``0``: none, all ``epochs`` run).
    calibration
        ``"temperature"``, ``"isotonic"`` (both fitted on the ``validation`` split) or ``"none"``.
    analytic_offset
        Add the analytic quality's logit to the network's output (the network learns a
        correction to it).
    catalog
        Where models and tasks are looked up at training time; default: the shipped catalog.
    n_threads
        Torch threads during training (``None``: leave torch's setting).
    random_state
        Seed of the initial weights, the batch order and the early-stopping split (``None``: 0).

    The defaults were chosen by the validation split of a 3,000-request seed-0 table (the test
    split unused) among a handful of variants: learning rate 3e-3, 1e-3, 3e-4 and 1e-4, weight
    decay 1e-4 and 1e-2, the analytic offset on and off, no text input, narrower layers, dropout
    and a separate decay of the embedding (the last two gained nothing and were dropped). The
    text embedding is what the network overfits with (it can memorise a request's words, and
    a request's nodes share its hidden difficulty): the early-stopping loss bottoms out after
    about five epochs, and early stopping is the regulariser that matters.

    Attributes
    ----------
    feature_spec_ : FeatureSpec
        The dense features' specification (``text_buckets=0``; the bag is a separate input).
    feature_names_ : tuple of str
    arrays_ : dict of numpy.ndarray
        The weights, scaling and calibration (:meth:`npz_shapes`), read-only.
    metrics_ : dict
        Validation metrics before and after calibration, and the training history.
    training_data_ : dict
        What the model was trained on.
    torch_version_ : str
        The torch version that trained it.
    """

    _SETTINGS = (
        "hidden_sizes",
        "text_buckets",
        "text_dim",
        "epochs",
        "patience",
        "lr",
        "weight_decay",
        "batch_size",
        "validation_fraction",
        "calibration",
        "analytic_offset",
        "n_threads",
        "random_state",
    )

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (64, 32),
        text_buckets: int = 2**12,
        text_dim: int = 8,
        epochs: int = 40,
        patience: int = 5,
        lr: float = 3e-4,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        validation_fraction: float = 0.15,
        calibration: str = "temperature",
        analytic_offset: bool = False,
        catalog: Catalog | None = None,
        n_threads: int | None = 1,
        random_state: int | None = 0,
    ) -> None:
        self.hidden_sizes = hidden_sizes
        self.text_buckets = text_buckets
        self.text_dim = text_dim
        self.epochs = epochs
        self.patience = patience
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.calibration = calibration
        self.analytic_offset = analytic_offset
        self.catalog = catalog
        self.n_threads = n_threads
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The settings (scikit-learn convention)."""
        return {**{k: getattr(self, k) for k in self._SETTINGS}, "catalog": self.catalog}

    def _settings(self) -> dict[str, Any]:
        """The JSON-ready settings; ``ValueError`` on an invalid one."""
        settings = {k: getattr(self, k) for k in self._SETTINGS}
        if isinstance(settings["hidden_sizes"], tuple):
            settings["hidden_sizes"] = list(settings["hidden_sizes"])
        problem = _settings_problem(settings)
        if problem:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        return settings

    @staticmethod
    def npz_shapes(settings: Mapping[str, Any], n_features: int) -> dict[str, tuple[int, ...]]:
        """Every ``.npz`` field and its shape, for (valid) ``settings`` and ``n_features``.

        ``feature_mean``, ``feature_scale``; ``text_embedding`` (``text_buckets x text_dim``,
        ``0 x 0`` without text); ``weight_k`` / ``bias_k`` of every layer, the last one the
        output (torch's ``out x in`` layout); ``temperature``; ``calibration_x`` /
        ``calibration_y`` (variable length, shown as ``-1``).
        """
        buckets = int(settings["text_buckets"])
        dim = int(settings["text_dim"]) if buckets else 0
        sizes = [n_features + dim, *(int(h) for h in settings["hidden_sizes"]), 1]
        shapes: dict[str, tuple[int, ...]] = {
            "feature_mean": (n_features,),
            "feature_scale": (n_features,),
            "text_embedding": (buckets, dim),
        }
        for k, (a, b) in enumerate(pairwise(sizes)):
            shapes[f"weight_{k}"] = (b, a)
            shapes[f"bias_{k}"] = (b,)
        return shapes | {"temperature": (1,), "calibration_x": (-1,), "calibration_y": (-1,)}

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, table: Any, y: Any = None) -> TorchQualityModel:
        """Train on the ``train`` rows (early stopping inside them), calibrate on ``validation``.

        Parameters
        ----------
        table
            A bench table with the columns of
            :data:`~qlmio_opt.predictors.learned_features.PAIR_COLUMNS`, ``split`` and
            ``completed`` (and ``request``, to group the early-stopping split).
        y
            Ignored (the target is the table's ``completed``).

        Returns
        -------
        TorchQualityModel
            ``self``.

        Raises
        ------
        ImportError
            If torch is not installed (the message names the extra).
        ValueError
            On a missing column, an empty split, a single outcome class or an invalid setting.
        """
        settings = self._settings()
        torch = _import_torch()
        for col in ("split", "completed", "prompt"):
            if col not in table:
                raise ValueError(f"the table lacks the column {col}")
        catalog = self.catalog or default_catalog()
        spec = FeatureSpec.from_catalog(catalog, text_buckets=0)
        split = np.asarray(table["split"], dtype=object)
        train, val = split == "train", split == "validation"
        target = np.asarray(table["completed"], dtype=np.int64)
        if not train.any():
            raise ValueError("the table has no train rows")
        if len(np.unique(target[train])) != 2:
            raise ValueError("the train rows hold a single outcome class")
        if self.calibration != "none" and len(np.unique(target[val])) != 2:
            raise ValueError(
                f"{self.calibration} calibration needs validation rows of both classes"
            )
        X = quality_features(table, catalog, spec)
        prompts = np.asarray(table["prompt"], dtype=object)
        bag = text_bag(prompts, self.text_buckets) if self.text_buckets else None
        seed = 0 if self.random_state is None else int(self.random_state)
        self.feature_spec_ = spec
        self.feature_names_ = spec.names()
        fit_rows, stop_rows = _stop_split(table, train, self.validation_fraction, seed)
        mean = X[train].mean(axis=0)
        std = X[train].std(axis=0)
        scale = np.where(std > 1e-9, std, 1.0)
        with _torch_state(torch, seed, self.n_threads):
            state, history = self._train(torch, X, bag, target, fit_rows, stop_rows, mean, scale)
        arrays = {
            "feature_mean": mean,
            "feature_scale": scale,
            **state,
            "temperature": np.ones(1),
            "calibration_x": np.array([0.0, 1.0]),
            "calibration_y": np.array([0.0, 1.0]),
        }
        self.arrays_ = _check_arrays(arrays, "fit", settings, X.shape[1])
        self.metrics_: dict[str, Any] = {"training": history}
        if val.any():
            z_val = self._logits(X[val], None if bag is None else bag[val])
            arrays |= _calibration(self.calibration, z_val, target[val])
            self.arrays_ = _check_arrays(arrays, "fit", settings, X.shape[1])
            self.metrics_ |= {
                "validation_uncalibrated": quality_metrics(target[val], _sigmoid(z_val)),
                "validation_calibrated_in_sample": quality_metrics(
                    target[val], self._calibrate(z_val)
                ),
            }
        self.metrics_["training"]["temperature"] = float(self.arrays_["temperature"][0])
        self.torch_version_ = str(torch.__version__)
        self.training_data_ = _describe(table, train, val, X[train], target[train])
        self.training_data_["early_stopping_rows"] = int(stop_rows.sum())
        return self

    def _train(
        self,
        torch: Any,
        X: np.ndarray,
        bag: Any,
        target: np.ndarray,
        fit_rows: np.ndarray,
        stop_rows: np.ndarray,
        mean: np.ndarray,
        scale: np.ndarray,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Train the network (inside :func:`_torch_state`); the best weights and the history."""
        nn = torch.nn
        dense = torch.from_numpy(((X - mean) / scale).astype(np.float32))
        offset = self._offset(X).astype(np.float32)
        offset_t = torch.from_numpy(offset)
        y = torch.from_numpy(target.astype(np.float32))
        dim = self.text_dim if self.text_buckets else 0
        sizes = [X.shape[1] + dim, *self.hidden_sizes]
        embedding = nn.EmbeddingBag(self.text_buckets, dim, mode="sum") if dim else None
        if embedding is not None:
            nn.init.normal_(embedding.weight, std=0.05)
        layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        out = nn.Linear(sizes[-1], 1)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        modules = nn.ModuleList([*layers, out, *([embedding] if embedding else [])])

        def forward(rows: np.ndarray) -> Any:
            idx = torch.from_numpy(rows)
            h = dense[idx]
            if embedding is not None:
                sub = bag[rows]
                h = torch.cat(
                    [
                        h,
                        embedding(
                            torch.from_numpy(sub.indices.astype(np.int64)),
                            torch.from_numpy(sub.indptr[:-1].astype(np.int64)),
                            per_sample_weights=torch.from_numpy(sub.data.astype(np.float32)),
                        ),
                    ],
                    dim=1,
                )
            for layer in layers:
                h = torch.relu(layer(h))
            return out(h).squeeze(1) + offset_t[idx]

        loss_fn = nn.BCEWithLogitsLoss()
        optimiser = torch.optim.AdamW(
            modules.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        rng = np.random.default_rng(0 if self.random_state is None else self.random_state)
        fit_idx, stop_idx = np.flatnonzero(fit_rows), np.flatnonzero(stop_rows)
        best = (math.inf, 0, {k: v.detach().clone() for k, v in modules.state_dict().items()})
        losses: list[float] = []
        for epoch in range(1, self.epochs + 1):
            modules.train()
            order = fit_idx[rng.permutation(len(fit_idx))]
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                optimiser.zero_grad()
                loss = loss_fn(forward(rows), y[torch.from_numpy(rows)])
                loss.backward()
                optimiser.step()
            if not len(stop_idx):
                best = (math.nan, epoch, modules.state_dict())
                continue
            modules.eval()
            with torch.no_grad():
                stop_loss = float(loss_fn(forward(stop_idx), y[torch.from_numpy(stop_idx)]))
            losses.append(stop_loss)
            if stop_loss < best[0] - 1e-6:
                state = {k: v.detach().clone() for k, v in modules.state_dict().items()}
                best = (stop_loss, epoch, state)
            elif epoch - best[1] >= self.patience:
                break
        modules.load_state_dict(best[2])
        state = {}
        for k, layer in enumerate([*layers, out]):
            state[f"weight_{k}"] = layer.weight.detach().numpy().copy()
            state[f"bias_{k}"] = layer.bias.detach().numpy().copy()
        if embedding is not None:
            state["text_embedding"] = embedding.weight.detach().numpy().copy()
        else:
            state["text_embedding"] = np.zeros((0, 0), dtype=np.float32)
        history = {
            "epochs_run": epoch,
            "best_epoch": best[1],
            "early_stopping_loss": best[0] if len(stop_idx) else None,
            "early_stopping_curve": losses,
            "fit_rows": len(fit_idx),
            "parameters": int(sum(p.numel() for p in modules.parameters())),
        }
        return state, history

    # -- prediction --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "arrays_"):
            raise ValueError("this TorchQualityModel is not fitted; call fit or load first")

    def _offset(self, X: np.ndarray) -> np.ndarray:
        if not self.analytic_offset:
            return np.zeros(len(X))
        return analytic_logit(X[:, self.feature_spec_.names().index("analytic_quality")])

    def _logits(self, X: np.ndarray, bag: Any) -> np.ndarray:
        """Uncalibrated logits of dense rows ``X`` and their text bag (numpy only).

        The first layer is folded once per set of weights (:func:`_inference_layers`); the
        matrix products run in float32 on one BLAS thread (a 3,000-pair window is too small to
        gain from more, and shared cores lose a lot), the offset and the result are float64.
        """
        if getattr(self, "_layers_of", None) is not self.arrays_:
            self._layers = _inference_layers(self.arrays_, len(self.hidden_sizes) + 1)
            self._layers_of = self.arrays_
        (dense, text, bias), *rest = self._layers
        with _one_blas_thread():
            h = X.astype(np.float32) @ dense + bias
            if text is not None:
                h += (bag @ text).astype(np.float32)
            for weight, b in rest:
                h = np.maximum(h, 0.0) @ weight + b
        return h[:, 0].astype(np.float64) + self._offset(X)

    def _calibrate(self, z: np.ndarray) -> np.ndarray:
        a = self.arrays_
        p = _sigmoid(z / a["temperature"][0])
        return np.clip(np.interp(p, a["calibration_x"], a["calibration_y"]), 0.0, 1.0)

    def predict_proba_features(
        self, X: np.ndarray, calibrated: bool = True, prompts: Sequence[Any] | None = None
    ) -> np.ndarray:
        """Completion probability of dense feature rows ``X`` (numpy inference).

        Parameters
        ----------
        X
            ``(n, len(feature_names_))`` dense features (:meth:`features_table`).
        calibrated
            Apply the calibration.
        prompts
            The ``n`` rows' prompts; required when the model has a text input.
        """
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names_):
            raise ValueError(f"X must have shape (n, {len(self.feature_names_)}); got {X.shape}")
        bag = None
        if self.text_buckets:
            if prompts is None or len(prompts) != len(X):
                raise ValueError("this model reads the prompt: pass one prompt per row of X")
            bag = text_bag(np.asarray(prompts, dtype=object), self.text_buckets)
        z = self._logits(X, bag)
        return self._calibrate(z) if calibrated else _sigmoid(z)

    def features_table(self, table: Any, catalog: Catalog | None = None) -> np.ndarray:
        """The dense feature matrix of a bench table's rows."""
        self._check_fitted()
        return quality_features(
            table, catalog or self.catalog or default_catalog(), self.feature_spec_
        )

    def predict_proba_table(
        self, table: Any, calibrated: bool = True, catalog: Catalog | None = None
    ) -> np.ndarray:
        """Completion probability of every row of a bench table, shape ``(n_rows,)``."""
        X = self.features_table(table, catalog)
        return self.predict_proba_features(X, calibrated, np.asarray(table["prompt"], dtype=object))

    def predict_proba_instance(
        self, instance: Instance, calibrated: bool = True, catalog: Catalog | None = None
    ) -> np.ndarray:
        """``(R, N)`` completion probability of every request on every node of ``instance``."""
        self._check_fitted()
        shape = (len(instance.requests), len(instance.nodes))
        if shape[0] == 0:
            return np.zeros(shape)
        catalog = catalog or instance.resolved_catalog
        pairs = pairs_from_instance(instance, catalog)
        X = quality_features(pairs, catalog, self.feature_spec_)
        return self.predict_proba_features(X, calibrated, pairs["prompt"]).reshape(shape)

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.json`` and ``<path>.npz`` (a ``.json``/``.npz`` suffix is dropped).

        Returns
        -------
        tuple of Path
            The JSON and the ``.npz`` file.
        """
        self._check_fitted()
        from qlmio_opt import __version__

        json_path, npz_path = _paths(path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        with open(npz_path, "wb") as fh:
            np.savez(fh, **{k: np.ascontiguousarray(v) for k, v in self.arrays_.items()})
        meta = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "package_version": __version__,
            "torch_version": self.torch_version_,
            "settings": self._settings(),
            "feature_version": FEATURE_VERSION,
            "feature_spec": self.feature_spec_.to_dict(),
            "feature_names": list(self.feature_names_),
            "metrics": _json_safe(self.metrics_),
            "training_data": _json_safe(self.training_data_),
        }
        write_model_json(json_path, npz_path, meta)
        return json_path, npz_path

    @classmethod
    def load(cls, path: str | Path, catalog: Catalog | None = None) -> TorchQualityModel:
        """Read a model written by :meth:`save` (JSON and ``.npz`` of plain arrays; no torch).

        Raises
        ------
        ValueError
            Naming the file and the field, if anything is missing, malformed or inconsistent.
        FileNotFoundError
            If a file is missing.
        """
        json_path, _ = _paths(path)
        meta = _read_json(json_path)
        npz_path = json_path.parent / meta["npz_file"]
        settings, spec = meta["settings"], meta["_spec"]
        arrays = _read_npz(json_path, npz_path, meta)
        model = cls(**{k: settings[k] for k in cls._SETTINGS}, catalog=catalog)
        model.hidden_sizes = tuple(settings["hidden_sizes"])
        model.feature_spec_ = spec
        model.feature_names_ = spec.names()
        model.arrays_ = arrays
        model.metrics_ = meta["metrics"]
        model.training_data_ = meta["training_data"]
        model.torch_version_ = meta["torch_version"]
        return model


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _inference_layers(arrays: Mapping[str, np.ndarray], n_layers: int) -> list[tuple[Any, ...]]:
    """The network as float32 ``(in, out)`` matrices, standardisation and text folded in.

    The first layer reads ``[(X - mean) / scale, bag @ E]``: its weight ``W`` splits into a
    dense part ``W_d`` and a text part ``W_t``, so it equals ``X @ (W_d / scale).T + bag @
    (E @ W_t.T) + b - (W_d / scale) @ mean``. Returns ``[(dense, text or None, bias), (weight,
    bias), ...]``.
    """
    mean, scale = arrays["feature_mean"], arrays["feature_scale"]
    w0 = arrays["weight_0"].astype(np.float64)
    dense = w0[:, : len(mean)] / scale
    bias = arrays["bias_0"] - dense @ mean
    embedding = arrays["text_embedding"].astype(np.float64)
    text = embedding @ w0[:, len(mean) :].T if embedding.size else None
    first = np.ascontiguousarray(dense.T, dtype=np.float32)
    layers: list[tuple[Any, ...]] = [(first, text, bias.astype(np.float32))]
    for k in range(1, n_layers):
        weight = np.ascontiguousarray(arrays[f"weight_{k}"].T, dtype=np.float32)
        layers.append((weight, arrays[f"bias_{k}"].astype(np.float32)))
    return layers


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread (through a cached ``threadpoolctl`` controller)."""
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


@cache
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _stop_split(
    table: Any, train: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train rows to fit on and train rows for early stopping, grouped by request (or prompt)."""
    key = "request" if "request" in table else "prompt"
    groups = np.asarray(table[key], dtype=object).astype(str)
    train_groups = np.unique(groups[train])
    n_stop = round(fraction * len(train_groups))
    if fraction > 0 and len(train_groups) > 1:
        n_stop = min(max(n_stop, 1), len(train_groups) - 1)
    held = np.random.default_rng(seed).permutation(train_groups)[:n_stop]
    stop = train & np.isin(groups, held)
    return train & ~stop, stop


def _calibration(kind: str, z: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The calibration arrays fitted on validation logits ``z`` and outcomes ``y``."""
    if kind == "temperature":
        from scipy.optimize import minimize_scalar

        def loss(log_t: float) -> float:
            s = z / math.exp(log_t)
            return float(np.mean(np.logaddexp(0.0, s) - y * s))

        best = minimize_scalar(loss, bounds=(-3.0, 3.0), method="bounded")
        return {"temperature": np.array([math.exp(best.x)])}
    if kind == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(_sigmoid(z), y)
        return {
            "calibration_x": np.asarray(iso.X_thresholds_, dtype=float),
            "calibration_y": np.asarray(iso.y_thresholds_, dtype=float),
        }
    return {}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _settings_problem(s: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first invalid setting as ``(name, problem)``, or ``None``."""
    hidden = s["hidden_sizes"]
    if (
        not isinstance(hidden, list | tuple)
        or not 1 <= len(hidden) <= 4
        or not all(_is_int(h) and 1 <= h <= 4096 for h in hidden)
    ):
        return "hidden_sizes", f"must be one to four integers 1..4096; got {hidden!r}"
    b = s["text_buckets"]
    if not _is_int(b) or not (b == 0 or (16 <= b <= 2**20 and b & (b - 1) == 0)):
        return "text_buckets", f"must be 0 or a power of two 16..2**20; got {b!r}"
    for key, low in (("text_dim", 1), ("epochs", 1), ("patience", 1), ("batch_size", 1)):
        if not _is_int(s[key]) or not low <= s[key] <= 2**20:
            return key, f"must be an integer >= {low}; got {s[key]!r}"
    for key in ("lr", "weight_decay", "validation_fraction"):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            return key, f"must be a finite number >= 0; got {v!r}"
    if not s["lr"] > 0:
        return "lr", f"must be positive; got {s['lr']!r}"
    if not s["validation_fraction"] < 1:
        return "validation_fraction", f"must be below 1; got {s['validation_fraction']!r}"
    if s["calibration"] not in _CALIBRATIONS:
        return "calibration", f"must be one of {', '.join(_CALIBRATIONS)}; got {s['calibration']!r}"
    if not isinstance(s["analytic_offset"], bool):
        return "analytic_offset", f"must be true or false; got {s['analytic_offset']!r}"
    for key in ("n_threads", "random_state"):
        if s[key] is not None and (not _is_int(s[key]) or s[key] < 0):
            return key, f"must be a non-negative integer or null; got {s[key]!r}"
    return None


def _read_json(path: Path) -> dict[str, Any]:
    meta = read_model_json(path)

    def fail(field: str, problem: str) -> ValueError:
        return ValueError(f"{path}: field '{field}': {problem}")

    for key in _JSON_KEYS:
        if key not in meta:
            raise fail(key, "missing")
    if meta["format"] != MODEL_FORMAT:
        raise fail("format", f"expected {MODEL_FORMAT!r}, got {meta['format']!r}")
    if meta["version"] != MODEL_VERSION:
        raise fail("version", f"unsupported version {meta['version']!r} (reads {MODEL_VERSION})")
    if meta["feature_version"] != FEATURE_VERSION:
        raise fail(
            "feature_version",
            f"model built with feature version {meta['feature_version']!r}, this code computes "
            f"version {FEATURE_VERSION}",
        )
    try:
        spec = FeatureSpec.from_dict(meta["feature_spec"])
    except (ValueError, AttributeError) as exc:
        raise fail("feature_spec", str(exc)) from None
    if spec.text_buckets:
        raise fail("feature_spec", "the dense features have no text score (text_buckets 0)")
    if meta["feature_names"] != list(spec.names()):
        raise fail("feature_names", "do not match the features this code computes for the spec")
    settings = meta["settings"]
    if not isinstance(settings, dict):
        raise fail("settings", "must be an object")
    for key in TorchQualityModel._SETTINGS:
        if key not in settings:
            raise fail(f"settings.{key}", "missing")
    problem = _settings_problem(settings)
    if problem:
        raise fail(f"settings.{problem[0]}", problem[1])
    if not isinstance(meta["metrics"], dict) or not isinstance(meta["training_data"], dict):
        raise fail("metrics", "metrics and training_data must be objects")
    npz_file = meta["npz_file"]
    if not isinstance(npz_file, str) or not npz_file or Path(npz_file).name != npz_file:
        raise fail("npz_file", "must be a bare file name next to the JSON")
    sha = meta["npz_sha256"]
    if not isinstance(sha, str) or len(sha) != 64:
        raise fail("npz_sha256", "must be a hex SHA-256")
    meta["_spec"] = spec
    return meta


def _read_npz(json_path: Path, npz_path: Path, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The checked arrays of the ``.npz`` that the checked JSON ``meta`` names: every shape is
    known from the settings (the calibration knots' length only is bounded by the hard cap)."""
    settings, n_features = meta["settings"], len(meta["_spec"].names())
    specs = {
        key: ArraySpec("f", tuple(None if n == -1 else n for n in shape))
        for key, shape in TorchQualityModel.npz_shapes(settings, n_features).items()
    }
    arrays = read_npz(json_path, npz_path, meta["npz_sha256"], specs)
    return _check_arrays(arrays, str(npz_path), settings, n_features)


def _check_arrays(
    arrays: Mapping[str, np.ndarray], source: str, settings: Mapping[str, Any], n_features: int
) -> dict[str, np.ndarray]:
    """Check every field's dtype, shape and values; return float copies, read-only."""

    def fail(field: str, problem: str) -> ValueError:
        return ValueError(f"{source}: field '{field}': {problem}")

    out: dict[str, np.ndarray] = {}
    for key, shape in TorchQualityModel.npz_shapes(settings, n_features).items():
        a = np.asarray(arrays[key])
        if a.dtype.kind != "f":
            raise fail(key, f"must be floating point, is {a.dtype}")
        if a.ndim != len(shape) or any(
            s not in (-1, n) for s, n in zip(shape, a.shape, strict=True)
        ):
            raise fail(key, f"has shape {a.shape}, expected {shape}")
        if not np.isfinite(a).all():
            raise fail(key, "contains NaN or infinite values")
        # weights keep their (float32) training precision; inference computes in float64
        a = a.copy() if key.startswith(("weight_", "text_")) else a.astype(np.float64)
        a.setflags(write=False)
        out[key] = a
    if (out["feature_scale"] <= 0).any():
        raise fail("feature_scale", "must be positive")
    if not 1e-3 <= out["temperature"][0] <= 1e3:
        raise fail("temperature", "must lie in [0.001, 1000]")
    cx, cy = out["calibration_x"], out["calibration_y"]
    if len(cx) < 1 or len(cx) != len(cy):
        raise fail("calibration_y", f"has {len(cy)} entries, calibration_x {len(cx)}")
    if (np.diff(cx) < 0).any():
        raise fail("calibration_x", "must be non-decreasing")
    if (cy < 0).any() or (cy > 1).any() or (np.diff(cy) < 0).any():
        raise fail("calibration_y", "must be non-decreasing probabilities")
    return out
