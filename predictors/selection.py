"""Selection-aware calibration of quality *differences* against the all-cloud reference.

The ``quality_floor`` objective keeps a window's mean predicted quality at least all-cloud's
less a tolerance, where all-cloud sends every request to its lowest-latency cloud node (the
*reference*). The constraint only ever compares a request's chosen pair with its reference pair,
so what the optimiser spends is the predicted **difference** ``D[r, n] = Q[r, ref] - Q[r, n]``,
and it spends it where ``D`` is predicted smallest for the latency it buys. A model whose pair
probabilities are each calibrated can still be biased on those differences: the trees' noise on
the two pairs of a request does not cancel, so the requests with the smallest predicted ``D``
are, on average, the ones whose ``D`` is most under-predicted (the optimiser's curse). In the
20-minute replay of ``benchmarks/replay_learned.py`` that cost 3 points of task completion.

:class:`SelectionCalibration` re-calibrates the differences themselves. For every request that
has a reference and every other node ``n`` it predicts

    D'[r, n] = a_k + b_k * D_analytic[r, n] + c_k * (D_learned[r, n] - D_analytic[r, n]) + margin

(``k`` is the tier of ``n``: another cloud node, or an edge node) and returns
``Q'[r, n] = clip(Q[r, ref] - D'[r, n], 0, 1)``, the reference pair's own quality unchanged.
``c_k`` is how much of the learned model's departure from the analytic prior (the catalog's
per-(model, task) accuracy and the resolution effect) is signal; ``a_k`` and ``b_k`` absorb the
prior's own bias. They are fitted by least squares of the *observed* difference
``completed[r, ref] - completed[r, n]`` on a bench table in which every request ran on every
node, so that ``E[observed difference | D'] = D'`` (without the margin) on that table: a
least-squares fit is calibrated in the mean, which is what the linear floor needs. The table
must not be the one the quality model was trained on (its predictions there are in-sample);
the shipped calibration uses a fresh ``bench-data`` seed. The world's hidden
``true_completion_prob`` is never read.

``margin`` (quality points per request moved off its reference, default 0) is a pessimistic
allowance on top of the calibrated difference: with calibrated differences the floor's
tolerance is spent in expectation, and a replay's observed completion rate scatters around
that by a few tenths of a point. The shipped value is chosen on replays of *other* workload
seeds than the evaluated one (``benchmarks/replay_selection.py``).

Saved as one JSON file (``<stem>-selection.json`` beside a quality model,
:class:`SelectionFile`): format, version, the six coefficients, the margin, what they were fitted
on, and a SHA-256 of the coefficients; every field is checked on load and nothing in it is
executed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import numpy as np
import pandas as pd
from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from qlmio_opt.predictors.base import NotFittedError, ParamsMixin
from qlmio_opt.predictors.model_files import FileModel, read_header, sibling_path

__all__ = [
    "CLASSES",
    "SELECTION_FORMAT",
    "SELECTION_VERSION",
    "SelectionCalibration",
    "SelectionFile",
    "pair_differences",
    "reference_nodes",
    "selection_path",
]

SELECTION_FORMAT: Final = "qlmio-opt/selection-calibration"
SELECTION_VERSION: Final = 1
CLASSES = ("edge", "cloud")
"""Coefficient classes: the tier of the node compared with the reference."""
TERMS = ("intercept", "d_analytic", "d_learned - d_analytic")
"""The three coefficients of a class, in order."""


def selection_path(quality_model_path: str | Path) -> Path:
    """Where the selection calibration saved beside a quality model lives
    (``<stem>-selection.json``)."""
    return sibling_path(quality_model_path, "selection")


def reference_nodes(
    latency_s: np.ndarray, eligible: np.ndarray, is_cloud: np.ndarray
) -> np.ndarray:
    """``(R,)`` index of each request's lowest-latency eligible cloud node, ``-1`` if none.

    The rule of the formulation's all-cloud target and of the ``all-cloud`` baseline (ties to
    the first node).
    """
    latency = np.where(eligible & np.asarray(is_cloud, bool)[None, :], latency_s, np.inf)
    if latency.shape[1] == 0:
        return np.full(latency.shape[0], -1, dtype=np.int64)
    best = np.argmin(latency, axis=1)
    ok = np.isfinite(latency[np.arange(latency.shape[0]), best])
    return np.where(ok, best, -1).astype(np.int64)


def pair_differences(
    table: pd.DataFrame, learned: np.ndarray, analytic: np.ndarray
) -> pd.DataFrame:
    """One row per (request, cloud model as reference, other model) of a bench table.

    ``learned`` and ``analytic`` are the predicted qualities of the table's rows. Rows of the
    same (request, model) on several devices are one outcome (the world draws it per model), so
    they count once. Columns: ``request``, ``reference``, ``model``, ``cls`` (0 edge, 1 cloud),
    ``d_learned``, ``d_analytic`` and the observed ``d_observed`` (reference less other).
    """
    rows = pd.DataFrame(
        {
            "request": table["request"].to_numpy(),
            "model": table["model"].to_numpy(),
            "cloud": (table["tier"].to_numpy() == "cloud"),
            "ql": np.asarray(learned, dtype=float),
            "qa": np.asarray(analytic, dtype=float),
            "y": table["completed"].to_numpy(dtype=float),
        }
    ).drop_duplicates(["request", "model"])
    ref = rows[rows["cloud"]]
    pairs = ref.merge(rows, on="request", suffixes=("_ref", ""))
    pairs = pairs[pairs["model_ref"] != pairs["model"]]
    return pd.DataFrame(
        {
            "request": pairs["request"].to_numpy(),
            "reference": pairs["model_ref"].to_numpy(),
            "model": pairs["model"].to_numpy(),
            "cls": pairs["cloud"].to_numpy().astype(np.int64),
            "d_learned": (pairs["ql_ref"] - pairs["ql"]).to_numpy(),
            "d_analytic": (pairs["qa_ref"] - pairs["qa"]).to_numpy(),
            "d_observed": (pairs["y_ref"] - pairs["y"]).to_numpy(),
        }
    )


def _design(d_analytic: np.ndarray, d_learned: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones_like(d_analytic), d_analytic, d_learned - d_analytic])


def _coef_digest(coef: np.ndarray, margin: float) -> str:
    text = json.dumps([[float(v) for v in row] for row in coef] + [float(margin)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _exactly(expected: tuple[str, ...]) -> Callable[[list[str]], list[str]]:
    """A validator that accepts ``expected`` (as a list) only."""

    def check(value: list[str]) -> list[str]:
        if value != list(expected):
            raise ValueError(f"expected {list(expected)}; got {value!r}")
        return value

    return check


class SelectionFile(FileModel):
    """The JSON of a :class:`SelectionCalibration`."""

    format: Literal["qlmio-opt/selection-calibration"]
    version: Literal[1]
    classes: Annotated[list[str], AfterValidator(_exactly(CLASSES))]
    terms: Annotated[list[str], AfterValidator(_exactly(TERMS))]
    coef: Annotated[
        list[Annotated[list[float], Field(min_length=3, max_length=3)]],
        Field(min_length=len(CLASSES), max_length=len(CLASSES)),
    ]
    margin: float = Field(ge=0, le=1)
    sha256: str
    training_data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sha256")
    @classmethod
    def _digest_of_the_numbers(cls, sha: str, info: ValidationInfo) -> str:
        coef, margin = info.data.get("coef"), info.data.get("margin")
        if coef is not None and margin is not None and sha != _coef_digest(np.array(coef), margin):
            raise ValueError("does not match the coefficients (the file was altered)")
        return sha


class SelectionCalibration(ParamsMixin):
    """Calibrated quality differences against each request's all-cloud reference node.

    Parameters
    ----------
    margin
        Quality (as a probability) added to every calibrated difference: a pessimistic cost of
        moving a request off its reference node. ``0`` is the calibrated (mean) difference.

    Attributes
    ----------
    coef_ : numpy.ndarray
        ``(2, 3)``: per class (:data:`CLASSES`) the intercept, the weight of the analytic
        difference and the weight of the learned departure from it.
    training_data_ : dict
        What the coefficients were fitted on (rows per class, requests, observed and predicted
        mean differences).
    """

    def __init__(self, margin: float = 0.0) -> None:
        self.margin = margin

    def fit(self, table: Any, quality_model: Any, catalog: Any = None) -> SelectionCalibration:
        """Fit the coefficients on a bench table with ``quality_model``'s predictions.

        Parameters
        ----------
        table
            A bench table (``pandas.DataFrame`` or :class:`~qlmio_opt.simulator.dataset.BenchData`)
            in which every request ran on the cloud models and the others; it must not be the
            quality model's training table. Reads ``request``, ``model``, ``tier``,
            ``completed`` and the columns of the quality features only.
        quality_model
            A fitted :class:`~qlmio_opt.predictors.learned_quality.LearnedQualityModel` (or any
            model with ``features_table``, ``feature_spec_`` and ``predict_proba_features``).

        Raises
        ------
        ValueError
            If the margin is not a finite probability, or a class has fewer than 3 rows.
        """
        self._check_margin()
        table = getattr(table, "table", table)
        X = quality_model.features_table(table, catalog)
        analytic = X[:, quality_model.feature_spec_.names().index("analytic_quality")]
        learned = quality_model.predict_proba_features(X)
        pairs = pair_differences(table, learned, analytic)
        coef = np.zeros((len(CLASSES), 3))
        info: dict[str, Any] = {"requests": int(pairs["request"].nunique())}
        for k, name in enumerate(CLASSES):
            rows = pairs[pairs["cls"] == k]
            if len(rows) < 3:
                raise ValueError(f"selection calibration: only {len(rows)} {name} rows to fit")
            A = _design(rows["d_analytic"].to_numpy(), rows["d_learned"].to_numpy())
            y = rows["d_observed"].to_numpy()
            coef[k] = np.linalg.lstsq(A, y, rcond=None)[0]
            info[name] = {
                "rows": len(rows),
                "mean_observed": float(y.mean()),
                "mean_learned": float(rows["d_learned"].mean()),
                "mean_analytic": float(rows["d_analytic"].mean()),
            }
        if not np.isfinite(coef).all():
            raise ValueError("selection calibration: non-finite coefficients")
        self.coef_ = coef
        self.training_data_ = info
        return self

    def _check_margin(self) -> None:
        m = self.margin
        if isinstance(m, bool) or not isinstance(m, int | float) or not 0.0 <= float(m) <= 1.0:
            raise ValueError(f"margin must be a number in [0, 1]; got {m!r}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this SelectionCalibration is not fitted; call fit or load first")

    def differences(self, d_analytic: np.ndarray, d_learned: np.ndarray, cls: np.ndarray):
        """Calibrated differences (margin included) of difference arrays of one shape."""
        self._check_fitted()
        c = self.coef_[np.asarray(cls, dtype=np.int64)]
        return (
            c[..., 0]
            + c[..., 1] * d_analytic
            + c[..., 2] * (d_learned - d_analytic)
            + float(self.margin)
        )

    def adjust(
        self,
        quality: np.ndarray,
        analytic: np.ndarray,
        reference: np.ndarray,
        is_cloud: np.ndarray,
    ) -> np.ndarray:
        """``(R, N)`` qualities with every difference to the reference calibrated.

        Parameters
        ----------
        quality, analytic
            ``(R, N)`` learned and analytic qualities.
        reference
            ``(R,)`` reference node per request (:func:`reference_nodes`), ``-1``: none (the
            row is returned unchanged).
        is_cloud
            ``(N,)`` whether each node is in the cloud tier.
        """
        quality = np.asarray(quality, dtype=float)
        analytic = np.asarray(analytic, dtype=float)
        out = quality.copy()
        rows = np.flatnonzero(np.asarray(reference) >= 0)
        if rows.size == 0:
            return out
        ref = np.asarray(reference)[rows]
        q_ref = quality[rows, ref][:, None]
        a_ref = analytic[rows, ref][:, None]
        cls = np.broadcast_to(
            np.asarray(is_cloud, dtype=np.int64)[None, :], (rows.size, out.shape[1])
        )
        d = self.differences(a_ref - analytic[rows], q_ref - quality[rows], cls)
        adjusted = np.clip(q_ref - d, 0.0, 1.0)
        adjusted[np.arange(rows.size), ref] = quality[rows, ref]
        out[rows] = adjusted
        return out

    # -- files -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON record :meth:`save` writes (checked as :meth:`load` will read it)."""
        self._check_fitted()
        margin = float(self.margin)
        record = SelectionFile(
            format=SELECTION_FORMAT,
            version=SELECTION_VERSION,
            classes=list(CLASSES),
            terms=list(TERMS),
            coef=[[float(v) for v in row] for row in self.coef_],
            margin=margin,
            sha256=_coef_digest(self.coef_, margin),
            training_data=getattr(self, "training_data_", {}),
        )
        return record.model_dump()

    def save(self, path: str | Path) -> Path:
        """Write the calibration as JSON to ``path`` (returned)."""
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return p

    @classmethod
    def load(cls, path: str | Path) -> SelectionCalibration:
        """Read a calibration written by :meth:`save` (JSON only; every field checked).

        Raises
        ------
        ValueError
            Naming the file and the field, if anything is missing, malformed or altered.
        """
        p = Path(path)
        try:
            header = read_header(p, SelectionFile)
        except OSError as exc:
            raise ValueError(f"{p}: cannot read ({exc})") from None
        out = cls(margin=header.margin)
        out.coef_ = np.array(header.coef, dtype=float)
        out.training_data_ = header.training_data
        return out
