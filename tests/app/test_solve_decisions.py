"""A solution's decisions, built without validation, against validated ones.

``to_solution`` builds one decision per request with ``app.solve._decision`` (what pydantic's
``model_construct`` does, without its loop over the fields): the ids come from the validated
instance, the figures are Python floats. Each must be the same object, field for field and in
JSON, as a validated ``RequestDecision``, and as frozen.
"""

from __future__ import annotations

import pydantic
import pytest
from conftest import INSTANCES

from qlmio_opt import read_instance, solve
from qlmio_opt.app.solve import _decision
from qlmio_opt.domain.solution import RequestDecision, Solution


@pytest.mark.parametrize(
    "fields",
    [
        {"request": "r0", "node": "edge-1", "quality": 0.75, "latency_s": 2.5},
        {"request": "r 1", "node": None, "quality": None, "latency_s": None},
        {"request": "r2", "node": "cloud", "quality": 0.5, "latency_s": None},
    ],
)
def test_a_decision_is_the_validated_one(fields: dict) -> None:
    # what _decision copies from model_construct holds for RequestDecision
    assert RequestDecision.__pydantic_post_init__ is None
    assert RequestDecision.model_config.get("extra") != "allow"
    built, validated = _decision(**fields), RequestDecision(**fields)
    assert built == validated
    assert built.model_fields_set == validated.model_fields_set
    assert built.model_dump() == validated.model_dump()
    assert built.model_dump_json() == validated.model_dump_json()
    with pytest.raises(pydantic.ValidationError):
        built.node = "elsewhere"  # frozen, as the validated one


def test_a_solutions_decisions_survive_a_json_round_trip() -> None:
    """Reading the solution back validates every decision: each must pass and be equal."""
    solution = solve(read_instance(INSTANCES / "window_007.json"), "greedy")
    again = Solution.model_validate_json(solution.model_dump_json())
    assert again.requests == solution.requests
    assert any(d.node is None for d in solution.requests) or solution.deferred == ()
