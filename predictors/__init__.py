"""Quality and latency predictors (installed as ``qlmio_opt.predictors``).

Every predictor maps a validated instance to :class:`Predictions` (quality, latency and memory
per request-node pair). :func:`predict` runs the chosen one and applies the instance's overrides.
"""

from __future__ import annotations

from qlmio_opt.instance import Instance
from qlmio_opt.predictors.analytic import AnalyticPredictor
from qlmio_opt.predictors.base import Predictions, Predictor, apply_overrides, needs_predictor
from qlmio_opt.predictors.features import RequestArrays, request_arrays

PREDICTORS: dict[str, type] = {"analytic": AnalyticPredictor}


def get_predictor(name: str | Predictor = "analytic") -> Predictor:
    """A fitted predictor by registry name, or ``name`` itself if it is already a predictor."""
    if not isinstance(name, str):
        return name
    try:
        cls = PREDICTORS[name]
    except KeyError:
        raise ValueError(f'unknown predictors "{name}"; choose from {sorted(PREDICTORS)}') from None
    return cls().fit()


def predict(instance: Instance, predictor: str | Predictor = "analytic") -> Predictions:
    """Predictions for every pair of ``instance``, with its overrides applied."""
    base = get_predictor(predictor).predict(instance) if needs_predictor(instance) else None
    return apply_overrides(instance, base)


__all__ = [
    "PREDICTORS",
    "AnalyticPredictor",
    "Predictions",
    "Predictor",
    "RequestArrays",
    "apply_overrides",
    "get_predictor",
    "predict",
    "request_arrays",
]
