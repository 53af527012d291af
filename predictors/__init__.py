"""Quality and latency predictors (installed as ``qlmio_opt.predictors``).

Every predictor maps a validated instance to :class:`Predictions` (quality, latency and memory
per request-node pair). :func:`predict` runs the chosen one and applies the instance's overrides.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

from qlmio_opt.domain.instance import Instance
from qlmio_opt.predictors.analytic import AnalyticPredictor
from qlmio_opt.predictors.base import Predictions, Predictor, apply_overrides, needs_predictor
from qlmio_opt.predictors.features import RequestArrays, request_arrays

PREDICTORS: dict[str, type] = {"analytic": AnalyticPredictor}

TRAINED_DIR = Path(__file__).resolve().parent / "trained"
"""Where the shipped trained models live (see ``MODEL_CARD.md`` there)."""

DEFAULT_LEARNED = TRAINED_DIR / "default.json"
"""The shipped learned predictor (quality model; its latency model is ``default-latency.json``)."""

_ANALYTIC_DEFAULTS = {"catalog": None, "include_wait": True}

PREDICTOR_NAMES: tuple[str, ...] = ("analytic", "learned")
"""Names :func:`get_predictor` accepts (besides the path of a saved model)."""


@lru_cache(maxsize=8)
def _load_learned(path: str):
    from qlmio_opt.predictors.learned import LearnedPredictor

    return LearnedPredictor(quality_model_path=path).fit()


def get_predictor(name: str | Predictor = "analytic") -> Predictor:
    """A fitted predictor by name (``analytic``, or ``learned``: the shipped trained models), a
    learned predictor from the path of a saved quality model (``.json``, written by
    ``qlmio-opt train``; the latency model beside it is loaded too), or ``name`` itself if it is
    already a predictor. Loading a model file never executes code from it; loaded models are
    cached per path for the life of the process."""
    if not isinstance(name, str):
        return name
    if name in PREDICTORS:
        return _with_spec(PREDICTORS[name]().fit(), name)
    spec = name
    if name == "learned":
        name = str(DEFAULT_LEARNED)
    if name.endswith((".json", ".npz")) or "/" in name:
        path = Path(name).with_suffix(".json")
        if not path.exists():
            raise ValueError(f"no saved predictor model at {name} (expected a .json and a .npz)")
        try:
            # a shallow copy shares the cached fitted models but records this spelling of the spec
            return _with_spec(copy.copy(_load_learned(str(path.resolve()))), spec)
        except OSError as exc:  # a missing or unreadable array file named by the JSON
            raise ValueError(str(exc)) from None
    raise ValueError(
        f'unknown predictors "{name}"; choose from {list(PREDICTOR_NAMES)} or give the path of a '
        "model saved by qlmio-opt train"
    )


def _with_spec(predictor: Predictor, spec: str) -> Predictor:
    """``predictor`` recording the spec it was loaded by (read by :func:`predictor_spec`)."""
    # the Predictor protocol declares no spec_: it is recorded on any predictor object
    predictor.spec_ = spec  # type: ignore[attr-defined]
    return predictor


def predictor_spec(predictor: str | Predictor) -> str:
    """What a solution records for ``predictor``: the spec :func:`get_predictor` was given
    (``analytic``, ``learned`` or a model path as the user wrote it), never a class name.

    A predictor object built in code (not through :func:`get_predictor`) has no spec that could
    rebuild it; it is recorded as ``custom:<ClassName>`` and a checker must be handed it.
    """
    if isinstance(predictor, str):
        return predictor
    spec = getattr(predictor, "spec_", None)
    if isinstance(spec, str):
        return spec
    if type(predictor) is AnalyticPredictor and predictor.get_params() == _ANALYTIC_DEFAULTS:
        return "analytic"
    return f"custom:{type(predictor).__name__}"


def predict(instance: Instance, predictor: str | Predictor = "analytic") -> Predictions:
    """Predictions for every pair of ``instance``, with its overrides applied."""
    base = get_predictor(predictor).predict(instance) if needs_predictor(instance) else None
    return apply_overrides(instance, base)


__all__ = [
    "DEFAULT_LEARNED",
    "PREDICTORS",
    "PREDICTOR_NAMES",
    "TRAINED_DIR",
    "AnalyticPredictor",
    "Predictions",
    "Predictor",
    "RequestArrays",
    "apply_overrides",
    "get_predictor",
    "predict",
    "predictor_spec",
    "request_arrays",
]
