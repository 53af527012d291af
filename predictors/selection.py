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

Saved as one JSON file (``<stem>-selection.json`` beside a quality model): format, version, the
six coefficients, the margin, what they were fitted on, and a SHA-256 of the coefficients; every
field is checked on load and nothing in it is executed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qlmio_opt.predictors.model_files import read_model_json, sibling_path

__all__ = [
    "CLASSES",
    "SELECTION_FORMAT",
    "SELECTION_VERSION",
    "SelectionCalibration",
    "pair_differences",
    "reference_nodes",
    "selection_path",
]

SELECTION_FORMAT = "qlmio-opt/selection-calibration"
SELECTION_VERSION = 1
CLASSES = ("edge", "cloud")
"""Coefficient classes: the tier of the node compared with the reference."""


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


class SelectionCalibration:
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

    def differences(self, d_analytic: np.ndarray, d_learned: np.ndarray, cls: np.ndarray):
        """Calibrated differences (margin included) of difference arrays of one shape."""
        if not hasattr(self, "coef_"):
            raise ValueError("this SelectionCalibration is not fitted; call fit or load first")
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
        if not hasattr(self, "coef_"):
            raise ValueError("this SelectionCalibration is not fitted; call fit or load first")
        return {
            "format": SELECTION_FORMAT,
            "version": SELECTION_VERSION,
            "classes": list(CLASSES),
            "terms": ["intercept", "d_analytic", "d_learned - d_analytic"],
            "coef": [[float(v) for v in row] for row in self.coef_],
            "margin": float(self.margin),
            "sha256": _coef_digest(self.coef_, self.margin),
            "training_data": getattr(self, "training_data_", {}),
        }

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

        def fail(field: str, problem: str) -> ValueError:
            return ValueError(f"{p}: field '{field}': {problem}")

        try:
            meta = read_model_json(p)  # size and nesting bounded; ValueError if not an object
        except OSError as exc:
            raise ValueError(f"{p}: cannot read ({exc})") from None
        for key in ("format", "version", "classes", "coef", "margin", "sha256"):
            if key not in meta:
                raise fail(key, "missing")
        if meta["format"] != SELECTION_FORMAT:
            raise fail("format", f"expected {SELECTION_FORMAT!r}, got {meta['format']!r}")
        if meta["version"] != SELECTION_VERSION:
            raise fail("version", f"unsupported version {meta['version']!r}")
        if meta["classes"] != list(CLASSES):
            raise fail("classes", f"expected {list(CLASSES)}")
        coef = meta["coef"]
        if (
            not isinstance(coef, list)
            or len(coef) != len(CLASSES)
            or any(not isinstance(row, list) or len(row) != 3 for row in coef)
            or any(
                isinstance(v, bool) or not isinstance(v, int | float) for row in coef for v in row
            )
        ):
            raise fail("coef", f"must be {len(CLASSES)} lists of 3 numbers")
        coef_arr = np.array(coef, dtype=float)
        if not np.isfinite(coef_arr).all():
            raise fail("coef", "must be finite")
        margin = meta["margin"]
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin <= 1:
            raise fail("margin", "must be a number in [0, 1]")
        if meta["sha256"] != _coef_digest(coef_arr, margin):
            raise fail("sha256", "does not match the coefficients (the file was altered)")
        out = cls(margin=float(margin))
        out.coef_ = coef_arr
        out.training_data_ = meta.get("training_data", {})
        return out
