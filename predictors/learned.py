"""The learned predictor: learned quality and latency on top of the analytic physics.

:class:`LearnedPredictor` follows the predictor contract of :mod:`qlmio_opt.predictors.base`.
Its quality is the calibrated completion probability of
:class:`~qlmio_opt.predictors.learned_quality.LearnedQualityModel`. With a
:class:`~qlmio_opt.predictors.learned_latency.LearnedLatencyModel` too, the latency is the
analytic window wait plus the learned stand-alone latency, and the latency components carry the
learned output length (``output_tokens``, and ``decode_s`` = that length at the analytic
per-token time), so the formulation's congestion curve uses it as well. Memory, eligibility and
the other components come from :class:`~qlmio_opt.predictors.analytic.AnalyticPredictor`.
Ineligible pairs get quality 0 and infinite latency, as in the analytic predictor. ``source``
is ``"learned"``.

With a :class:`~qlmio_opt.predictors.selection.SelectionCalibration` (``selection``), the
quality of every pair other than the request's all-cloud reference node (its lowest-latency
eligible cloud node) is re-expressed as the reference's quality less a *calibrated difference*:
the differences are what the ``quality_floor`` objective spends, and an optimiser picks the pairs
whose difference is most under-predicted (see :mod:`qlmio_opt.predictors.selection`).

With a :class:`~qlmio_opt.predictors.learned_load_latency.LoadLatencyModel` (``load_latency``),
the latency is instead the engine-aware analytic latency of each pair in its node's live state
times the learned, bounded correction, placed so that the formulation's own state term completes
it exactly (see that module); pairs outside the model's training support keep the analytic
latency, and the predictions' ``report`` counts them by reason.

Saved models are found by a common stem: ``<stem>.json`` / ``.npz`` is the quality model,
``<stem>-latency.json`` / ``.npz`` the latency model (optional: without it, latency stays
analytic), ``<stem>-load-latency.json`` / ``.npz`` the latency model under load (optional; the
shipped models have none) and ``<stem>-selection.json`` the selection calibration (optional:
without it, the pair qualities are used as they are).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.instance import Instance
from qlmio_opt.predictors.analytic import AnalyticPredictor
from qlmio_opt.predictors.base import NotFittedError, ParamsMixin, Predictions
from qlmio_opt.predictors.learned_latency import LearnedLatencyModel
from qlmio_opt.predictors.learned_load_latency import LoadLatencyModel
from qlmio_opt.predictors.learned_quality import LearnedQualityModel
from qlmio_opt.predictors.model_files import read_model_json, sibling_path
from qlmio_opt.predictors.selection import SelectionCalibration, reference_nodes, selection_path

__all__ = [
    "QUALITY_FAMILIES",
    "LearnedPredictor",
    "latency_model_path",
    "load_latency_model_path",
    "load_quality_model",
]


QUALITY_FAMILIES = ("sklearn", "torch")


def load_quality_model(path: str | Path, catalog: Catalog | None = None) -> Any:
    """A saved quality model of either family, chosen by the ``format`` field of its JSON.

    Raises
    ------
    ValueError
        If the file is not a quality model of a known family (or fails the family's checks).
    """
    from qlmio_opt.predictors import learned_torch

    p = Path(path)
    json_path = p.with_suffix(".json") if p.suffix in (".json", ".npz") else Path(f"{p}.json")
    try:
        fmt = read_model_json(json_path).get("format")
    except (OSError, ValueError):
        fmt = None  # let the default loader report what is wrong, naming the field
    if fmt == learned_torch.MODEL_FORMAT:
        return learned_torch.TorchQualityModel.load(path, catalog=catalog)
    return LearnedQualityModel.load(path, catalog=catalog)


def latency_model_path(quality_model_path: str | Path) -> Path:
    """Where the latency model saved beside a quality model lives (``<stem>-latency.json``)."""
    return sibling_path(quality_model_path, "latency")


def load_latency_model_path(quality_model_path: str | Path) -> Path:
    """Where the latency model under load saved beside a quality model lives
    (``<stem>-load-latency.json``)."""
    return sibling_path(quality_model_path, "load-latency")


class LearnedPredictor(ParamsMixin):
    """Learned quality and latency, analytic memory.

    scikit-learn's estimator contract (:class:`~qlmio_opt.predictors.base.ParamsMixin`);
    ``fit`` takes a bench table or nothing (load the saved models).

    Parameters
    ----------
    quality_model_path
        A model written by :meth:`LearnedQualityModel.save` (``.json``, ``.npz`` or their
        common stem); :meth:`fit` without data loads it, and the latency model beside it
        (:func:`latency_model_path`) if there is one.
    learn_latency
        Whether ``fit(table)`` trains a latency model too (otherwise latency stays analytic).
    quality_family
        ``"sklearn"`` (gradient boosting, the default) or ``"torch"`` (a small network under
        the ``torch`` extra, :class:`~qlmio_opt.predictors.learned_torch.TorchQualityModel`),
        for ``fit(table)``; a loaded file says its own family.
    catalog
        Catalog for the analytic parts and the features; default: each instance's own.
    include_wait
        Passed to :class:`AnalyticPredictor`.
    quality_params, latency_params
        Settings of the models trained by ``fit(table)``.
    random_state
        Seed of that training.
    selection
        The selection calibration of the quality differences: ``None`` (default) loads
        ``<stem>-selection.json`` beside ``quality_model_path`` when it exists (the shipped
        models have one) and uses none after ``fit(table)``; ``False``: none; a path: that
        file; a fitted :class:`~qlmio_opt.predictors.selection.SelectionCalibration`: that one.
        ``fit(table)`` never fits it on its own training table (in-sample differences are
        biased); use :meth:`fit_selection` with another table.
    selection_margin
        If given, replaces the calibration's ``margin`` (quality per request moved off its
        reference node).
    load_latency
        The latency model under load: ``None`` (default) loads ``<stem>-load-latency.json``
        beside ``quality_model_path`` when it exists (the shipped models have none) and uses
        none after ``fit(table)``; ``False``: none; a path: that file; a fitted
        :class:`~qlmio_opt.predictors.learned_load_latency.LoadLatencyModel`: that one (it
        trains on a state table, ``bench-data --state``, not on ``fit``'s table).

    Attributes
    ----------
    quality_model_ : LearnedQualityModel or TorchQualityModel
    latency_model_ : LearnedLatencyModel or None
    selection_ : SelectionCalibration or None
    load_latency_ : LoadLatencyModel or None
    analytic_ : AnalyticPredictor
    """

    def __init__(
        self,
        quality_model_path: str | Path | None = None,
        learn_latency: bool = True,
        quality_family: str = "sklearn",
        catalog: Catalog | None = None,
        include_wait: bool = True,
        quality_params: dict[str, Any] | None = None,
        latency_params: dict[str, Any] | None = None,
        random_state: int | None = 0,
        selection: str | Path | SelectionCalibration | bool | None = None,
        selection_margin: float | None = None,
        load_latency: str | Path | LoadLatencyModel | bool | None = None,
    ) -> None:
        self.quality_model_path = quality_model_path
        self.learn_latency = learn_latency
        self.quality_family = quality_family
        self.catalog = catalog
        self.include_wait = include_wait
        self.quality_params = quality_params
        self.latency_params = latency_params
        self.random_state = random_state
        self.selection = selection
        self.selection_margin = selection_margin
        self.load_latency = load_latency

    def fit(self, data: Any = None, y: Any = None) -> LearnedPredictor:
        """Train the models on a bench table, or load them from ``quality_model_path``.

        Parameters
        ----------
        data
            A bench table (``pandas.DataFrame``) or a
            :class:`~qlmio_opt.simulator.dataset.BenchData`; ``None`` loads the model file.
        y
            Ignored (the target is the table's ``completed``).

        Returns
        -------
        LearnedPredictor
            ``self``.

        Raises
        ------
        ValueError
            If there is neither data nor a model path, or the model file is refused.
        """
        if data is None:
            model, latency = self._load_models()
        else:
            model, latency = self._train_models(getattr(data, "table", data))
        self.quality_model_ = model
        self.latency_model_ = latency
        self.selection_ = self._selection(beside=data is None)
        self.load_latency_ = self._load_latency(beside=data is None)
        self.analytic_ = AnalyticPredictor(catalog=self.catalog, include_wait=self.include_wait)
        self.analytic_.fit()
        return self

    def _load_models(self) -> tuple[Any, LearnedLatencyModel | None]:
        """The quality model at ``quality_model_path`` and the latency model beside it."""
        if self.quality_model_path is None:
            raise ValueError("LearnedPredictor.fit needs a bench table or quality_model_path")
        model = load_quality_model(self.quality_model_path, catalog=self.catalog)
        latency_path = latency_model_path(self.quality_model_path)
        if not latency_path.exists():
            return model, None
        return model, LearnedLatencyModel.load(latency_path, catalog=self.catalog)

    def _train_models(self, table: Any) -> tuple[Any, LearnedLatencyModel | None]:
        """A quality model of ``quality_family`` and (with ``learn_latency``) a latency model
        trained on ``table``, each seeded with ``random_state`` unless its params say."""
        if self.quality_family not in QUALITY_FAMILIES:
            raise ValueError(
                f"quality_family must be one of {QUALITY_FAMILIES}; got {self.quality_family!r}"
            )
        family: Any = LearnedQualityModel
        if self.quality_family == "torch":
            from qlmio_opt.predictors.learned_torch import TorchQualityModel

            family = TorchQualityModel
        params = {"random_state": self.random_state, **(self.quality_params or {})}
        model = family(catalog=self.catalog, **params).fit(table)
        if not self.learn_latency:
            return model, None
        params = {"random_state": self.random_state, **(self.latency_params or {})}
        return model, LearnedLatencyModel(catalog=self.catalog, **params).fit(table)

    def _selection(self, beside: bool) -> SelectionCalibration | None:
        sel = self.selection
        if sel is False:
            return None
        if sel is None or sel is True:
            path = selection_path(self.quality_model_path) if self.quality_model_path else None
            if not beside or path is None or not path.exists():
                if sel is True:
                    raise ValueError(f"no selection calibration at {path}")
                return None
            sel = path
        if not isinstance(sel, SelectionCalibration):
            sel = SelectionCalibration.load(sel)
        elif not hasattr(sel, "coef_"):
            raise ValueError("the selection calibration given is not fitted")
        if self.selection_margin is not None:
            fitted = sel
            sel = SelectionCalibration(margin=self.selection_margin)
            sel._check_margin()
            sel.coef_ = fitted.coef_
            sel.training_data_ = getattr(fitted, "training_data_", {})
        return sel

    def _load_latency(self, beside: bool) -> LoadLatencyModel | None:
        """The latency model under load that ``load_latency`` asks for."""
        choice = self.load_latency
        if choice is False:
            return None
        if choice is None or choice is True:
            path = self.quality_model_path
            found = load_latency_model_path(path) if path else None
            if not beside or found is None or not found.exists():
                if choice is True:
                    raise ValueError(f"no latency model under load at {found}")
                return None
            choice = found
        if isinstance(choice, LoadLatencyModel):
            if not hasattr(choice, "rho_trees_"):
                raise ValueError("the latency model under load given is not fitted")
            return choice
        return LoadLatencyModel.load(choice, catalog=self.catalog)

    def fit_selection(self, table: Any, margin: float = 0.0) -> LearnedPredictor:
        """Fit the selection calibration on ``table`` (a bench table the quality model was
        *not* trained on) and use it from now on; returns ``self``."""
        if not hasattr(self, "quality_model_"):
            raise NotFittedError("this LearnedPredictor is not fitted; call fit first")
        self.selection_ = SelectionCalibration(margin=margin).fit(
            table, self.quality_model_, self.catalog
        )
        return self

    def predict(self, instance: Instance) -> Predictions:
        """Predictions for every (request, node) pair of ``instance``.

        Raises
        ------
        ValueError
            If the predictor is not fitted.
        """
        if not hasattr(self, "quality_model_"):
            raise NotFittedError("this LearnedPredictor is not fitted; call fit first")
        base = self.analytic_.predict(instance)
        quality = self.quality_model_.predict_proba_instance(instance, catalog=self.catalog)
        latency, components = base.latency_s, dict(base.components)
        report: dict[str, float] = {}
        latency_model = getattr(self, "latency_model_", None)
        load_model = getattr(self, "load_latency_", None)
        if load_model is not None and base.shape[0]:
            adjusted, report = load_model.adjust(instance, base)
            latency, components = adjusted.latency_s, dict(adjusted.components)
        elif latency_model is not None and base.shape[0]:
            latency, components = self._learned_latency(latency_model, instance, base)
        selection = getattr(self, "selection_", None)
        if selection is not None and base.shape[0]:
            is_cloud = np.array([n.tier == "cloud" for n in instance.nodes], dtype=bool)
            reference = reference_nodes(latency, base.eligible, is_cloud)
            quality = selection.adjust(quality, base.quality, reference, is_cloud)
        return Predictions(
            quality=np.where(base.eligible, quality, 0.0),
            latency_s=latency,
            memory_gb=base.memory_gb,
            eligible=base.eligible,
            upload_bytes=base.upload_bytes,
            components=components,
            congestion=base.congestion,
            source="learned",
            report=report,
        )

    def _learned_latency(
        self, model: LearnedLatencyModel, instance: Instance, base: Predictions
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The learned stand-alone latency plus the analytic wait, and the components with the
        learned output length (unreachable pairs keep their analytic, infinite, values)."""
        parts = base.components
        ok = base.eligible
        # unreachable pairs have no finite transfer time: give the trees a finite stand-in
        transfer = np.where(ok, parts["transfer_s"], 0.0)
        rtt = np.where(ok, parts["rtt_s"], 0.0)
        learned = model.predict_instance(instance, transfer, rtt, self.catalog, p90=False)
        output = learned["output_tokens"]
        per_token = np.divide(
            parts["decode_s"],
            parts["output_tokens"],
            out=np.zeros(base.shape),
            where=parts["output_tokens"] > 0,
        )
        components = dict(parts)
        components["output_tokens"] = np.where(ok, output, parts["output_tokens"])
        components["decode_s"] = np.where(ok, output * per_token, parts["decode_s"])
        latency = np.where(ok, parts["wait_s"] + learned["latency_s"], np.inf)
        return latency, components
