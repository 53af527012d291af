"""The learned quality model (issue MGQP): gradient-boosted trees, calibrated, saved as numbers.

Training (:meth:`LearnedQualityModel.fit`) takes a benchmark table
(:func:`qlmio_opt.simulator.dataset.bench_data`), computes the features of
:mod:`qlmio_opt.predictors.learned_features` (one implementation for tables and windows), fits a
scikit-learn :class:`~sklearn.ensemble.HistGradientBoostingClassifier` on the ``train`` split
to the observed ``completed`` outcome (never on the hidden ``true_completion_prob``) and
calibrates its probabilities: by default, per tier (edge, cloud), with a logistic regression on
the logit of the analytic quality and the trees' deviation from it, fitted on the ``validation``
rows and out-of-fold predictions of the ``train`` rows, which shrinks the learned per-request
deviations towards the catalog prior as far as held-out rows say they deserve
(:func:`tier_logistic_inputs`); one regression for both tiers and an isotonic map (knots and
values, applied with :func:`numpy.interp`) are the alternatives.
Hyper-parameters are fixed a priori (small trees, see :class:`LearnedQualityModel`); the
``test`` split is never touched here.

**Learned text score.** Before the trees, a linear model learns what the question's words say
about difficulty: an L2-penalised logistic regression of ``completed`` on the hashed bag of the
question's words (:func:`~qlmio_opt.predictors.learned_features.text_bag`), with the logit of
the analytic quality as a fixed offset (so the words explain only what the analytic predictor
misses), each request weighing 1 in total whatever its number of rows, and a free intercept
that is dropped afterwards. Its coefficient vector turns every prompt into one number, the
``text_score`` feature of the trees. To keep the trees from trusting a score fitted on the very
outcomes they learn from, the ``train`` rows get **out-of-fold** scores (``text_folds`` folds
grouped by request: a request's score comes from coefficients fitted without it); the
validation rows, and every prediction later, use the coefficients fitted on all ``train`` rows,
which the model file stores.

**Safe model files.** :meth:`~LearnedQualityModel.save` writes two files and no pickle:

- ``<name>.json`` (:class:`SklearnQualityFile`): format and version, the package and
  scikit-learn versions that trained it, the settings, the feature specification and names,
  validation metrics, a description of the training data, and the SHA-256 of the ``.npz``;
- ``<name>.npz``: every tree's node arrays
  (:data:`~qlmio_opt.predictors.tree_ensemble.TREE_FIELDS`; trees stacked, ``tree_offsets``
  marks where each starts, ``baseline`` the raw score before any tree), the calibration arrays
  ``calibration_x`` / ``calibration_y`` (isotonic) and ``calibration_tier`` (six
  coefficients) and the text coefficients ``text_coef`` (one float per hash bucket; empty
  without a text feature).

:meth:`~LearnedQualityModel.load` reads them through the shared safe readers of
:mod:`qlmio_opt.predictors.model_files` (a size-bounded JSON validated field by field; the
``.npz``'s hash checked before the archive is opened and every member's declared size bounded
by what the JSON says before anything is inflated; ``numpy.load(allow_pickle=False)`` only),
checks every array (dtype, shape, finiteness, feature indices, child indices pointing forward
inside their own tree, the text coefficients' length and finiteness) and refuses anything else
with a ``ValueError`` naming the file and the field. Prediction never needs scikit-learn: the
trees run in numpy (:class:`~qlmio_opt.predictors.tree_ensemble.TreeEnsemble`), the raw score
the baseline plus the sum of the reached leaves and the probability its logistic, exactly as
scikit-learn computes it (the tests check equality to 1e-9).
:meth:`LearnedQualityModel.predict_proba_instance` computes a window's features once per request
and distinct node model and tier
(:func:`~qlmio_opt.predictors.learned_features.window_quality_features`) and evaluates the
trees through their leaf masks
(:meth:`~qlmio_opt.predictors.tree_ensemble.TreeEnsemble.raw_predict_blocks`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from qlmio_opt.domain.catalog import Catalog, default_catalog
from qlmio_opt.domain.instance import Instance
from qlmio_opt.predictors.base import NotFittedError, ParamsMixin
from qlmio_opt.predictors.learned_features import (
    FEATURE_VERSION,
    TEXT_BUCKETS,
    FeatureSpec,
    FeatureSpecFields,
    TextBuckets,
    analytic_logit,
    quality_features,
    text_bag,
    window_quality_features,
)
from qlmio_opt.predictors.model_files import (
    ArraysFile,
    ArraySpec,
    json_safe,
    model_paths,
    read_header,
    read_npz,
    validated,
    write_model_json,
    write_npz,
)
from qlmio_opt.predictors.tree_ensemble import (
    DTYPE_KINDS,
    TREE_FIELDS,
    TreeEnsemble,
    TreeSettings,
    canonical_arrays,
    check_tree_arrays,
)

__all__ = [
    "CALIBRATIONS",
    "MODEL_FORMAT",
    "MODEL_VERSION",
    "NPZ_FIELDS",
    "LearnedQualityModel",
    "QualityFile",
    "QualitySettings",
    "SklearnQualityFile",
    "TrainingRows",
    "describe_training_data",
    "expected_calibration_error",
    "quality_metrics",
    "tier_logistic_inputs",
]

MODEL_FORMAT = "qlmio-opt/learned-quality"
MODEL_VERSION = 3

_CALIBRATION_FIELDS: Mapping[str, str] = {
    "calibration_x": "f",
    "calibration_y": "f",
    "calibration_tier": "f",
    "text_coef": "f",
}
NPZ_FIELDS: Mapping[str, str] = {**TREE_FIELDS, **_CALIBRATION_FIELDS}
"""Every field of the ``.npz`` and its kind (``f`` float, ``i`` integer, ``b`` boolean)."""

CALIBRATIONS = ("tier-logistic", "logistic", "isotonic", "none")
# per tier (edge, cloud): intercept, weight of the analytic logit, weight of the learned deviation
_TIER_IDENTITY = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0])


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width probability bins.

    ``sum_b (n_b / n) |mean(y in b) - mean(p in b)|``; a probability of exactly 1 falls in the
    last bin.
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if len(y) == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, y, bins) - np.bincount(idx, p, bins))
    return float(gap.sum() / len(y)) if count.sum() else float("nan")


def quality_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, Brier score, log loss and 10-bin ECE of probabilities ``p`` for outcomes ``y``."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    both = len(np.unique(y)) == 2
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return {
        "rows": len(y),
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "brier": float(np.mean((p - y) ** 2)),
        "log_loss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
        "ece": expected_calibration_error(y, p),
        "mean_predicted": float(p.mean()),
        "mean_observed": float(y.mean()),
    }


# --------------------------------------------------------------------------------------------
# the settings and the model file
# --------------------------------------------------------------------------------------------
class QualitySettings(TreeSettings):
    """The settings of :class:`LearnedQualityModel` (its ``__init__`` but the catalog), as
    ``fit`` checks them and the model file records them."""

    l2_regularization: float = Field(ge=0)
    calibration: Literal["tier-logistic", "logistic", "isotonic", "none"]
    text_buckets: TextBuckets
    text_penalty: float = Field(gt=0)
    text_folds: int = Field(ge=2)
    n_threads: int | None = Field(ge=1)


class QualityFile(ArraysFile):
    """The fields both quality families' files share: the features they were trained on and
    what they were trained on."""

    feature_version: int
    feature_spec: FeatureSpecFields
    feature_names: list[str]
    training_data: dict[str, Any]

    @field_validator("feature_version")
    @classmethod
    def _this_feature_version(cls, version: int) -> int:
        if version != FEATURE_VERSION:
            raise ValueError(
                f"model built with feature version {version}, this code computes version "
                f"{FEATURE_VERSION}"
            )
        return version

    @field_validator("feature_names")
    @classmethod
    def _names_of_the_spec(cls, names: list[str], info: ValidationInfo) -> list[str]:
        spec = info.data.get("feature_spec")  # absent if the spec itself was refused
        if spec is not None and names != list(spec.spec().names()):
            raise ValueError("do not match the features this code computes for the spec")
        return names


class SklearnQualityFile(QualityFile):
    """The JSON of a :class:`LearnedQualityModel` (format :data:`MODEL_FORMAT`)."""

    format: Literal["qlmio-opt/learned-quality"]
    version: Literal[3]
    sklearn_version: str
    settings: QualitySettings
    n_trees: int = Field(ge=1)


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
class LearnedQualityModel(ParamsMixin):
    """Probability that a node's model completes a request, learned from the bench table.

    scikit-learn's estimator contract (:class:`~qlmio_opt.predictors.base.ParamsMixin`).

    Parameters
    ----------
    max_iter
        Boosting iterations (trees).

    The defaults (60 trees of at most 8 leaves and depth 3, learning rate 0.1, leaves of at
    least 40 rows, L2 1.0, no early stopping) were chosen among seven small configurations by
    the log loss on the validation split of a 2,000-request seed-0 table (all within 0.003 of
    each other), preferring the smallest: a 500-request x 6-node window then predicts in a few
    milliseconds (``benchmarks/learned_quality.py``).
    learning_rate
        Shrinkage of every tree.
    max_leaf_nodes, max_depth
        Size of each tree; the depth also bounds the numpy inference's steps.
    min_samples_leaf
        Smallest leaf.
    l2_regularization
        L2 penalty on leaf values.
    calibration
        How the trees' probabilities are mapped to calibrated ones: ``"tier-logistic"``
        (default; per tier, a logistic regression on the logit of the analytic quality and the
        trees' deviation from it, see :func:`tier_logistic_inputs`, fitted on the
        ``validation`` rows and the out-of-fold predictions of the ``train`` rows),
        ``"logistic"`` (the same, one regression for both tiers), ``"isotonic"`` (one monotone
        map, fitted on the ``validation`` rows) or ``"none"``. In the 20-minute replay of
        ``benchmarks/replay_learned.py`` (loose edge capacity) the per-tier and the single map
        gave the same completion rate within noise (3.0 and 3.2 points under all-cloud).
    text_buckets
        Hash buckets of the learned text score (module docstring); ``0`` leaves it out (the
        features of feature version 1).
    text_penalty
        L2 penalty of the text coefficients, each request weighing 1 in the loss. The default
        was chosen by the validation log loss of the whole model on a 3,000-request seed-0
        table (0.3, 1, 3, 10 tried; the test split unused).
    text_folds
        Folds (grouped by request) of the out-of-fold text scores of the ``train`` rows.
    catalog
        Where models and tasks are looked up at training time; default: the shipped catalog.
    n_threads
        OpenMP threads scikit-learn may use while training (``None``: its default). One is the
        fastest for tables of this size on a small, shared machine, and the result does not
        depend on it.
    random_state
        Seed of scikit-learn's randomness (binning subsample) and of the folds; with early
        stopping off and fewer than 200,000 training rows the trees are deterministic anyway.

    Attributes
    ----------
    settings_ : QualitySettings
        The settings the model was fitted with (what :meth:`save` records).
    feature_spec_ : FeatureSpec
    feature_names_ : tuple of str
    estimator_ : HistGradientBoostingClassifier or None
        The fitted scikit-learn model (``None`` after :meth:`load`).
    forest_ : TreeEnsemble
        The trees, for numpy inference.
    calibration_x_, calibration_y_ : numpy.ndarray
        The isotonic calibration map (raw probability knots and their calibrated values).
    calibration_tier_ : numpy.ndarray
        The six tier-logistic coefficients (edge, cloud: intercept, analytic, deviation).
    text_coef_ : numpy.ndarray
        ``(text_buckets,)`` text coefficients fitted on all ``train`` rows.
    sklearn_version_ : str
    metrics_ : dict
        Validation metrics before and after calibration, and of the text score alone
        (``validation_text``: AUC of the analytic offset with and without it).
    training_data_ : dict
        What the model was trained on.
    """

    def __init__(
        self,
        max_iter: int = 60,
        learning_rate: float = 0.1,
        max_leaf_nodes: int | None = 8,
        max_depth: int | None = 3,
        min_samples_leaf: int = 40,
        l2_regularization: float = 1.0,
        calibration: str = "tier-logistic",
        text_buckets: int = TEXT_BUCKETS,
        text_penalty: float = 1.0,
        text_folds: int = 5,
        catalog: Catalog | None = None,
        n_threads: int | None = 1,
        random_state: int | None = 0,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.calibration = calibration
        self.text_buckets = text_buckets
        self.text_penalty = text_penalty
        self.text_folds = text_folds
        self.catalog = catalog
        self.n_threads = n_threads
        self.random_state = random_state

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, table: Any, y: Any = None) -> LearnedQualityModel:
        """Fit the trees on the ``train`` rows and the calibration on the ``validation`` rows
        (and, for the logistic ones, the out-of-fold predictions of the ``train`` rows).

        Parameters
        ----------
        table
            A bench table (``pandas.DataFrame``) with the columns of
            :data:`~qlmio_opt.predictors.learned_features.PAIR_COLUMNS`, ``split`` and
            ``completed``.
        y
            Ignored (the target is the table's ``completed``).

        Returns
        -------
        LearnedQualityModel
            ``self``.

        Raises
        ------
        ValueError
            If a setting is invalid (``setting: problem``), a column is missing, a split is
            empty or the outcome has a single class.
        """
        settings = validated(QualitySettings, self._settings_params())
        catalog = self.catalog or default_catalog()
        spec = FeatureSpec.from_catalog(catalog, settings.text_buckets)
        rows = TrainingRows.of(table, settings.calibration)
        X, text_coef, text_metrics = self._features(table, catalog, spec, rows)
        estimator = _fitted_estimator(settings, X[rows.train], rows.target[rows.train])
        forest = TreeEnsemble.from_estimator(estimator)
        raw_val = forest.predict_proba(X[rows.val])
        if rows.val.any():
            ref = estimator.predict_proba(X[rows.val])[:, 1]
            if not np.allclose(raw_val, ref, rtol=0, atol=1e-9):
                raise RuntimeError("numpy tree inference disagrees with scikit-learn")
        arrays = {
            **forest.arrays,
            **self._fit_calibration(settings, table, X, spec, rows, raw_val),
            "text_coef": text_coef,
        }
        self._set_fitted(settings, spec, _checked_arrays(arrays, "fit", spec))
        self.estimator_ = estimator
        import sklearn

        self.sklearn_version_ = sklearn.__version__
        self.metrics_ = self._validation_metrics(X, rows, raw_val) | text_metrics
        self.training_data_ = describe_training_data(
            table, rows.train, rows.val, X[rows.train], rows.target[rows.train]
        )
        return self

    def _settings_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.get_params(deep=False).items() if k != "catalog"}

    def _features(
        self, table: Any, catalog: Catalog, spec: FeatureSpec, rows: TrainingRows
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The training features (train rows with out-of-fold text scores), the text
        coefficients fitted on all train rows, and the text score's validation metrics."""
        if not spec.text_buckets:
            return quality_features(table, catalog, spec), np.zeros(0), {}
        # the analytic quality does not depend on the text: compute it without a score
        base = quality_features(table, catalog, spec, text_score=np.zeros(len(rows.target)))
        offset = analytic_logit(base[:, spec.names().index("analytic_quality")])
        coef, score = self._fit_text(table, spec, rows.train, offset, rows.target)
        X = quality_features(table, catalog, spec, text_score=score)
        return X, coef, _text_metrics(rows, offset, score)

    def _fit_text(
        self,
        table: Any,
        spec: FeatureSpec,
        train: np.ndarray,
        offset: np.ndarray,
        target: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Text coefficients on all train rows, and every row's text score (train: out of fold).

        Folds group the train rows by ``request`` (by prompt if the table has no request
        column), assigned by a permutation seeded with ``random_state`` (0 if ``None``).
        """
        bag = text_bag(np.asarray(table["prompt"], dtype=object), spec.text_buckets)
        groups = _request_groups(table)
        weight = 1.0 / groups.rows[groups.index]  # every request weighs 1 in the loss
        y = target.astype(float)

        def fit(rows: np.ndarray) -> np.ndarray:
            return _fit_offset_logistic(
                bag[rows], offset[rows], y[rows], weight[rows], self.text_penalty
            )

        coef = fit(train)
        score = np.asarray(bag @ coef, dtype=float)
        seed = 0 if self.random_state is None else self.random_state
        fold, n_folds = groups.folds(train, self.text_folds, seed)
        for k in range(n_folds):
            held = fold == k
            rest = train & ~held
            score[held] = bag[held] @ fit(rest) if rest.any() else 0.0
        return coef, score

    def _fit_calibration(
        self,
        settings: QualitySettings,
        table: Any,
        X: np.ndarray,
        spec: FeatureSpec,
        rows: TrainingRows,
        raw_val: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """The calibration arrays (identity maps for the kinds not chosen)."""
        out = _identity()
        if settings.calibration == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(raw_val, rows.target[rows.val])
            out["calibration_x"] = np.asarray(iso.X_thresholds_, dtype=float)
            out["calibration_y"] = np.asarray(iso.y_thresholds_, dtype=float)
        elif settings.calibration in ("tier-logistic", "logistic"):
            # out-of-fold tree probabilities of the train rows join the validation rows: the
            # calibration's intercepts then rest on every request, not on the validation few
            raw_rows = np.where(rows.train, _out_of_fold(settings, table, X, rows), 0.0)
            raw_rows[rows.val] = raw_val
            both = rows.train | rows.val
            out["calibration_tier"] = _fit_tier_logistic(
                raw_rows[both],
                X[both],
                spec,
                rows.target[both],
                per_tier=settings.calibration == "tier-logistic",
            )
        return out

    def _set_fitted(
        self, settings: QualitySettings, spec: FeatureSpec, arrays: Mapping[str, np.ndarray]
    ) -> None:
        """The learned attributes shared by :meth:`fit` and :meth:`load`."""
        self.settings_ = settings
        self.feature_spec_ = spec
        self.feature_names_ = spec.names()
        self.forest_ = TreeEnsemble({k: arrays[k] for k in TREE_FIELDS}, len(spec.names()))
        self.calibration_x_ = arrays["calibration_x"]
        self.calibration_y_ = arrays["calibration_y"]
        self.calibration_tier_ = arrays["calibration_tier"]
        self.text_coef_ = arrays["text_coef"]

    def _validation_metrics(
        self, X: np.ndarray, rows: TrainingRows, raw_val: np.ndarray
    ) -> dict[str, Any]:
        if not rows.val.any():
            return {}
        y_val = rows.target[rows.val]
        return {
            "validation_uncalibrated": quality_metrics(y_val, raw_val),
            "validation_calibrated_in_sample": quality_metrics(
                y_val, self._calibrate(raw_val, X[rows.val])
            ),
        }

    # -- prediction --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "forest_"):
            raise NotFittedError("this LearnedQualityModel is not fitted; call fit or load first")

    def _calibrate(self, p: np.ndarray, X: np.ndarray) -> np.ndarray:
        p = np.clip(np.interp(p, self.calibration_x_, self.calibration_y_), 0.0, 1.0)
        if np.array_equal(self.calibration_tier_, _TIER_IDENTITY):
            return p
        analytic, deviation, cloud = tier_logistic_inputs(p, X, self.feature_spec_)
        c = self.calibration_tier_.reshape(2, 3)[cloud.astype(np.int64)]
        z = c[:, 0] + c[:, 1] * analytic + c[:, 2] * deviation
        return 1.0 / (1.0 + np.exp(-z))

    def predict_proba_features(self, X: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Completion probability of feature rows ``X`` (numpy inference)."""
        self._check_fitted()
        raw = self.forest_.predict_proba(X)
        return self._calibrate(raw, X) if calibrated else raw

    def features_table(self, table: Any, catalog: Catalog | None = None) -> np.ndarray:
        """The feature matrix of a bench table's rows."""
        self._check_fitted()
        return quality_features(
            table, catalog or self.catalog or default_catalog(), self.feature_spec_, self.text_coef_
        )

    def predict_proba_table(
        self, table: Any, calibrated: bool = True, catalog: Catalog | None = None
    ) -> np.ndarray:
        """Completion probability of every row of a bench table, shape ``(n_rows,)``."""
        return self.predict_proba_features(self.features_table(table, catalog), calibrated)

    def predict_proba_instance(
        self, instance: Instance, calibrated: bool = True, catalog: Catalog | None = None
    ) -> np.ndarray:
        """``(R, N)`` completion probability of every request on every node of ``instance``.

        The features come from
        :func:`~qlmio_opt.predictors.learned_features.window_quality_features` (one row per
        request and distinct node model and tier), the trees run on the window's blocks.
        """
        self._check_fitted()
        shape = (len(instance.requests), len(instance.nodes))
        if shape[0] == 0:
            return np.zeros(shape)
        catalog = catalog or instance.resolved_catalog
        X, node_key = window_quality_features(
            instance, self.feature_spec_, catalog, self.text_coef_
        )
        raw = self.forest_.raw_predict_blocks(X, len(X) // shape[0])
        p = 1.0 / (1.0 + np.exp(-raw))
        if calibrated:
            p = self._calibrate(p, X)
        return np.ascontiguousarray(p.reshape(-1, shape[0])[node_key].T)

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
        arrays = {
            **self.forest_.arrays,
            "calibration_x": self.calibration_x_,
            "calibration_y": self.calibration_y_,
            "calibration_tier": self.calibration_tier_,
            "text_coef": self.text_coef_,
        }
        write_npz(npz_path, {k: arrays[k] for k in NPZ_FIELDS})
        meta = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "package_version": __version__,
            "sklearn_version": self.sklearn_version_,
            "settings": self._in_init_order(self.settings_.model_dump()),
            "feature_version": FEATURE_VERSION,
            "feature_spec": self.feature_spec_.to_dict(),
            "feature_names": list(self.feature_names_),
            "n_trees": self.forest_.n_trees,
            "metrics": json_safe(self.metrics_),
            "training_data": json_safe(self.training_data_),
        }
        write_model_json(json_path, npz_path, meta, SklearnQualityFile)
        return json_path, npz_path

    @classmethod
    def load(cls, path: str | Path, catalog: Catalog | None = None) -> LearnedQualityModel:
        """Read a model written by :meth:`save` (JSON and ``.npz`` of plain arrays, no pickle).

        Raises
        ------
        ValueError
            Naming the file and the field, if anything is missing, malformed or inconsistent.
        FileNotFoundError
            If a file is missing.
        """
        json_path, _ = model_paths(path)
        header = read_header(json_path, SklearnQualityFile)
        spec = header.feature_spec.spec()
        npz_path = json_path.parent / header.npz_file
        arrays = read_npz(json_path, npz_path, header.npz_sha256, _array_specs(header, spec))
        model = cls(**header.settings.model_dump(), catalog=catalog)
        model._set_fitted(header.settings, spec, _checked_arrays(arrays, str(npz_path), spec))
        model.estimator_ = None
        model.sklearn_version_ = header.sklearn_version
        model.metrics_ = header.metrics
        model.training_data_ = header.training_data
        return model


# --------------------------------------------------------------------------------------------
# training steps
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingRows:
    """The rows of a bench table that train and that validate, and the observed outcome."""

    train: np.ndarray
    val: np.ndarray
    target: np.ndarray

    @classmethod
    def of(cls, table: Any, calibration: str) -> TrainingRows:
        """The rows of ``table``'s ``split`` and its ``completed`` outcome.

        Raises
        ------
        ValueError
            On a missing column, no train rows, no validation rows where the calibration
            needs them, or train rows of a single outcome class.
        """
        for col in ("split", "completed"):
            if col not in table:
                raise ValueError(f"the table lacks the column {col}")
        split = np.asarray(table["split"], dtype=object)
        train, val = split == "train", split == "validation"
        if not train.any():
            raise ValueError("the table has no train rows")
        if calibration != "none" and not val.any():
            raise ValueError(f"{calibration} calibration needs validation rows")
        target = np.asarray(table["completed"], dtype=np.int64)
        if len(np.unique(target[train])) != 2:
            raise ValueError("the train rows hold a single outcome class")
        return cls(train, val, target)


@dataclass(frozen=True)
class _RequestGroups:
    """Every row's request (``index`` into the distinct requests) and each request's rows."""

    index: np.ndarray
    rows: np.ndarray

    def folds(self, train: np.ndarray, n_folds: int, seed: int) -> tuple[np.ndarray, int]:
        """Every train row's fold (``-1`` off the train rows): the train requests in a seeded
        permutation, dealt round-robin; and the number of folds that hold rows."""
        train_groups = np.unique(self.index[train])
        rng = np.random.default_rng(seed)
        fold_of = np.full(len(self.rows), -1)
        fold_of[rng.permutation(train_groups)] = np.arange(len(train_groups)) % n_folds
        return np.where(train, fold_of[self.index], -1), min(n_folds, len(train_groups))


def _request_groups(table: Any) -> _RequestGroups:
    """The rows' requests (their prompts if the table has no ``request`` column)."""
    key = "request" if "request" in table else "prompt"
    groups = np.asarray(table[key], dtype=object).astype(str)
    _, index, rows = np.unique(groups, return_inverse=True, return_counts=True)
    return _RequestGroups(index, rows)


def _estimator(settings: QualitySettings) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        **settings.estimator_params(), l2_regularization=settings.l2_regularization
    )


def _fitted_estimator(settings: QualitySettings, X: np.ndarray, y: np.ndarray) -> Any:
    """The classifier fitted on ``X``, ``y`` with at most ``n_threads`` OpenMP threads."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=settings.n_threads):
        return _estimator(settings).fit(X, y)


def _out_of_fold(
    settings: QualitySettings, table: Any, X: np.ndarray, rows: TrainingRows
) -> np.ndarray:
    """Tree probabilities of every ``train`` row from trees fitted without its request
    (``text_folds`` folds grouped by request, seeded by ``random_state`` + 1)."""
    seed = 1 + (0 if settings.random_state is None else settings.random_state)
    fold, n_folds = _request_groups(table).folds(rows.train, settings.text_folds, seed)
    out = np.zeros(len(rows.target))
    for k in range(n_folds):
        held, rest = fold == k, rows.train & (fold != k)
        if len(np.unique(rows.target[rest])) != 2:
            continue
        trees = TreeEnsemble.from_estimator(_fitted_estimator(settings, X[rest], rows.target[rest]))
        out[held] = trees.predict_proba(X[held])
    return out


def _text_metrics(rows: TrainingRows, offset: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    """AUC of the analytic offset with and without the text score on the validation rows."""
    y_val = rows.target[rows.val]
    if len(np.unique(y_val)) != 2:
        return {}
    from sklearn.metrics import roc_auc_score

    return {
        "validation_text": {
            "auc_analytic": float(roc_auc_score(y_val, offset[rows.val])),
            "auc_analytic_plus_text": float(
                roc_auc_score(y_val, offset[rows.val] + score[rows.val])
            ),
        }
    }


# --------------------------------------------------------------------------------------------
# the arrays
# --------------------------------------------------------------------------------------------
def _identity() -> dict[str, np.ndarray]:
    return {
        "calibration_x": np.array([0.0, 1.0]),
        "calibration_y": np.array([0.0, 1.0]),
        "calibration_tier": _TIER_IDENTITY.copy(),
    }


def _array_specs(header: SklearnQualityFile, spec: FeatureSpec) -> dict[str, ArraySpec]:
    """What every ``.npz`` field may hold, from the JSON alone (before the archive is read)."""
    return {
        **header.settings.array_specs(header.n_trees),
        "calibration_x": ArraySpec(DTYPE_KINDS["f"], (None,)),  # isotonic knots: data-sized
        "calibration_y": ArraySpec(DTYPE_KINDS["f"], (None,)),
        "calibration_tier": ArraySpec(DTYPE_KINDS["f"], (None,), len(_TIER_IDENTITY)),
        "text_coef": ArraySpec(DTYPE_KINDS["f"], (None,), spec.text_buckets),
    }


def _checked_arrays(
    arrays: Mapping[str, np.ndarray], source: str, spec: FeatureSpec
) -> dict[str, np.ndarray]:
    """Every field of :data:`NPZ_FIELDS` checked (the trees by
    :func:`~qlmio_opt.predictors.tree_ensemble.check_tree_arrays`), canonical and read-only.

    Raises
    ------
    ValueError
        ``SOURCE: field 'x': problem``.
    """

    def fail(field: str, problem: str) -> ValueError:
        return ValueError(f"{source}: field '{field}': {problem}")

    out = check_tree_arrays(arrays, source, len(spec.names()))
    out |= canonical_arrays(arrays, _CALIBRATION_FIELDS, source)
    cx, cy = out["calibration_x"], out["calibration_y"]
    if len(cx) < 1 or len(cx) != len(cy):
        raise fail("calibration_y", f"has {len(cy)} entries, calibration_x {len(cx)}")
    if not np.isfinite(cx).all() or (np.diff(cx) < 0).any():
        raise fail("calibration_x", "must be finite and non-decreasing")
    if (cy < 0).any() or (cy > 1).any() or (np.diff(cy) < 0).any():
        raise fail("calibration_y", "must be non-decreasing probabilities")
    tier = out["calibration_tier"]
    if tier.shape != (6,) or not np.isfinite(tier).all():
        raise fail("calibration_tier", "must be six finite numbers (edge and cloud: b0, b1, b2)")
    coef = out["text_coef"]
    if coef.shape != (spec.text_buckets,):
        raise fail("text_coef", f"has {len(coef)} entries, expected {spec.text_buckets} (buckets)")
    if not np.isfinite(coef).all():
        raise fail("text_coef", "contains infinite values")
    return out


# --------------------------------------------------------------------------------------------
# the calibrations and the text model
# --------------------------------------------------------------------------------------------
def tier_logistic_inputs(
    p: np.ndarray, X: np.ndarray, spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inputs of the tier-logistic calibration for probabilities ``p`` of feature rows ``X``.

    Returns the logit of the analytic quality (the catalog prior of the pair's model and task),
    the deviation of ``logit(p)`` from it (what the trees learned about this request on this
    node) and whether the node is in the cloud tier. The calibration fits, per tier,
    ``sigmoid(b0 + b1 * analytic + b2 * deviation)``: a ``b2`` below one shrinks the learned
    deviations, which are noisier than the prior, towards it. An optimiser picks the pairs
    whose quality is predicted highest for their cost, so unshrunk deviations would be
    overestimated on exactly the pairs it picks (the optimiser's curse).
    """
    names = spec.names()
    analytic = analytic_logit(X[:, names.index("analytic_quality")])
    q = np.clip(np.asarray(p, dtype=float), 1e-4, 1.0 - 1e-4)
    deviation = np.log(q / (1.0 - q)) - analytic
    cloud = X[:, names.index("tier_cloud")] > 0.5
    return analytic, deviation, cloud


def _fit_tier_logistic(
    p: np.ndarray, X: np.ndarray, spec: FeatureSpec, y: np.ndarray, per_tier: bool = True
) -> np.ndarray:
    """Coefficients of the logistic calibration, per tier or (``per_tier=False``) one set for
    both tiers, stored twice (identity for a tier whose rows hold one outcome class)."""
    from sklearn.linear_model import LogisticRegression

    analytic, deviation, cloud = tier_logistic_inputs(p, X, spec)
    coef = _TIER_IDENTITY.copy()
    if not per_tier:
        if len(np.unique(y)) == 2:
            fit = LogisticRegression(C=1e6, max_iter=1000).fit(
                np.column_stack([analytic, deviation]), y
            )
            coef[:] = 2 * [fit.intercept_[0], *fit.coef_[0]]
        return coef
    for tier, rows in enumerate((~cloud, cloud)):
        if len(np.unique(y[rows])) != 2:
            continue
        inputs = np.column_stack([analytic[rows], deviation[rows]])
        fit = LogisticRegression(C=1e6, max_iter=1000).fit(inputs, y[rows])
        coef[3 * tier : 3 * tier + 3] = [fit.intercept_[0], *fit.coef_[0]]
    if not np.isfinite(coef).all():
        raise RuntimeError("the tier-logistic calibration did not converge to finite values")
    return coef


def _fit_offset_logistic(
    bag: Any, offset: np.ndarray, y: np.ndarray, weight: np.ndarray, penalty: float
) -> np.ndarray:
    """Coefficients ``w`` of ``P(y) = sigmoid(offset + b + bag @ w)`` (L2 ``penalty`` on ``w``).

    Minimises ``sum_i weight_i * logloss_i + penalty / 2 * |w|^2`` with L-BFGS (deterministic);
    the intercept ``b`` is free and dropped from the result.
    """
    from scipy.optimize import minimize

    bag_t = bag.T.tocsr()

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        w = params[1:]
        z = offset + params[0] + bag @ w
        p = 1.0 / (1.0 + np.exp(-z))
        value = float(weight @ (np.logaddexp(0.0, z) - y * z)) + 0.5 * penalty * float(w @ w)
        r = weight * (p - y)
        return value, np.concatenate([[r.sum()], bag_t @ r + penalty * w])

    start = np.zeros(bag.shape[1] + 1)
    result = minimize(
        loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 2000, "gtol": 1e-7}
    )
    coef = np.asarray(result.x[1:], dtype=np.float64)
    if not np.isfinite(coef).all():
        raise RuntimeError("the text model did not converge to finite coefficients")
    return coef


def describe_training_data(
    table: Any, train: np.ndarray, val: np.ndarray, X: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
    """What a quality model was trained on (its file's ``training_data``): the rows and
    requests of each split, the models and tasks, the completion rate, the SHA-256 of the
    training features and the request-id prefixes (``mb<seed>``) that tell held-out rows."""
    requests = np.asarray(table["request"], dtype=object) if "request" in table else None
    models = np.asarray(table["model"], dtype=object)
    tasks = np.asarray(table["task"], dtype=object)
    out: dict[str, Any] = {
        "source": "qlmio_opt.simulator.dataset bench table (synthetic world truth)",
        "target": "completed (drawn outcome; true_completion_prob never used)",
        "train_rows": int(train.sum()),
        "validation_rows": int(val.sum()),
        "models": sorted(set(models[train])),
        "tasks": {str(t): int((tasks[train] == t).sum()) for t in sorted(set(tasks[train]))},
        "completion_rate": float(y.mean()),
        "features_sha256": hashlib.sha256(np.ascontiguousarray(X).tobytes()).hexdigest(),
    }
    if requests is not None:
        out["train_requests"] = len(set(requests[train]))
        out["validation_requests"] = len(set(requests[val]))
        out["request_id_prefixes"] = sorted({str(r).split("-", 1)[0] for r in requests[train]})
    return out
