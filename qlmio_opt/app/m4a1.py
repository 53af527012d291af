"""Learned score and latency predictors on the real M4A1 log (local vs cloud multimodal LLM calls).

Data
----
M4A1 (GitHub liangqiyuan/TMO, ``data/M4A1.json`` at commit 3d614b42, MIT) holds 352 real
calls in 100 dialogue episodes of 2-5 turns. Each call was answered by either the local
(on-device) LLM (``action`` 0) or the cloud LLM (``action`` 1, optionally with 1-3 camera views
uploaded, ``n_images``), and carries the judged answer ``score`` (mostly 0-2.5, a few outliers
up to 9) and the measured end-to-end latency ``interaction_time`` in seconds. There are only 20
distinct questions (each asked 11-24 times), so the text features mostly identify the question.
:func:`load_m4a1` reads the packaged copy (``qlmio_opt/data/m4a1.json.gz``, built by
``scripts/build_m4a1_data.py``).

Models
------
Both models are single-target scikit-learn regressors (settings in ``__init__``, learning in
``fit``, learned attributes end in ``_``) over a DataFrame with the :data:`FEATURES` columns;
one instance is fitted per target (``score``, ``interaction_time``).

- :class:`GroupMeanBaseline`: the mean target per (``task_cat``, ``action``) in the training
  data, falling back to the per-``action`` mean (then the overall mean) for unseen groups.
- :class:`M4A1Regressor`: ridge regression on :class:`M4A1Features` -- TF-IDF word 1-2 grams of
  the question, one-hot ``task_cat``, standardised ``n_images`` and ``turn``, ``action``, and
  the products of ``action`` with all of these (so the local-cloud difference may depend on
  the question). The ridge penalty is chosen from a fixed grid by an inner K-fold-by-episode
  CV on the training data only (mean absolute error on the original scale). For latency the
  model is fitted on log seconds (``log_target=True``, fixed a priori because latency is
  right-skewed and MAPE is one of the metrics); predictions are ``exp`` of the fit, i.e. a
  geometric-mean-like estimate that trades some MAE for MAPE.

Splits
------
Turns of one dialogue share a user, a scene and often a question, so every split is by
episode: :func:`split_by_episode` (hash of the episode index, about 70/30) and
:func:`episode_folds` (K folds of whole episodes) never put turns of one episode on both sides.

Latency as under load
---------------------
``evaluate_m4a1()["latency"]`` reports the latency measures of ``evaluate-predictors
--under-load`` (:mod:`qlmio_opt.app.load_latency_evaluation`) for both models: MAE, MAPE,
median APE and the coverage of a 90th percentile, each with a 95% percentile interval from a
bootstrap over *episodes* (:mod:`qlmio_opt.app.bootstrap`; turns of one dialogue are
correlated), and learned - baseline MAPE with its paired interval. The 90th percentile is the
fold's point prediction times ``exp(offset)``, ``offset`` the split-conformal quantile
(:func:`conformal_offset`) of ``log(actual / predicted)`` over out-of-fold predictions on the
fold's training episodes (an inner K-fold by episode; the learned model keeps the penalty it
chose on the whole training folds, so the inner fits do not repeat its penalty search). M4A1
has **no load field** (:data:`NO_LOAD_NOTE`): its latencies cannot be split into idle, busy and
saturated as the state table's are.

What a logged dataset can and cannot tell
-----------------------------------------
M4A1 is a logged (bandit) dataset: each call shows the outcome of the one action that was
taken, never of the other. Hence

- *can* be evaluated: the accuracy of a predictor's estimate for the logged action (score MAE,
  RMSE and Spearman correlation, latency MAE and MAPE), and how often the predictor's preferred
  action coincides with the logged one, with the observed outcomes on those calls;
- *cannot* be evaluated: the error of the prediction for the action not taken, the
  per-call difference between local and cloud, and so the regret or value of a predictor-driven
  policy. The mean observed outcome on calls where the preferred action equals the logged one
  (``decision_matched_*``) is a replay estimate of that value only if the logging policy chose
  actions independently of the call's features; M4A1 records no propensities, so it is a
  descriptive figure, not an unbiased policy value.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from qlmio_opt.app.bootstrap import RESAMPLES, latency_comparison
from qlmio_opt.domain.traces import data_bytes

#: Input columns used by the predictors.
FEATURES: tuple[str, ...] = ("question", "task_cat", "action", "n_images", "turn")
#: Target columns: judged answer score and end-to-end latency in seconds.
TARGETS: tuple[str, ...] = ("score", "interaction_time")
#: Columns of :func:`load_m4a1`.
COLUMNS: tuple[str, ...] = (
    "episode",
    "turn",
    "question",
    "task_cat",
    "action",
    "n_images",
    "score",
    "interaction_time",
    "usage_cost",
)
#: Keys of each model's metrics in :func:`evaluate_m4a1`.
METRIC_KEYS: tuple[str, ...] = (
    "score_mae",
    "score_rmse",
    "score_spearman",
    "latency_mae",
    "latency_mape",
    "score_mae_fold_sd",
    "latency_mae_fold_sd",
    "decision_agreement",
    "decision_cloud_share",
    "decision_matched_score",
    "decision_matched_latency",
)
DEFAULT_ALPHAS: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: Level of the latency upper estimate (as the state table's ``p90``).
P90_LEVEL = 0.9
NO_LOAD_NOTE = (
    "M4A1 has no load field: the log records neither the local device's nor the cloud's load "
    "at each call, so its latency cannot be split by load level (idle, busy, saturated)"
)


def load_m4a1() -> pd.DataFrame:
    """The 352 interactions of M4A1, one row each, in source order.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`: ``episode`` (0-99), ``turn`` (0-based position in the
        episode), ``question``, ``task_cat``, ``action`` (0 local, 1 cloud), ``n_images``
        (views uploaded, 0-3; always 0 for local calls), ``score``, ``interaction_time``
        (seconds) and ``usage_cost`` (dollars).
    """
    raw = json.loads(gzip.decompress(data_bytes("m4a1.json.gz")).decode("utf-8"))
    df = pd.DataFrame.from_records(raw, columns=list(COLUMNS))
    for col in ("episode", "turn", "action", "n_images"):
        df[col] = df[col].astype(np.int64)
    for col in ("score", "interaction_time", "usage_cost"):
        df[col] = df[col].astype(np.float64)
    return df


# --- splits ----------------------------------------------------------------------------------


def _episode_hash(episode: int, random_state: int) -> float:
    """A deterministic pseudo-uniform number in [0, 1) for an episode (independent of Python's
    hash seed)."""
    digest = hashlib.blake2b(f"{random_state}:{int(episode)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_by_episode(
    df: pd.DataFrame, test_size: float = 0.3, random_state: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/test split by episode, ordered by a hash of the episode index.

    The distinct episodes are sorted by a salted BLAKE2 hash of their index (independent of
    Python's hash seed and of row order) and the first ``round(test_size * n_episodes)`` (at
    least one, at most all but one) form the test part: 30 of M4A1's 100 episodes for 0.3.

    Parameters
    ----------
    df
        Rows with an ``episode`` column.
    test_size
        Share of episodes in the test part.
    random_state
        Salt of the hash; the same value always gives the same split.

    Returns
    -------
    (train, test)
        The two parts of ``df`` (original index kept); no episode is in both.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), not {test_size}")
    unique = sorted(set(df["episode"].tolist()), key=lambda e: (_episode_hash(e, random_state), e))
    if len(unique) < 2:
        raise ValueError("need at least two episodes to split")
    n_test = min(max(round(test_size * len(unique)), 1), len(unique) - 1)
    in_test = df["episode"].isin(unique[:n_test]).to_numpy()
    return df[~in_test], df[in_test]


def episode_folds(
    episodes: Sequence[int] | np.ndarray | pd.Series, folds: int = 5, random_state: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds of whole episodes (positional ``(train_idx, test_idx)`` pairs, as scikit-learn).

    The distinct episodes are shuffled with ``numpy.random.default_rng(random_state)`` and dealt
    round-robin to the folds, so every fold holds the same number of episodes (+/- 1).

    Parameters
    ----------
    episodes
        Episode index of each row.
    folds
        Number of folds (at least 2, at most the number of distinct episodes).
    random_state
        Seed of the shuffle.
    """
    ep = np.asarray(episodes)
    unique = np.unique(ep)
    if not 2 <= folds <= len(unique):
        raise ValueError(f"folds must be in [2, {len(unique)}], not {folds}")
    order = np.random.default_rng(random_state).permutation(unique)
    fold_of = {e: i % folds for i, e in enumerate(order.tolist())}
    row_fold = np.array([fold_of[e] for e in ep.tolist()])
    rows = np.arange(len(ep))
    return [(rows[row_fold != k], rows[row_fold == k]) for k in range(folds)]


# --- models ----------------------------------------------------------------------------------


def _check_frame(X: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"X must be a pandas DataFrame with columns {list(columns)}")
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise ValueError(f"X lacks columns {missing}")
    return X


class GroupMeanBaseline(RegressorMixin, BaseEstimator):
    """Mean target per group of the training data, with coarser fallbacks for unseen groups.

    Parameters
    ----------
    group_cols
        Columns defining the groups (default ``task_cat`` and ``action``).
    fallback_cols
        Coarser groups used when a row's group was not seen in training (default ``action``);
        if that is unseen too, the overall training mean.

    Attributes
    ----------
    group_means_ : dict
        Mean target per tuple of ``group_cols`` values.
    fallback_means_ : dict
        Mean target per tuple of ``fallback_cols`` values.
    global_mean_ : float
        Mean of all training targets.
    """

    def __init__(
        self,
        group_cols: tuple[str, ...] = ("task_cat", "action"),
        fallback_cols: tuple[str, ...] = ("action",),
    ) -> None:
        self.group_cols = group_cols
        self.fallback_cols = fallback_cols

    def fit(self, X: pd.DataFrame, y: Any) -> GroupMeanBaseline:
        """Store the group means of ``y``.

        Parameters
        ----------
        X
            DataFrame with ``group_cols`` and ``fallback_cols``.
        y
            Target values, one per row.
        """
        cols = list(dict.fromkeys([*self.group_cols, *self.fallback_cols]))
        X = _check_frame(X, cols)
        target = np.asarray(y, dtype=float)
        if target.shape != (len(X),):
            raise ValueError("y must be one-dimensional with one value per row of X")
        frame = X[cols].reset_index(drop=True).assign(_y=target)
        self.group_means_ = self._means(frame, self.group_cols)
        self.fallback_means_ = self._means(frame, self.fallback_cols)
        self.global_mean_ = float(target.mean())
        return self

    @staticmethod
    def _means(frame: pd.DataFrame, cols: Sequence[str]) -> dict[tuple, float]:
        means = frame.groupby(list(cols), sort=True)["_y"].mean()
        return {(k if isinstance(k, tuple) else (k,)): float(v) for k, v in means.items()}

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The group mean of each row (fallback mean, then overall mean, if unseen)."""
        X = _check_frame(X, [*self.group_cols, *self.fallback_cols])
        keys = zip(*(X[c].tolist() for c in self.group_cols), strict=True)
        fallback = zip(*(X[c].tolist() for c in self.fallback_cols), strict=True)
        out = [
            self.group_means_.get(k, self.fallback_means_.get(f, self.global_mean_))
            for k, f in zip(keys, fallback, strict=True)
        ]
        return np.asarray(out, dtype=float)


class M4A1Features(TransformerMixin, BaseEstimator):
    """Dense design matrix of an M4A1 call: base features and their products with ``action``.

    Base features: TF-IDF word n-grams of ``question`` (vocabulary learned in ``fit``), one-hot
    ``task_cat`` (unknown categories encode as all zeros) and standardised ``n_images`` and
    ``turn``. The output is ``[action, base, action * base]``.

    Parameters
    ----------
    ngram_range
        Word n-gram range of the TF-IDF vectoriser.

    Attributes
    ----------
    vectorizer_ : TfidfVectorizer
    encoder_ : OneHotEncoder
    scaler_ : StandardScaler
    n_features_out_ : int
    """

    def __init__(self, ngram_range: tuple[int, int] = (1, 2)) -> None:
        self.ngram_range = ngram_range

    def fit(self, X: pd.DataFrame, y: Any = None) -> M4A1Features:
        """Learn the vocabulary, the categories and the scaling from ``X``."""
        X = _check_frame(X, FEATURES)
        self.vectorizer_ = TfidfVectorizer(ngram_range=self.ngram_range, sublinear_tf=True)
        self.vectorizer_.fit(X["question"].astype(str))
        self.encoder_ = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        self.encoder_.fit(X[["task_cat"]].astype(str))
        self.scaler_ = StandardScaler().fit(X[["n_images", "turn"]].to_numpy(dtype=float))
        self.n_features_out_ = 1 + 2 * self._base(X.iloc[:1]).shape[1]
        return self

    def _base(self, X: pd.DataFrame) -> np.ndarray:
        text = self.vectorizer_.transform(X["question"].astype(str)).toarray()
        cat = self.encoder_.transform(X[["task_cat"]].astype(str))
        num = self.scaler_.transform(X[["n_images", "turn"]].to_numpy(dtype=float))
        return np.hstack([text, cat, num])

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """The design matrix, shape ``(len(X), n_features_out_)``."""
        X = _check_frame(X, FEATURES)
        base = self._base(X)
        action = X["action"].to_numpy(dtype=float)[:, None]
        return np.hstack([action, base, action * base])


class M4A1Regressor(RegressorMixin, BaseEstimator):
    """Ridge regression on :class:`M4A1Features`, penalty chosen by inner CV by episode.

    Parameters
    ----------
    alphas
        Candidate ridge penalties (a fixed grid).
    log_target
        Fit on ``log(y)`` and predict ``exp`` of the fit (for positive, skewed targets such as
        latency).
    ngram_range
        Word n-gram range of the question's TF-IDF features.
    inner_folds
        Folds of the inner CV that picks ``alpha_`` (by episode when groups are known).
    random_state
        Seed of the inner fold assignment; with the same data and seed, ``fit`` is
        deterministic.

    Attributes
    ----------
    alpha_ : float
        Penalty with the lowest inner-CV mean absolute error (on the original scale; ties go
        to the larger penalty).
    cv_mae_ : dict
        Inner-CV mean absolute error per candidate penalty.
    features_ : M4A1Features
        The feature map fitted on all training rows.
    ridge_ : Ridge
        The ridge model refitted on all training rows with ``alpha_``.
    """

    def __init__(
        self,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        log_target: bool = False,
        ngram_range: tuple[int, int] = (1, 2),
        inner_folds: int = 5,
        random_state: int = 0,
    ) -> None:
        self.alphas = alphas
        self.log_target = log_target
        self.ngram_range = ngram_range
        self.inner_folds = inner_folds
        self.random_state = random_state

    @staticmethod
    def _ridge(alpha: float) -> Ridge:
        # LSQR (matrix-vector products only) with a tight tolerance: deterministic, matches the
        # closed form to ~1e-8, and avoids the dense BLAS-3 solves that slow down badly when
        # the machine's cores are oversubscribed.
        return Ridge(alpha=alpha, solver="lsqr", tol=1e-10)

    def _forward(self, y: np.ndarray) -> np.ndarray:
        if self.log_target:
            if np.any(y <= 0):
                raise ValueError("log_target needs strictly positive targets")
            return np.log(y)
        return y

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        return np.exp(z) if self.log_target else z

    def fit(self, X: pd.DataFrame, y: Any, groups: Any = None) -> M4A1Regressor:
        """Choose the penalty by inner CV, then refit on all rows.

        Parameters
        ----------
        X
            DataFrame with the :data:`FEATURES` columns.
        y
            Target values, one per row.
        groups
            Episode of each row for the inner CV; defaults to ``X["episode"]`` if present,
            else each row is its own group.
        """
        X = _check_frame(X, FEATURES).reset_index(drop=True)
        target = np.asarray(y, dtype=float)
        if target.shape != (len(X),):
            raise ValueError("y must be one-dimensional with one value per row of X")
        if not self.alphas:
            raise ValueError("alphas must not be empty")
        if groups is None:
            groups = X["episode"].to_numpy() if "episode" in X.columns else np.arange(len(X))
        groups = np.asarray(groups)
        z = self._forward(target)

        alphas = [float(a) for a in self.alphas]
        abs_err = {a: np.zeros(len(X)) for a in alphas}
        n_groups = len(np.unique(groups))
        if len(alphas) > 1 and n_groups >= 2:
            for tr, te in episode_folds(groups, min(self.inner_folds, n_groups), self.random_state):
                feats = M4A1Features(self.ngram_range).fit(X.iloc[tr])
                a_tr, a_te = feats.transform(X.iloc[tr]), feats.transform(X.iloc[te])
                for a in alphas:
                    pred = self._inverse(self._ridge(a).fit(a_tr, z[tr]).predict(a_te))
                    abs_err[a][te] = np.abs(pred - target[te])
        self.cv_mae_ = {a: float(abs_err[a].mean()) for a in alphas}
        # lowest error; ties (within 1e-12) go to the larger, more regularised penalty
        self.alpha_ = min(alphas, key=lambda a: (round(self.cv_mae_[a], 12), -a))
        self.features_ = M4A1Features(self.ngram_range).fit(X)
        self.ridge_ = self._ridge(self.alpha_).fit(self.features_.transform(X), z)
        self.n_features_in_ = len(FEATURES)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Predicted target for each row."""
        return self._inverse(self.ridge_.predict(self.features_.transform(X)))


def make_models(random_state: int = 0) -> dict[str, dict[str, BaseEstimator]]:
    """Unfitted baseline and learned models per target (the settings used by the evaluation).

    Returns
    -------
    dict
        ``{"baseline": {target: estimator}, "learned": {target: estimator}}`` for each target in
        :data:`TARGETS`.
    """
    return {
        "baseline": {t: GroupMeanBaseline() for t in TARGETS},
        "learned": {
            "score": M4A1Regressor(log_target=False, random_state=random_state),
            "interaction_time": M4A1Regressor(log_target=True, random_state=random_state),
        },
    }


# --- evaluation ------------------------------------------------------------------------------


def counterfactual_rows(df: pd.DataFrame, action: int) -> pd.DataFrame:
    """The calls of ``df`` as if answered by ``action`` (0 local, 1 cloud).

    Local calls never upload images (``n_images`` = 0). A cloud alternative keeps the logged
    image count when the logged call was a cloud call, and is a text-only call (0 images)
    when the logged call was local (the image choice of an untaken cloud call is unknown).
    """
    out = df.copy()
    out["n_images"] = np.where(df["action"].to_numpy() == action, df["n_images"].to_numpy(), 0)
    out["action"] = action
    return out


def preferred_action(score: np.ndarray, latency: np.ndarray, atol: float = 1e-9) -> np.ndarray:
    """Preferred action per call from per-action predictions of shape ``(n, 2)``.

    Higher predicted score wins; within ``atol`` the lower predicted latency wins; a full tie
    goes to local (0).
    """
    score, latency = np.asarray(score, float), np.asarray(latency, float)
    diff = score[:, 1] - score[:, 0]
    by_latency = np.where(latency[:, 1] < latency[:, 0], 1, 0)
    return np.where(diff > atol, 1, np.where(diff < -atol, 0, by_latency))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks; NaN if constant)."""
    ra = pd.Series(np.asarray(a, float)).rank().to_numpy()
    rb = pd.Series(np.asarray(b, float)).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def conformal_offset(log_ratios: np.ndarray, level: float = P90_LEVEL) -> float:
    """The split-conformal quantile of ``n`` log ratios: the ``ceil((n + 1) * level)``-th
    smallest (the largest if that exceeds ``n``), so a new exchangeable ratio lies at or below
    it with probability at least ``level``."""
    ratios = np.sort(np.asarray(log_ratios, float))
    if ratios.size == 0:
        raise ValueError("a conformal offset needs at least one calibration ratio")
    rank = min(math.ceil((ratios.size + 1) * level), ratios.size)
    return float(ratios[rank - 1])


def _calibration_copy(model: BaseEstimator) -> BaseEstimator:
    """An unfitted copy of a fitted model; a learned one keeps its chosen penalty."""
    fresh = clone(model)
    if hasattr(model, "alpha_"):
        fresh.set_params(alphas=(model.alpha_,))
    return fresh


def latency_p90_offset(
    model: BaseEstimator, train: pd.DataFrame, folds: int = 5, random_state: int = 0
) -> float:
    """The conformal offset of ``log(latency / predicted)`` for ``model`` fitted on ``train``:
    out-of-fold predictions of copies of it on ``train``'s episodes (module docstring)."""
    target = train["interaction_time"].to_numpy(float)
    log_ratio = np.full(len(train), np.nan)
    n_folds = min(folds, int(train["episode"].nunique()))
    for tr, te in episode_folds(train["episode"], n_folds, random_state):
        fitted = _calibration_copy(model).fit(train.iloc[tr], target[tr])
        log_ratio[te] = np.log(target[te] / fitted.predict(train.iloc[te]))
    return conformal_offset(log_ratio)


def latency_evaluation(
    df: pd.DataFrame,
    predicted: dict[str, np.ndarray],
    p90: dict[str, np.ndarray],
    resamples: int = RESAMPLES,
    random_state: int = 0,
) -> dict[str, Any]:
    """The latency measures of the state table's evaluation on the M4A1 calls ``df`` (module
    docstring): per model ``mae_s``, ``mape``, ``median_ape``, ``p90_coverage`` with
    ``_ci95`` intervals from a bootstrap over episodes, and learned - baseline MAPE."""
    actual = df["interaction_time"].to_numpy(float)
    episodes = pd.Index(pd.unique(df["episode"]))
    idx = episodes.get_indexer(df["episode"])
    return {
        "rows": len(df),
        "episodes": len(episodes),
        "bootstrap": {"unit": "episode", "resamples": resamples, "seed": random_state},
        "p90": f"split-conformal offset on inner out-of-fold log ratios, level {P90_LEVEL}",
        "load_field": False,
        "note": NO_LOAD_NOTE,
    } | latency_comparison(
        actual,
        predicted,
        p90,
        idx,
        len(episodes),
        resamples=resamples,
        seed=random_state,
        reference="baseline",
    )


def evaluate_m4a1(
    folds: int = 5, random_state: int = 0, resamples: int = RESAMPLES
) -> dict[str, Any]:
    """Held-out metrics of the baseline and the learned model, K-fold by episode.

    Each row is predicted exactly once, by models fitted on the other folds (the learned
    model's penalty is chosen by an inner CV inside the training folds); metrics are computed
    on the pooled out-of-fold predictions, plus the across-fold standard deviation of the MAEs.

    Only quantities computable on the logged action are reported (see the module docstring):

    - ``score_mae``, ``score_rmse``, ``score_spearman``: prediction for the logged action vs the
      observed score;
    - ``latency_mae`` (seconds), ``latency_mape`` (fraction): same for ``interaction_time``;
    - ``score_mae_fold_sd``, ``latency_mae_fold_sd``: standard deviation of the per-fold MAE;
    - ``decision_agreement``: share of calls whose preferred action (from the predictions for
      both actions, :func:`preferred_action`) equals the logged action;
    - ``decision_cloud_share``: share of calls where the predictor prefers the cloud;
    - ``decision_matched_score``, ``decision_matched_latency``: mean observed score and latency
      on the agreeing calls. These describe the overlap, they are not the value of the
      predictor's policy (no propensities are logged; outcomes of untaken actions are unknown).

    ``latency`` holds the latency measures of the state table's evaluation, with intervals
    and p90 coverage (:func:`latency_evaluation`; M4A1 has no load field, so not by load).

    Parameters
    ----------
    folds
        Number of episode folds.
    random_state
        Seed of the fold assignment, of the learned model's inner CV and of the bootstrap.
    resamples
        Bootstrap resamples of the episodes for ``latency``.

    Returns
    -------
    dict
        ``n_rows``, ``n_episodes``, ``folds``, ``random_state``, ``logged`` (observed mean
        score, mean latency and cloud share), for ``"baseline"`` and ``"learned"`` a dict with
        the keys :data:`METRIC_KEYS`, and ``latency``.
    """
    df = load_m4a1()
    n = len(df)
    pred = {m: {t: np.full(n, np.nan) for t in TARGETS} for m in ("baseline", "learned")}
    latency_p90 = {m: np.full(n, np.nan) for m in pred}
    per_action = {m: {t: np.full((n, 2), np.nan) for t in TARGETS} for m in pred}
    fold_mae: dict[str, dict[str, list[float]]] = {m: {t: [] for t in TARGETS} for m in pred}
    alt = [counterfactual_rows(df, a) for a in (0, 1)]
    for tr, te in episode_folds(df["episode"], folds, random_state):
        train = df.iloc[tr]
        for name, models in make_models(random_state).items():
            for target, model in models.items():
                model.fit(train, train[target].to_numpy())
                p = model.predict(df.iloc[te])
                pred[name][target][te] = p
                fold_mae[name][target].append(float(np.abs(p - df[target].iloc[te]).mean()))
                if target == "interaction_time":
                    offset = latency_p90_offset(model, train, folds, random_state)
                    latency_p90[name][te] = p * np.exp(offset)
                for a in (0, 1):
                    per_action[name][target][te, a] = model.predict(alt[a].iloc[te])

    score = df["score"].to_numpy()
    latency = df["interaction_time"].to_numpy()
    logged_action = df["action"].to_numpy()
    result: dict[str, Any] = {
        "n_rows": n,
        "n_episodes": int(df["episode"].nunique()),
        "folds": folds,
        "random_state": random_state,
        "logged": {
            "score_mean": float(score.mean()),
            "latency_mean": float(latency.mean()),
            "cloud_share": float(logged_action.mean()),
        },
    }
    for name in pred:
        ps, pl = pred[name]["score"], pred[name]["interaction_time"]
        choice = preferred_action(per_action[name]["score"], per_action[name]["interaction_time"])
        agree = choice == logged_action
        result[name] = {
            "score_mae": float(np.abs(ps - score).mean()),
            "score_rmse": float(np.sqrt(((ps - score) ** 2).mean())),
            "score_spearman": spearman(ps, score),
            "latency_mae": float(np.abs(pl - latency).mean()),
            "latency_mape": float((np.abs(pl - latency) / latency).mean()),
            "score_mae_fold_sd": float(np.std(fold_mae[name]["score"])),
            "latency_mae_fold_sd": float(np.std(fold_mae[name]["interaction_time"])),
            "decision_agreement": float(agree.mean()),
            "decision_cloud_share": float(choice.mean()),
            "decision_matched_score": float(score[agree].mean()) if agree.any() else float("nan"),
            "decision_matched_latency": (
                float(latency[agree].mean()) if agree.any() else float("nan")
            ),
        }
    result["latency"] = latency_evaluation(
        df,
        {name: pred[name]["interaction_time"] for name in pred},
        latency_p90,
        resamples,
        random_state,
    )
    return result


__all__ = [
    "COLUMNS",
    "FEATURES",
    "METRIC_KEYS",
    "NO_LOAD_NOTE",
    "P90_LEVEL",
    "TARGETS",
    "GroupMeanBaseline",
    "M4A1Features",
    "M4A1Regressor",
    "conformal_offset",
    "counterfactual_rows",
    "episode_folds",
    "evaluate_m4a1",
    "latency_evaluation",
    "latency_p90_offset",
    "load_m4a1",
    "make_models",
    "preferred_action",
    "spearman",
    "split_by_episode",
]
