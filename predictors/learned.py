"""The learned predictor: quality from the learned model, everything else analytic (for now).

:class:`LearnedPredictor` follows the predictor contract of :mod:`qlmio_opt.predictors.base`.
Its quality is the calibrated completion probability of
:class:`~qlmio_opt.predictors.learned_quality.LearnedQualityModel` (trained on the benchmark
table, or loaded from a safe JSON + ``.npz`` model file); latency, memory, the latency
components and eligibility come unchanged from
:class:`~qlmio_opt.predictors.analytic.AnalyticPredictor` until a learned latency model exists.
Ineligible pairs get quality 0, as in the analytic predictor. ``source`` is ``"learned"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qlmio_opt.catalog import Catalog
from qlmio_opt.instance import Instance
from qlmio_opt.predictors.analytic import AnalyticPredictor
from qlmio_opt.predictors.base import Predictions
from qlmio_opt.predictors.learned_quality import LearnedQualityModel

__all__ = ["LearnedPredictor"]


class LearnedPredictor:
    """Learned quality, analytic latency and memory.

    Parameters
    ----------
    quality_model_path
        A model written by :meth:`LearnedQualityModel.save` (``.json``, ``.npz`` or their
        common stem); :meth:`fit` without data loads it.
    catalog
        Catalog for the analytic parts and the features; default: each instance's own.
    include_wait
        Passed to :class:`AnalyticPredictor`.
    quality_params
        Settings of the :class:`LearnedQualityModel` trained by ``fit(table)``.
    random_state
        Seed of that training.

    Attributes
    ----------
    quality_model_ : LearnedQualityModel
    analytic_ : AnalyticPredictor
    """

    def __init__(
        self,
        quality_model_path: str | Path | None = None,
        catalog: Catalog | None = None,
        include_wait: bool = True,
        quality_params: dict[str, Any] | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.quality_model_path = quality_model_path
        self.catalog = catalog
        self.include_wait = include_wait
        self.quality_params = quality_params
        self.random_state = random_state

    def fit(self, data: Any = None, y: Any = None) -> LearnedPredictor:
        """Train the quality model on a bench table, or load it from ``quality_model_path``.

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
            if self.quality_model_path is None:
                raise ValueError("LearnedPredictor.fit needs a bench table or quality_model_path")
            model = LearnedQualityModel.load(self.quality_model_path, catalog=self.catalog)
        else:
            table = getattr(data, "table", data)
            params = dict(self.quality_params or {})
            params.setdefault("random_state", self.random_state)
            model = LearnedQualityModel(catalog=self.catalog, **params).fit(table)
        self.quality_model_ = model
        self.analytic_ = AnalyticPredictor(catalog=self.catalog, include_wait=self.include_wait)
        self.analytic_.fit()
        return self

    def predict(self, instance: Instance) -> Predictions:
        """Predictions for every (request, node) pair of ``instance``.

        Raises
        ------
        ValueError
            If the predictor is not fitted.
        """
        if not hasattr(self, "quality_model_"):
            raise ValueError("this LearnedPredictor is not fitted; call fit first")
        base = self.analytic_.predict(instance)
        quality = self.quality_model_.predict_proba_instance(instance, catalog=self.catalog)
        return Predictions(
            quality=np.where(base.eligible, quality, 0.0),
            latency_s=base.latency_s,
            memory_gb=base.memory_gb,
            eligible=base.eligible,
            upload_bytes=base.upload_bytes,
            components=base.components,
            congestion=base.congestion,
            source="learned",
        )
