"""scikit-learn's estimator contract, for every predictor class that claims it.

``sklearn.utils.estimator_checks.check_estimator`` does not apply: these models' ``fit`` takes a
bench table (or, for the selection calibration, a table and a quality model; for the predictors,
a table or nothing), not ``(X, y)`` arrays. What does apply is checked here: settings stored
unchanged by ``__init__`` and nothing else, ``get_params`` / ``set_params`` round trips (nested
ones too), ``sklearn.base.clone``, ``fit`` returning ``self`` with learned attributes ending in
``_``, invalid settings refused by ``fit`` by name, and a clear error before ``fit``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shared_fits
from sklearn.base import clone

from qlmio_opt import read_instance
from qlmio_opt.predictors import DEFAULT_LEARNED
from qlmio_opt.predictors.analytic import AnalyticPredictor
from qlmio_opt.predictors.base import NotFittedError
from qlmio_opt.predictors.learned import LearnedPredictor
from qlmio_opt.predictors.learned_latency import LearnedLatencyModel
from qlmio_opt.predictors.learned_quality import LearnedQualityModel
from qlmio_opt.predictors.learned_torch import TorchQualityModel
from qlmio_opt.predictors.selection import SelectionCalibration

WINDOW = Path(__file__).resolve().parents[2] / "instances" / "window_042.json"


def _table() -> Any:
    return shared_fits.bench().table


# name: (a small unfitted estimator, fit it, use it before fit, a setting and a valid new value,
#        an invalid value of that setting)
ESTIMATORS: dict[str, tuple[Callable[[], Any], Callable[[Any], Any], Callable[[Any], Any]]] = {
    "analytic": (
        lambda: AnalyticPredictor(include_wait=False),
        lambda est: est.fit(),
        lambda est: est.predict(read_instance(WINDOW)),  # nothing to learn: usable unfitted
    ),
    "quality": (
        lambda: LearnedQualityModel(max_iter=3, text_buckets=0, random_state=1),
        lambda est: est.fit(_table()),
        lambda est: est.predict_proba_table(_table()),
    ),
    "latency": (
        lambda: LearnedLatencyModel(max_iter=3, random_state=1),
        lambda est: est.fit(_table()),
        lambda est: est.predict_table(_table()),
    ),
    "torch": (
        lambda: TorchQualityModel(hidden_sizes=(4,), text_buckets=0, epochs=1, random_state=1),
        lambda est: est.fit(_table()),
        lambda est: est.predict_proba_table(_table()),
    ),
    "selection": (
        lambda: SelectionCalibration(margin=0.01),
        lambda est: est.fit(_table(), shared_fits.quality_model()),
        lambda est: est.differences(np.zeros(2), np.zeros(2), np.zeros(2)),
    ),
    "learned": (
        lambda: LearnedPredictor(DEFAULT_LEARNED, selection_margin=0.01),
        lambda est: est.fit(),
        lambda est: est.predict(read_instance(WINDOW)),
    ),
}

INVALID = {
    "quality": ("max_depth", 0, "max_depth: Input should be greater than or equal to 1"),
    "latency": ("learning_rate", "0.1", "learning_rate: Input should be a valid number"),
    "torch": ("validation_fraction", 1.0, "validation_fraction: Input should be less than 1"),
    "selection": ("margin", 2.0, "margin must be a number in"),
    "learned": ("selection_margin", 2.0, "margin must be a number in"),
}


def _available(names: list[str]) -> list[Any]:
    """``names`` as parameters, the torch one skipped without torch (training needs it)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        skip = pytest.mark.skip(reason="training needs the torch extra")
        return [pytest.param(n, marks=skip) if n == "torch" else n for n in names]
    return list(names)


@pytest.fixture(params=_available(list(ESTIMATORS)))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_init_stores_the_settings_and_nothing_else(name):
    est = ESTIMATORS[name][0]()
    params = est.get_params(deep=False)
    assert vars(est) == params
    assert sorted(params) == sorted(type(est)().get_params(deep=False))  # defaults everywhere


def test_get_set_params_round_trip_and_clone(name):
    est = ESTIMATORS[name][0]()
    params = est.get_params()
    twin = type(est)().set_params(**est.get_params(deep=False))
    assert twin.get_params() == params
    copied = clone(est)
    assert type(copied) is type(est)
    assert copied.get_params() == params
    with pytest.raises(ValueError, match="has no setting 'no_such_setting'"):
        est.set_params(no_such_setting=1)


def test_fit_returns_self_with_learned_attributes_and_leaves_the_settings(name):
    make, fit, use = ESTIMATORS[name]
    est = make()
    before = est.get_params(deep=False)
    assert fit(est) is est
    learned = {a for a in set(vars(est)) - set(before) if not a.startswith("_")}  # not caches
    assert learned and all(a.endswith("_") for a in learned), learned
    assert est.get_params(deep=False) == before
    use(est)  # usable after fit
    assert not set(vars(clone(est))) - set(before)  # a clone is unfitted


@pytest.mark.parametrize("fitted_kind", _available([n for n in ESTIMATORS if n != "analytic"]))
def test_use_before_fit_is_a_clear_error(fitted_kind):
    make, _, use = ESTIMATORS[fitted_kind]
    with pytest.raises(NotFittedError, match="not fitted"):
        use(make())


@pytest.mark.parametrize("kind", _available(list(INVALID)))
def test_invalid_settings_are_refused_by_fit_by_name(kind):
    make, fit, _ = ESTIMATORS[kind]
    setting, value, message = INVALID[kind]
    est = make().set_params(**{setting: value})  # set_params stores, fit validates
    with pytest.raises(ValueError, match=message):
        fit(est)


def test_nested_settings_go_through_get_and_set_params():
    predictor = LearnedPredictor(DEFAULT_LEARNED, selection=SelectionCalibration(margin=0.01))
    assert predictor.get_params()["selection__margin"] == 0.01
    predictor.set_params(selection__margin=0.02)
    assert predictor.selection.margin == 0.02
    assert "selection__margin" not in predictor.get_params(deep=False)
