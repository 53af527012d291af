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
thread, a few milliseconds for a 500-request x 6-node window (whose feature rows come from
:func:`~qlmio_opt.predictors.learned_features.window_quality_features`).

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

**Safe model files.** :meth:`~TorchQualityModel.save` writes ``<name>.json``
(:class:`TorchQualityFile`: format, versions, settings, feature specification and names,
metrics, training data, the ``.npz`` name and its SHA-256) and ``<name>.npz`` of plain float
arrays (:meth:`TorchQualityModel.npz_shapes`).
:meth:`~TorchQualityModel.load` uses the shared safe readers of
:mod:`qlmio_opt.predictors.model_files` only (hash before the archive is opened, every member's
declared size bounded by the shape the settings give it before anything is inflated,
``numpy.load(allow_pickle=False)``), never ``torch.load``, validates the JSON field by field and
checks every array (presence, dtype, shape, finiteness, positive scales and temperature, a
monotone calibration map in [0, 1]), and refuses anything else with a ``ValueError`` naming the
file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from qlmio_opt.domain.catalog import Catalog, default_catalog
from qlmio_opt.domain.instance import Instance
from qlmio_opt.predictors.base import NotFittedError, ParamsMixin
from qlmio_opt.predictors.learned_features import (
    FEATURE_VERSION,
    FeatureSpec,
    FeatureSpecFields,
    TextBuckets,
    analytic_logit,
    quality_features,
    text_bag,
    window_quality_features,
    window_requests,
)
from qlmio_opt.predictors.learned_quality import (
    QualityFile,
    TrainingRows,
    describe_training_data,
    quality_metrics,
)
from qlmio_opt.predictors.model_files import (
    ArraySpec,
    FileModel,
    json_safe,
    model_paths,
    read_header,
    read_npz,
    validated,
    write_model_json,
    write_npz,
)

__all__ = [
    "MODEL_FORMAT",
    "MODEL_VERSION",
    "TORCH_INSTALL",
    "TorchQualityFile",
    "TorchQualityModel",
    "TorchSettings",
]

MODEL_FORMAT = "qlmio-opt/learned-quality-torch"
MODEL_VERSION = 1
TORCH_INSTALL = "pip install 'qlmio-opt[torch]'"

_Count = Annotated[int, Field(ge=1, le=2**20)]


class TorchSettings(FileModel):
    """The settings of :class:`TorchQualityModel` (its ``__init__`` but the catalog), as
    ``fit`` checks them and the model file records them."""

    hidden_sizes: Annotated[
        list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1, max_length=4)
    ]
    text_buckets: TextBuckets
    text_dim: _Count
    epochs: _Count
    patience: _Count
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    batch_size: _Count
    validation_fraction: float = Field(ge=0, lt=1)
    calibration: Literal["temperature", "isotonic", "none"]
    analytic_offset: bool
    n_threads: int | None = Field(ge=0)
    random_state: int | None = Field(ge=0, le=2**32 - 1)


class TorchQualityFile(QualityFile):
    """The JSON of a :class:`TorchQualityModel` (format :data:`MODEL_FORMAT`)."""

    format: Literal["qlmio-opt/learned-quality-torch"]
    version: Literal[1]
    torch_version: str
    settings: TorchSettings

    @field_validator("feature_spec")
    @classmethod
    def _dense_only(cls, spec: FeatureSpecFields) -> FeatureSpecFields:
        if spec.text_buckets:
            raise ValueError("the dense features have no text score (text_buckets 0)")
        return spec


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


class TorchQualityModel(ParamsMixin):
    """Probability that a node's model completes a request, from a small torch network.

    scikit-learn's estimator contract (:class:`~qlmio_opt.predictors.base.ParamsMixin`).

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
    settings_ : TorchSettings
        The settings the model was fitted with (what :meth:`save` records).
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

    def _settings(self) -> TorchSettings:
        """The settings, checked; ``ValueError`` (``setting: problem``) on an invalid one."""
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "catalog"}
        return validated(TorchSettings, params)

    @staticmethod
    def npz_shapes(settings: TorchSettings, n_features: int) -> dict[str, tuple[int, ...]]:
        """Every ``.npz`` field and its shape, for ``settings`` and ``n_features``.

        ``feature_mean``, ``feature_scale``; ``text_embedding`` (``text_buckets x text_dim``,
        ``0 x 0`` without text); ``weight_k`` / ``bias_k`` of every layer, the last one the
        output (torch's ``out x in`` layout); ``temperature``; ``calibration_x`` /
        ``calibration_y`` (variable length, shown as ``-1``).
        """
        buckets = settings.text_buckets
        dim = settings.text_dim if buckets else 0
        sizes = [n_features + dim, *settings.hidden_sizes, 1]
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
            On an invalid setting, a missing column, an empty split or a single outcome class.
        """
        settings = self._settings()
        torch = _import_torch()
        rows = _torch_rows(table, settings.calibration)
        catalog = self.catalog or default_catalog()
        spec = FeatureSpec.from_catalog(catalog, text_buckets=0)
        X = quality_features(table, catalog, spec)
        bag = text_bag(table["prompt"], settings.text_buckets) if settings.text_buckets else None
        seed = 0 if settings.random_state is None else settings.random_state
        self.settings_, self.feature_spec_, self.feature_names_ = settings, spec, spec.names()
        fit_rows, stop_rows = _stop_split(table, rows.train, settings.validation_fraction, seed)
        mean = X[rows.train].mean(axis=0)
        std = X[rows.train].std(axis=0)
        scale = np.where(std > 1e-9, std, 1.0)
        data = _TrainingData((X - mean) / scale, self._offset(X), bag, rows.target)
        with _torch_state(torch, seed, settings.n_threads):
            state, history = _train(torch, settings, data, fit_rows, stop_rows)
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
        if rows.val.any():
            self._calibrate_on(X[rows.val], None if bag is None else bag[rows.val], rows, arrays)
        self.metrics_["training"]["temperature"] = float(self.arrays_["temperature"][0])
        self.torch_version_ = str(torch.__version__)
        self.training_data_ = describe_training_data(
            table, rows.train, rows.val, X[rows.train], rows.target[rows.train]
        )
        self.training_data_["early_stopping_rows"] = int(stop_rows.sum())
        return self

    def _calibrate_on(
        self, X_val: np.ndarray, bag_val: Any, rows: TrainingRows, arrays: dict[str, np.ndarray]
    ) -> None:
        """Fit the calibration on the validation rows, and their metrics before and after."""
        y_val = rows.target[rows.val]
        z_val = self._logits(X_val, bag_val)
        arrays |= _calibration(self.settings_.calibration, z_val, y_val)
        self.arrays_ = _check_arrays(arrays, "fit", self.settings_, X_val.shape[1])
        self.metrics_ |= {
            "validation_uncalibrated": quality_metrics(y_val, _sigmoid(z_val)),
            "validation_calibrated_in_sample": quality_metrics(y_val, self._calibrate(z_val)),
        }

    # -- prediction --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "arrays_"):
            raise NotFittedError("this TorchQualityModel is not fitted; call fit or load first")

    def _offset(self, X: np.ndarray) -> np.ndarray:
        if not self.settings_.analytic_offset:
            return np.zeros(len(X))
        return analytic_logit(X[:, self.feature_spec_.names().index("analytic_quality")])

    def _logits(self, X: np.ndarray, bag: Any) -> np.ndarray:
        """Uncalibrated logits of dense rows ``X`` and their text bag (numpy only).

        The first layer is folded once per set of weights (:func:`_inference_layers`); the
        matrix products run in float32 on one BLAS thread (a 3,000-pair window is too small to
        gain from more, and shared cores lose a lot), the offset and the result are float64.
        """
        if getattr(self, "_layers_of", None) is not self.arrays_:
            n_layers = len(self.settings_.hidden_sizes) + 1
            self._layers = _inference_layers(self.arrays_, n_layers)
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
        self,
        X: np.ndarray,
        calibrated: bool = True,
        prompts: Sequence[Any] | np.ndarray | None = None,
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
        if self.settings_.text_buckets:
            if prompts is None or len(prompts) != len(X):
                raise ValueError("this model reads the prompt: pass one prompt per row of X")
            bag = text_bag(prompts, self.settings_.text_buckets)
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
        return self.predict_proba_features(X, calibrated, list(table["prompt"]))

    def predict_proba_instance(
        self, instance: Instance, calibrated: bool = True, catalog: Catalog | None = None
    ) -> np.ndarray:
        """``(R, N)`` completion probability of every request on every node of ``instance``
        (the window's feature rows of
        :func:`~qlmio_opt.predictors.learned_features.window_quality_features`, one per pair)."""
        self._check_fitted()
        shape = (len(instance.requests), len(instance.nodes))
        if shape[0] == 0:
            return np.zeros(shape)
        catalog = catalog or instance.resolved_catalog
        X, node_key = window_quality_features(instance, self.feature_spec_, catalog)
        rows = (node_key[None, :] * shape[0] + np.arange(shape[0])[:, None]).ravel()
        prompts = np.repeat(np.array(window_requests(instance).prompt, dtype=object), shape[1])
        return self.predict_proba_features(X[rows], calibrated, prompts).reshape(shape)

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

        json_path, npz_path = model_paths(path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_npz(npz_path, self.arrays_)
        meta = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "package_version": __version__,
            "torch_version": self.torch_version_,
            "settings": self._in_init_order(self.settings_.model_dump()),
            "feature_version": FEATURE_VERSION,
            "feature_spec": self.feature_spec_.to_dict(),
            "feature_names": list(self.feature_names_),
            "metrics": json_safe(self.metrics_),
            "training_data": json_safe(self.training_data_),
        }
        write_model_json(json_path, npz_path, meta, TorchQualityFile)
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
        json_path, _ = model_paths(path)
        header = read_header(json_path, TorchQualityFile)
        npz_path = json_path.parent / header.npz_file
        settings, spec = header.settings, header.feature_spec.spec()
        n_features = len(spec.names())
        specs = {
            key: ArraySpec("f", tuple(None if n == -1 else n for n in shape))
            for key, shape in cls.npz_shapes(settings, n_features).items()
        }  # every shape is known from the settings (the calibration knots' length only is not)
        arrays = read_npz(json_path, npz_path, header.npz_sha256, specs)
        params = settings.model_dump() | {"hidden_sizes": tuple(settings.hidden_sizes)}
        model = cls(**params, catalog=catalog)
        model.settings_ = settings
        model.feature_spec_, model.feature_names_ = spec, spec.names()
        model.arrays_ = _check_arrays(arrays, str(npz_path), settings, n_features)
        model.metrics_ = header.metrics
        model.training_data_ = header.training_data
        model.torch_version_ = header.torch_version
        return model


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def _torch_rows(table: Any, calibration: str) -> TrainingRows:
    """The train and validation rows (:class:`TrainingRows`); the validation rows must hold
    both outcomes for a calibration, and the table a prompt column."""
    if "prompt" not in table:
        raise ValueError("the table lacks the column prompt")
    rows = TrainingRows.of(table, calibration)
    if calibration != "none" and len(np.unique(rows.target[rows.val])) != 2:
        raise ValueError(f"{calibration} calibration needs validation rows of both classes")
    return rows


@dataclass(frozen=True)
class _TrainingData:
    """Every row's standardised dense features, analytic offset, text bag and outcome."""

    dense: np.ndarray
    offset: np.ndarray
    bag: Any
    target: np.ndarray


@dataclass(frozen=True)
class _Network:
    """The torch modules: hidden layers, output layer, text embedding (or ``None``)."""

    layers: Any
    out: Any
    embedding: Any
    modules: Any

    @classmethod
    def build(cls, torch: Any, settings: TorchSettings, n_dense: int) -> _Network:
        """The network, initialised from torch's (seeded) generator in a fixed order: the
        embedding ``N(0, 0.05**2)``, the hidden layers torch's defaults, the output zero."""
        nn = torch.nn
        dim = settings.text_dim if settings.text_buckets else 0
        sizes = [n_dense + dim, *settings.hidden_sizes]
        embedding = nn.EmbeddingBag(settings.text_buckets, dim, mode="sum") if dim else None
        if embedding is not None:
            nn.init.normal_(embedding.weight, std=0.05)
        layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        out = nn.Linear(sizes[-1], 1)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        modules = nn.ModuleList([*layers, out, *([embedding] if embedding else [])])
        return cls(layers, out, embedding, modules)

    def forward(self, torch: Any, dense: Any, bag: Any, rows: np.ndarray) -> Any:
        """Hidden states of ``rows`` (the dense rows, then their text embedding) through the
        layers: the logits before the offset."""
        h = dense[torch.from_numpy(rows)]
        if self.embedding is not None:
            sub = bag[rows]
            text = self.embedding(
                torch.from_numpy(sub.indices.astype(np.int64)),
                torch.from_numpy(sub.indptr[:-1].astype(np.int64)),
                per_sample_weights=torch.from_numpy(sub.data.astype(np.float32)),
            )
            h = torch.cat([h, text], dim=1)
        for layer in self.layers:
            h = torch.relu(layer(h))
        return self.out(h).squeeze(1)

    def weights(self) -> dict[str, np.ndarray]:
        """The weights as numpy arrays (``weight_k``, ``bias_k``, ``text_embedding``)."""
        state = {}
        for k, layer in enumerate([*self.layers, self.out]):
            state[f"weight_{k}"] = layer.weight.detach().numpy().copy()
            state[f"bias_{k}"] = layer.bias.detach().numpy().copy()
        if self.embedding is not None:
            state["text_embedding"] = self.embedding.weight.detach().numpy().copy()
        else:
            state["text_embedding"] = np.zeros((0, 0), dtype=np.float32)
        return state


def _train(
    torch: Any,
    settings: TorchSettings,
    data: _TrainingData,
    fit_rows: np.ndarray,
    stop_rows: np.ndarray,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train the network (inside :func:`_torch_state`): AdamW on mini-batches in a seeded
    order, keeping the weights of the epoch with the lowest early-stopping loss. Returns those
    weights and the history."""
    net = _Network.build(torch, settings, data.dense.shape[1])
    dense = torch.from_numpy(data.dense.astype(np.float32))
    offset = torch.from_numpy(data.offset.astype(np.float32))
    y = torch.from_numpy(data.target.astype(np.float32))

    def loss_of(rows: np.ndarray) -> Any:
        idx = torch.from_numpy(rows)
        return loss_fn(net.forward(torch, dense, data.bag, rows) + offset[idx], y[idx])

    loss_fn = torch.nn.BCEWithLogitsLoss()
    optimiser = torch.optim.AdamW(
        net.modules.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    rng = np.random.default_rng(0 if settings.random_state is None else settings.random_state)
    fit_idx, stop_idx = np.flatnonzero(fit_rows), np.flatnonzero(stop_rows)
    best = (math.inf, 0, {k: v.detach().clone() for k, v in net.modules.state_dict().items()})
    losses: list[float] = []
    epoch = 0
    for epoch in range(1, settings.epochs + 1):
        net.modules.train()
        order = fit_idx[rng.permutation(len(fit_idx))]
        for start in range(0, len(order), settings.batch_size):
            optimiser.zero_grad()
            loss_of(order[start : start + settings.batch_size]).backward()
            optimiser.step()
        if not len(stop_idx):
            best = (math.nan, epoch, net.modules.state_dict())
            continue
        net.modules.eval()
        with torch.no_grad():
            losses.append(float(loss_of(stop_idx)))
        if losses[-1] < best[0] - 1e-6:
            state = {k: v.detach().clone() for k, v in net.modules.state_dict().items()}
            best = (losses[-1], epoch, state)
        elif epoch - best[1] >= settings.patience:
            break
    net.modules.load_state_dict(best[2])
    history = {
        "epochs_run": epoch,
        "best_epoch": best[1],
        "early_stopping_loss": best[0] if len(stop_idx) else None,
        "early_stopping_curve": losses,
        "fit_rows": len(fit_idx),
        "parameters": int(sum(p.numel() for p in net.modules.parameters())),
    }
    return net.weights(), history


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


def _check_arrays(
    arrays: Mapping[str, np.ndarray], source: str, settings: TorchSettings, n_features: int
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
