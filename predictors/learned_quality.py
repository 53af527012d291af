"""The learned quality model (issue MGQP): gradient-boosted trees, calibrated, saved as numbers.

Training (:meth:`LearnedQualityModel.fit`) takes a benchmark table
(:func:`qlmio_opt.simulator.dataset.bench_data`), computes the features of
:mod:`qlmio_opt.predictors.learned_features` (one function for training and prediction), fits a
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

- ``<name>.json``: format and version, the package and scikit-learn versions that trained it,
  the settings, the feature specification and names, validation metrics, a description of the
  training data, and the SHA-256 of the ``.npz``;
- ``<name>.npz``: every tree's node arrays (``value``, ``feature_idx``, ``num_threshold``,
  ``missing_go_to_left``, ``left``, ``right``, ``is_leaf``; trees stacked, ``tree_offsets``
  marks where each starts), the ``baseline`` raw prediction, the calibration arrays
  ``calibration_x`` / ``calibration_y`` (isotonic) and ``calibration_tier`` (six
  coefficients) and the text coefficients ``text_coef`` (one float per
  hash bucket; empty without a text feature).

:meth:`~LearnedQualityModel.load` reads them through the shared safe readers of
:mod:`qlmio_opt.predictors.model_files` (a size-bounded JSON; the ``.npz``'s hash checked
before the archive is opened and every member's declared size bounded by what the JSON says
before anything is inflated; ``numpy.load(allow_pickle=False)`` only), checks every field
(dtype, shape, finiteness, feature indices, child indices pointing forward inside their own
tree, the text coefficients' length and finiteness) and refuses anything else with a
``ValueError`` naming the file and the field. Prediction never needs scikit-learn:
:class:`TreeEnsemble` runs the trees in numpy (:mod:`qlmio_opt.predictors.tree_ensemble`),
vectorised over samples *and* trees: a ``(rows, n_trees)`` matrix of node indices steps down one
level per iteration, block of rows by block of rows in reused buffers, or, for a window's
features (:meth:`TreeEnsemble.raw_predict_blocks`), per-feature tables of leaf masks that are
looked up once per request for the per-request columns; the raw score is the baseline plus the
sum of the reached leaf values, the probability its logistic, exactly as scikit-learn computes
it (the tests check equality to 1e-9). :meth:`LearnedQualityModel.predict_proba_instance`
computes a window's features once per request and distinct node model and tier
(:func:`~qlmio_opt.predictors.learned_features.window_quality_features`); ``reference=True``
keeps the straightforward path (every pair a row, the trees walked one step at a time on all
rows at once), which gives the same numbers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qlmio_opt.domain.catalog import Catalog, default_catalog
from qlmio_opt.domain.instance import Instance
from qlmio_opt.predictors.learned_features import (
    FEATURE_VERSION,
    TEXT_BUCKETS,
    FeatureSpec,
    analytic_logit,
    instance_features,
    quality_features,
    text_bag,
    window_quality_features,
)
from qlmio_opt.predictors.model_files import (
    ArraySpec,
    read_model_json,
    read_npz,
    write_model_json,
)
from qlmio_opt.predictors.model_files import json_safe as _json_safe
from qlmio_opt.predictors.model_files import model_paths as _paths
from qlmio_opt.predictors.tree_ensemble import (
    compile_leaf_masks,
    compile_trees,
    reference_raw_sum,
)

__all__ = [
    "MODEL_FORMAT",
    "MODEL_VERSION",
    "NPZ_FIELDS",
    "LearnedQualityModel",
    "TreeEnsemble",
    "expected_calibration_error",
    "max_tree_nodes",
    "quality_metrics",
    "tree_array_specs",
]

MODEL_FORMAT = "qlmio-opt/learned-quality"
MODEL_VERSION = 3

# field -> dtype kind ("f" float, "i" integer, "b" boolean)
NPZ_FIELDS: Mapping[str, str] = {
    "value": "f",
    "feature_idx": "i",
    "num_threshold": "f",
    "missing_go_to_left": "b",
    "left": "i",
    "right": "i",
    "is_leaf": "b",
    "tree_offsets": "i",
    "baseline": "f",
    "calibration_x": "f",
    "calibration_y": "f",
    "calibration_tier": "f",
    "text_coef": "f",
}
CALIBRATIONS = ("tier-logistic", "logistic", "isotonic", "none")
# per tier (edge, cloud): intercept, weight of the analytic logit, weight of the learned deviation
_TIER_IDENTITY = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
_NODE_FIELDS = ("value", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right")
# dtype kinds each field kind of NPZ_FIELDS accepts on load (before the cast of _check_arrays)
_DTYPE_KINDS = {"f": "fiu", "i": "iu", "b": "biu"}
_JSON_KEYS = (
    "format",
    "version",
    "package_version",
    "sklearn_version",
    "settings",
    "feature_version",
    "feature_spec",
    "feature_names",
    "n_trees",
    "metrics",
    "training_data",
    "npz_file",
    "npz_sha256",
)


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
# numpy tree inference
# --------------------------------------------------------------------------------------------
class _Refused(ValueError):
    """A field of a model file failed its check."""


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """Stacked binary trees with numpy inference (see the module docstring).

    Attributes
    ----------
    arrays
        The checked ``.npz`` fields (:data:`NPZ_FIELDS`).
    n_features
        Columns the trees read.
    """

    arrays: Mapping[str, np.ndarray]
    n_features: int

    def __post_init__(self) -> None:
        compiled = compile_trees(self.arrays)
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_masks", compile_leaf_masks(self.arrays))
        object.__setattr__(self, "depth", compiled.depth)

    @property
    def n_trees(self) -> int:
        return self._compiled.n_trees

    @property
    def baseline(self) -> float:
        return float(self.arrays["baseline"][0])

    @classmethod
    def from_estimator(cls, estimator: Any) -> TreeEnsemble:
        """Stack the trees of a fitted binary ``HistGradientBoostingClassifier``.

        Raises
        ------
        ValueError
            If the model is not binary or has categorical splits.
        """
        predictors = estimator._predictors
        if any(len(it) != 1 for it in predictors):
            raise ValueError("only binary classifiers (one tree per iteration) are supported")
        nodes = [it[0].nodes for it in predictors]
        if any(nd["is_categorical"].any() for nd in nodes):
            raise ValueError("categorical splits are not supported by the numpy inference")
        baseline = np.asarray(estimator._baseline_prediction, dtype=float).ravel()
        if baseline.shape != (1,):
            raise ValueError(f"unexpected baseline shape {baseline.shape}")
        sizes = [len(nd) for nd in nodes]
        cat = np.concatenate(nodes) if nodes else np.zeros(0, dtype=object)
        arrays = {
            "value": cat["value"].astype(np.float64),
            "feature_idx": cat["feature_idx"].astype(np.int64),
            "num_threshold": cat["num_threshold"].astype(np.float64),
            "missing_go_to_left": cat["missing_go_to_left"].astype(bool),
            "left": cat["left"].astype(np.int64),
            "right": cat["right"].astype(np.int64),
            "is_leaf": cat["is_leaf"].astype(bool),
            "tree_offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            "baseline": baseline,
        }
        n_features = int(estimator.n_features_in_)
        return cls(_check_arrays({**arrays, **_identity()}, "estimator", n_features), n_features)

    def raw_predict(self, X: np.ndarray, reference: bool = False) -> np.ndarray:
        """Raw scores (log-odds) of the rows of ``X``: baseline + sum of the trees' leaves.

        ``reference=True`` runs the straightforward walk
        (:func:`~qlmio_opt.predictors.tree_ensemble.reference_raw_sum`) instead of the blocked
        one; the numbers are the same.
        """
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n, {self.n_features}); got {X.shape}")
        if reference:
            return self.baseline + reference_raw_sum(self._compiled, X)
        return self.baseline + self._compiled.raw_sum(X)

    def raw_predict_blocks(self, X: np.ndarray, n_blocks: int) -> np.ndarray:
        """:meth:`raw_predict` of rows made of ``n_blocks`` equal blocks (a window's features,
        key-major), with the same numbers.

        ``X`` is float64 with *at least* ``n_features`` columns (the trees read the first
        ``n_features``: no copy of a wider matrix). Per-request and per-block columns are
        looked up once per request or block
        (:meth:`~qlmio_opt.predictors.tree_ensemble.LeafMasks.raw_sum_blocks`); the blocked
        walk runs where that does not apply (a NaN, trees of more than 16 leaves).
        """
        if X.ndim != 2 or X.shape[1] < self.n_features or X.dtype != np.float64:
            raise ValueError(f"X must be float64 of shape (n, >= {self.n_features}); got {X.shape}")
        X = np.ascontiguousarray(X)
        masks = self._masks
        with np.errstate(invalid="ignore", over="ignore"):
            has_nan = bool(np.isnan(np.add.reduce(X, axis=None)))  # or both infinities
        if masks is None or has_nan:
            return self.baseline + self._compiled.raw_sum(X)
        return self.baseline + masks.raw_sum_blocks(X, n_blocks)

    def predict_proba(self, X: np.ndarray, reference: bool = False) -> np.ndarray:
        """Probability of the positive class (the logistic of :meth:`raw_predict`)."""
        raw = self.raw_predict(X, reference=reference)
        return 1.0 / (1.0 + np.exp(-raw))


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
class LearnedQualityModel:
    """Probability that a node's model completes a request, learned from the bench table.

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
        Seed of scikit-learn's randomness (binning subsample); with early stopping off and
        fewer than 200,000 training rows the fit is deterministic anyway.

    Attributes
    ----------
    feature_spec_ : FeatureSpec
    feature_names_ : tuple of str
    estimator_ : HistGradientBoostingClassifier or None
        The fitted scikit-learn model (``None`` after :meth:`load`).
    forest_ : TreeEnsemble
        The trees, for numpy inference.
    calibration_x_, calibration_y_ : numpy.ndarray
        The isotonic calibration map (raw probability knots and their calibrated values).
    text_coef_ : numpy.ndarray
        ``(text_buckets,)`` text coefficients fitted on all ``train`` rows.
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
        max_leaf_nodes: int = 8,
        max_depth: int = 3,
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

    # -- settings ----------------------------------------------------------------------------
    _SETTINGS = (
        "max_iter",
        "learning_rate",
        "max_leaf_nodes",
        "max_depth",
        "min_samples_leaf",
        "l2_regularization",
        "calibration",
        "text_buckets",
        "text_penalty",
        "text_folds",
        "n_threads",
        "random_state",
    )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The settings (scikit-learn convention)."""
        return {**{k: getattr(self, k) for k in self._SETTINGS}, "catalog": self.catalog}

    def _estimator(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            early_stopping=False,
            random_state=self.random_state,
        )

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, table: Any, y: Any = None) -> LearnedQualityModel:
        """Fit the trees on the ``train`` rows and the calibration on the ``validation`` rows.

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
            If a column is missing, a split is empty, the outcome has a single class or a
            setting is invalid.
        """
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}; got {self.calibration!r}")
        for col in ("split", "completed"):
            if col not in table:
                raise ValueError(f"the table lacks the column {col}")
        import sklearn

        if not (isinstance(self.text_folds, int) and self.text_folds >= 2):
            raise ValueError(f"text_folds must be an integer >= 2; got {self.text_folds!r}")
        if not (self.text_penalty > 0 and math.isfinite(self.text_penalty)):
            raise ValueError(f"text_penalty must be positive; got {self.text_penalty!r}")
        catalog = self.catalog or default_catalog()
        spec = FeatureSpec.from_catalog(catalog, self.text_buckets)
        split = np.asarray(table["split"], dtype=object)
        train, val = split == "train", split == "validation"
        if not train.any():
            raise ValueError("the table has no train rows")
        if self.calibration != "none" and not val.any():
            raise ValueError(f"{self.calibration} calibration needs validation rows")
        target = np.asarray(table["completed"], dtype=np.int64)
        if len(np.unique(target[train])) != 2:
            raise ValueError("the train rows hold a single outcome class")
        text_metrics: dict[str, Any] = {}
        if spec.text_buckets:
            # the analytic quality does not depend on the text: compute it without a score
            base = quality_features(table, catalog, spec, text_score=np.zeros(len(target)))
            offset = analytic_logit(base[:, spec.names().index("analytic_quality")])
            coef, score = self._fit_text(table, spec, train, offset, target)
            X = quality_features(table, catalog, spec, text_score=score)
            if val.any() and len(np.unique(target[val])) == 2:
                from sklearn.metrics import roc_auc_score

                text_metrics = {
                    "validation_text": {
                        "auc_analytic": float(roc_auc_score(target[val], offset[val])),
                        "auc_analytic_plus_text": float(
                            roc_auc_score(target[val], offset[val] + score[val])
                        ),
                    }
                }
        else:
            coef = np.zeros(0)
            X = quality_features(table, catalog, spec)

        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.n_threads):
            estimator = self._estimator().fit(X[train], target[train])
        forest = TreeEnsemble.from_estimator(estimator)
        raw_val = forest.predict_proba(X[val]) if val.any() else np.zeros(0)
        if val.any():
            ref = estimator.predict_proba(X[val])[:, 1]
            if not np.allclose(raw_val, ref, rtol=0, atol=1e-9):
                raise RuntimeError("numpy tree inference disagrees with scikit-learn")
        if self.calibration == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(raw_val, target[val])
            cal_x = np.asarray(iso.X_thresholds_, dtype=float)
            cal_y = np.asarray(iso.y_thresholds_, dtype=float)
        else:
            cal_x, cal_y = _identity()["calibration_x"], _identity()["calibration_y"]
        cal_tier = _TIER_IDENTITY.copy()
        if self.calibration in ("tier-logistic", "logistic"):
            # out-of-fold tree probabilities of the train rows join the validation rows: the
            # calibration's intercepts then rest on every request, not on the validation few
            raw_oof = self._out_of_fold(table, X, target, train)
            rows = train | val
            raw_rows = np.where(train, raw_oof, 0.0)
            raw_rows[val] = raw_val
            cal_tier = _fit_tier_logistic(
                raw_rows[rows], X[rows], spec, target[rows], self.calibration == "tier-logistic"
            )

        arrays = dict(
            forest.arrays,
            calibration_x=cal_x,
            calibration_y=cal_y,
            calibration_tier=cal_tier,
            text_coef=coef,
        )
        arrays = _check_arrays(arrays, "fit", X.shape[1], spec.text_buckets)
        self.feature_spec_ = spec
        self.feature_names_ = spec.names()
        self.estimator_ = estimator
        self.forest_ = TreeEnsemble(arrays, X.shape[1])
        self.calibration_x_ = arrays["calibration_x"]
        self.calibration_y_ = arrays["calibration_y"]
        self.calibration_tier_ = arrays["calibration_tier"]
        self.text_coef_ = arrays["text_coef"]
        self.sklearn_version_ = sklearn.__version__
        self.metrics_ = {}
        if val.any():
            self.metrics_ = {
                "validation_uncalibrated": quality_metrics(target[val], raw_val),
                "validation_calibrated_in_sample": quality_metrics(
                    target[val], self._calibrate(raw_val, X[val])
                ),
                **text_metrics,
            }
        self.training_data_ = _describe(table, train, val, X[train], target[train])
        return self

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
        key = "request" if "request" in table else "prompt"
        groups = np.asarray(table[key], dtype=object).astype(str)
        _, group, rows_per_group = np.unique(groups, return_inverse=True, return_counts=True)
        weight = 1.0 / rows_per_group[group]  # every request weighs 1 in the loss
        y = target.astype(float)

        def fit(rows: np.ndarray) -> np.ndarray:
            return _fit_offset_logistic(
                bag[rows], offset[rows], y[rows], weight[rows], self.text_penalty
            )

        coef = fit(train)
        score = np.asarray(bag @ coef, dtype=float)
        train_groups = np.unique(group[train])
        rng = np.random.default_rng(0 if self.random_state is None else self.random_state)
        fold_of = np.full(len(rows_per_group), -1)
        fold_of[rng.permutation(train_groups)] = np.arange(len(train_groups)) % self.text_folds
        fold = np.where(train, fold_of[group], -1)
        for k in range(min(self.text_folds, len(train_groups))):
            held = fold == k
            rest = train & ~held
            score[held] = bag[held] @ fit(rest) if rest.any() else 0.0
        return coef, score

    def _out_of_fold(
        self, table: Any, X: np.ndarray, target: np.ndarray, train: np.ndarray
    ) -> np.ndarray:
        """Tree probabilities of every ``train`` row from trees fitted without its request
        (``text_folds`` folds grouped by request, seeded by ``random_state`` + 1)."""
        from threadpoolctl import threadpool_limits

        key = "request" if "request" in table else "prompt"
        groups = np.asarray(table[key], dtype=object).astype(str)
        _, group = np.unique(groups, return_inverse=True)
        train_groups = np.unique(group[train])
        rng = np.random.default_rng(1 + (0 if self.random_state is None else self.random_state))
        fold_of = np.full(group.max() + 1, -1)
        fold_of[rng.permutation(train_groups)] = np.arange(len(train_groups)) % self.text_folds
        fold = np.where(train, fold_of[group], -1)
        out = np.zeros(len(target))
        for k in range(min(self.text_folds, len(train_groups))):
            held, rest = fold == k, train & (fold != k)
            if len(np.unique(target[rest])) != 2:
                continue
            with threadpool_limits(limits=self.n_threads):
                trees = TreeEnsemble.from_estimator(self._estimator().fit(X[rest], target[rest]))
            out[held] = trees.predict_proba(X[held])
        return out

    # -- prediction --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "forest_"):
            raise ValueError("this LearnedQualityModel is not fitted; call fit or load first")

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
        self,
        instance: Instance,
        calibrated: bool = True,
        catalog: Catalog | None = None,
        reference: bool = False,
    ) -> np.ndarray:
        """``(R, N)`` completion probability of every request on every node of ``instance``.

        The features come from
        :func:`~qlmio_opt.predictors.learned_features.window_quality_features` (one row per
        request and distinct node model and tier); ``reference=True`` takes the straightforward
        path instead (every pair a row of
        :func:`~qlmio_opt.predictors.learned_features.instance_features`, the trees walked by
        :func:`~qlmio_opt.predictors.tree_ensemble.reference_raw_sum`): slower, the same numbers.
        """
        self._check_fitted()
        shape = (len(instance.requests), len(instance.nodes))
        if shape[0] == 0:
            return np.zeros(shape)
        catalog = catalog or instance.resolved_catalog
        if reference:
            X = instance_features(instance, self.feature_spec_, catalog, self.text_coef_)
            raw = self.forest_.predict_proba(X, reference=True)
            p = self._calibrate(raw, X) if calibrated else raw
            return p.reshape(shape)
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

        json_path, npz_path = _paths(path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        arrays = dict(self.forest_.arrays)
        arrays["calibration_x"] = self.calibration_x_
        arrays["calibration_y"] = self.calibration_y_
        arrays["calibration_tier"] = self.calibration_tier_
        arrays["text_coef"] = self.text_coef_
        with open(npz_path, "wb") as fh:
            np.savez(fh, **{k: np.ascontiguousarray(arrays[k]) for k in NPZ_FIELDS})
        settings = {k: getattr(self, k) for k in self._SETTINGS}
        meta = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "package_version": __version__,
            "sklearn_version": self.sklearn_version_,
            "settings": settings,
            "feature_version": FEATURE_VERSION,
            "feature_spec": self.feature_spec_.to_dict(),
            "feature_names": list(self.feature_names_),
            "n_trees": self.forest_.n_trees,
            "metrics": _json_safe(self.metrics_),
            "training_data": _json_safe(self.training_data_),
        }
        write_model_json(json_path, npz_path, meta)
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
        json_path, _ = _paths(path)
        meta = _read_json(json_path)
        npz_path = json_path.parent / meta["npz_file"]
        spec = meta["_spec"]
        arrays = _read_npz(json_path, npz_path, meta)
        settings = meta["settings"]
        model = cls(**{k: settings[k] for k in cls._SETTINGS}, catalog=catalog)
        model.feature_spec_ = spec
        model.feature_names_ = spec.names()
        model.estimator_ = None
        model.forest_ = TreeEnsemble(arrays, len(spec.names()))
        model.calibration_x_ = arrays["calibration_x"]
        model.calibration_y_ = arrays["calibration_y"]
        model.calibration_tier_ = arrays["calibration_tier"]
        model.text_coef_ = arrays["text_coef"]
        model.sklearn_version_ = meta["sklearn_version"]
        model.metrics_ = meta["metrics"]
        model.training_data_ = meta["training_data"]
        return model


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _identity() -> dict[str, np.ndarray]:
    return {
        "calibration_x": np.array([0.0, 1.0]),
        "calibration_y": np.array([0.0, 1.0]),
        "calibration_tier": _TIER_IDENTITY.copy(),
    }


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


def _describe(
    table: Any, train: np.ndarray, val: np.ndarray, X: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
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
    except ValueError as exc:
        raise fail("feature_spec", str(exc)) from None
    if meta["feature_names"] != list(spec.names()):
        raise fail("feature_names", "do not match the features this code computes for the spec")
    settings = meta["settings"]
    if not isinstance(settings, dict):
        raise fail("settings", "must be an object")
    for key in LearnedQualityModel._SETTINGS:
        if key not in settings:
            raise fail(f"settings.{key}", "missing")
    if not _is_count(meta["n_trees"]):
        raise fail("n_trees", f"must be a positive integer; got {meta['n_trees']!r}")
    npz_file = meta["npz_file"]
    if not isinstance(npz_file, str) or Path(npz_file).name != npz_file or not npz_file:
        raise fail("npz_file", "must be a bare file name next to the JSON")
    sha = meta["npz_sha256"]
    if not isinstance(sha, str) or len(sha) != 64:
        raise fail("npz_sha256", "must be a hex SHA-256")
    meta["_spec"] = spec
    return meta


def _read_npz(json_path: Path, npz_path: Path, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The checked arrays of the ``.npz`` that the checked JSON ``meta`` names."""
    spec = meta["_spec"]
    per_tree = max_tree_nodes(meta["settings"], json_path)
    specs: dict[str, ArraySpec] = {
        **tree_array_specs(meta["n_trees"], per_tree),
        "calibration_x": ArraySpec(_DTYPE_KINDS["f"], (None,)),  # isotonic knots: data-sized
        "calibration_y": ArraySpec(_DTYPE_KINDS["f"], (None,)),
        "calibration_tier": ArraySpec(_DTYPE_KINDS["f"], (None,), len(_TIER_IDENTITY)),
        "text_coef": ArraySpec(_DTYPE_KINDS["f"], (None,), spec.text_buckets),
    }
    arrays = read_npz(json_path, npz_path, meta["npz_sha256"], specs)
    return _check_arrays(arrays, str(npz_path), len(spec.names()), spec.text_buckets)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def max_tree_nodes(settings: Mapping[str, Any], source: Path) -> int | None:
    """The most nodes one tree trained with ``settings`` can have, or ``None`` if neither
    ``max_leaf_nodes`` nor ``max_depth`` bounds it.

    A binary tree with ``L`` leaves has ``2 L - 1`` nodes; a tree of depth ``d`` (scikit-learn
    counts edges) has at most ``2**d`` leaves.

    Raises
    ------
    ValueError
        Naming ``source`` and the setting, if one is neither ``null`` nor a valid count.
    """
    leaves = settings.get("max_leaf_nodes")
    depth = settings.get("max_depth")
    if leaves is not None and not (_is_count(leaves) and leaves >= 2):
        raise ValueError(f"{source}: field 'settings.max_leaf_nodes': must be null or >= 2")
    if depth is not None and not _is_count(depth):
        raise ValueError(f"{source}: field 'settings.max_depth': must be null or >= 1")
    bounds = [b for b in (leaves, None if depth is None else 2 ** min(depth, 62)) if b]
    return 2 * min(bounds) - 1 if bounds else None


def tree_array_specs(max_trees: int, nodes_per_tree: int | None) -> dict[str, ArraySpec]:
    """What the tree fields of an ``.npz`` may hold: ``max_trees`` trees of at most
    ``nodes_per_tree`` nodes (``None``: unbounded but for the archive's hard cap)."""
    nodes = None if nodes_per_tree is None else max_trees * nodes_per_tree
    specs = {key: ArraySpec(_DTYPE_KINDS[NPZ_FIELDS[key]], (None,), nodes) for key in _NODE_FIELDS}
    return specs | {
        "is_leaf": ArraySpec(_DTYPE_KINDS["b"], (None,), nodes),
        "tree_offsets": ArraySpec(_DTYPE_KINDS["i"], (None,), max_trees + 1),
        "baseline": ArraySpec(_DTYPE_KINDS["f"], (None,), 1),
    }


def _check_arrays(
    arrays: dict[str, np.ndarray],
    source: str,
    n_features: int | None = None,
    text_buckets: int | None = None,
) -> dict[str, np.ndarray]:
    """Check every field; return them with canonical dtypes (read-only).

    ``text_coef`` is checked (``text_buckets`` finite floats) unless ``text_buckets`` is
    ``None`` (the trees alone, as :meth:`TreeEnsemble.from_estimator` builds them).
    """

    def fail(field: str, problem: str) -> _Refused:
        return _Refused(f"{source}: field '{field}': {problem}")

    out: dict[str, np.ndarray] = {}
    for key, kind in NPZ_FIELDS.items():
        if key == "text_coef" and text_buckets is None:
            continue
        a = arrays[key]
        if a.ndim != 1:
            raise fail(key, f"must be one-dimensional, has shape {a.shape}")
        if kind == "f":
            if a.dtype.kind not in "fiu":
                raise fail(key, f"must be floating point, is {a.dtype}")
            a = a.astype(np.float64)
            if np.isnan(a).any():
                raise fail(key, "contains NaN")
        elif kind == "i":
            if a.dtype.kind not in "iu":
                raise fail(key, f"must be integer, is {a.dtype}")
            a = a.astype(np.int64)
        else:
            if a.dtype.kind not in "biu" or (
                a.dtype.kind != "b" and np.isin(a, [0, 1], invert=True).any()
            ):
                raise fail(key, f"must be boolean, is {a.dtype}")
            a = a.astype(bool)
        a.setflags(write=False)
        out[key] = a

    n_nodes = len(out["value"])
    for key in (*_NODE_FIELDS, "is_leaf"):
        if len(out[key]) != n_nodes:
            raise fail(key, f"has {len(out[key])} entries, expected {n_nodes} (one per node)")
    if not np.isfinite(out["value"]).all():
        raise fail("value", "contains infinite values")
    off = out["tree_offsets"]
    if len(off) < 2 or off[0] != 0 or off[-1] != n_nodes or (np.diff(off) <= 0).any():
        raise fail("tree_offsets", f"must rise strictly from 0 to the {n_nodes} nodes")
    size = np.repeat(np.diff(off), np.diff(off))
    local = np.arange(n_nodes) - np.repeat(off[:-1], np.diff(off))
    split = ~out["is_leaf"]
    if n_features is not None:
        f = out["feature_idx"][split]
        if ((f < 0) | (f >= n_features)).any():
            raise fail("feature_idx", f"split on a feature outside 0..{n_features - 1}")
    for key in ("left", "right"):
        child = out[key][split]
        if ((child <= local[split]) | (child >= size[split])).any():
            raise fail(key, "child index outside its tree or not after its parent")
    if (out["left"][split] == out["right"][split]).any():
        raise fail("right", "equals the left child")
    if out["baseline"].shape != (1,) or not np.isfinite(out["baseline"]).all():
        raise fail("baseline", "must be one finite number")
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
    if text_buckets is not None:
        coef = out["text_coef"]
        if coef.shape != (text_buckets,):
            raise fail("text_coef", f"has {len(coef)} entries, expected {text_buckets} (buckets)")
        if not np.isfinite(coef).all():
            raise fail("text_coef", "contains infinite values")
    return out
