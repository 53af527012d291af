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
    """A fitted predictor by registry name, a learned predictor from the path of a saved quality
    model (``.json``, written by ``qlmio-opt train``), or ``name`` itself if it is already a
    predictor. Loading a model file never executes code from it."""
    if not isinstance(name, str):
        return name
    if name in PREDICTORS:
        return PREDICTORS[name]().fit()
    if name.endswith((".json", ".npz")) or "/" in name:
        from pathlib import Path

        from qlmio_opt.predictors.learned import LearnedPredictor

        if not Path(name).with_suffix(".json").exists():
            raise ValueError(f"no saved predictor model at {name} (expected a .json and a .npz)")
        try:
            return LearnedPredictor(quality_model_path=name).fit()
        except OSError as exc:  # a missing or unreadable array file named by the JSON
            raise ValueError(str(exc)) from None
    raise ValueError(
        f'unknown predictors "{name}"; choose from {sorted(PREDICTORS)} or give the path of a '
        "model saved by qlmio-opt train"
    )


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
