"""The analytic predictor's fast path against the way it was written before, number for number.

The fast path reads the requests in one pass, runs each image rule once per distinct image size
(the tile rule's grid search only for images over its tile limit) and computes every latency
part as one ``(R, N)`` operation; ``analytic_reference.py`` keeps the plain version. Every array
must be equal, not close: the problem, and so every solver's answer, is built from them.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from analytic_reference import reference_predict, reference_request_arrays
from conftest import INSTANCES

from qlmio_opt import Instance, read_instance
from qlmio_opt.domain.scenarios import sized_window
from qlmio_opt.predictors import AnalyticPredictor
from qlmio_opt.predictors.features import request_arrays


def odd(data: dict) -> dict:
    """Some requests without images, some with a huge or a tiny image, some with no deadline."""
    data = copy.deepcopy(data)
    requests = data["requests"]
    for r in requests[::5]:
        r["images"] = []
    for r in requests[1::7]:
        r["images"] = [{"width": 9000, "height": 300, "bytes": 900_000}]
    for r in requests[2::9]:
        r["images"] = [{"width": 1, "height": 1, "bytes": 10}] * 2
    for r in requests[3::4]:
        r.pop("deadline_s", None)
        r.pop("min_quality", None)
    return data


WINDOWS = {
    "sized-300x12": lambda: Instance.from_dict(sized_window(300, 12, 4)),
    "odd-200x6": lambda: Instance.from_dict(odd(sized_window(200, 6, 1))),
    "no-images": lambda: Instance.from_dict(
        {
            **sized_window(40, 4, 2),
            "requests": [{**r, "images": []} for r in sized_window(40, 4, 2)["requests"]],
        }
    ),
    "window_000": lambda: read_instance(INSTANCES / "window_000.json"),
    "window_061": lambda: read_instance(INSTANCES / "window_061.json"),
}


def assert_same(expected: np.ndarray, got: np.ndarray, name: str) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape, name
    np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_the_predictions_are_the_plain_versions_numbers(window: str) -> None:
    instance = WINDOWS[window]()
    expected = reference_predict(instance)
    got = AnalyticPredictor().predict(instance)
    for name in ("quality", "latency_s", "memory_gb", "eligible", "upload_bytes"):
        assert_same(getattr(expected, name), getattr(got, name), name)
    assert expected.components.keys() == got.components.keys()
    for name, values in expected.components.items():
        assert_same(values, got.components[name], name)


@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_the_request_arrays_are_the_plain_versions(window: str) -> None:
    instance = WINDOWS[window]()
    expected = reference_request_arrays(instance)
    got = request_arrays(instance)
    for name in expected.__dataclass_fields__:
        assert_same(getattr(expected, name), getattr(got, name), name)
