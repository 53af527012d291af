"""assign(): the scheduler's call, with requests as objects, dicts or a DataFrame."""

import pandas as pd
import pytest
from conftest import INSTANCES, SMALL

from qlmio_opt import InputError, Status, assign, read_instance
from qlmio_opt.app.check import check


@pytest.fixture(scope="module")
def site():
    return read_instance(INSTANCES / "window_042.json")


def test_assign_request_objects_against_an_instance(site):
    # a generous limit: these tests are about the inputs, and the default 1 s (which covers the
    # predictions too) can run out on a loaded machine, where auto then answers with the greedy
    decision = assign(site.requests[:25], site, time_limit=60.0)
    assert decision.status is Status.OPTIMAL
    assert set(decision.assignment) == {r.id for r in site.requests[:25]}
    report = check(
        site.replace(
            requests=[r.model_dump(mode="json", exclude_unset=True) for r in site.requests[:25]]
        ),
        decision,
    )
    assert report.feasible and report.objective_matches
    frame = decision.frame()
    assert list(frame.columns) == ["node", "quality", "latency_s"]
    assert decision.node_of(site.requests[0].id) == frame.loc[site.requests[0].id, "node"]


def test_assign_dicts_with_capacities_mapping(site):
    capacities = {
        "nodes": [n.model_dump(mode="json", exclude_unset=True) for n in site.nodes],
        "network": site.network.model_dump(mode="json", by_alias=True),
        "window_s": 1.0,
    }
    requests = [
        {
            "id": "a",
            "site": site.network.sites[0],
            "arrival_s": 0.2,
            "task": "ocr",
            "prompt_tokens": 40,
            "images": [{"width": 800, "height": 600, "bytes": 90_000}],
            "max_output_tokens": 32,
        },
        {
            "id": "b",
            "site": site.network.sites[-1],
            "arrival_s": 0.9,
            "task": "reasoning",
            "prompt_tokens": 300,
            "max_output_tokens": 256,
        },
    ]
    decision = assign(requests, capacities, solver="greedy")
    assert decision.status.has_assignment
    assert set(decision.assignment) == {"a", "b"}


def test_assign_dataframe_with_single_image_columns(site):
    frame = pd.DataFrame(
        {
            "id": ["q1", "q2", "q3"],
            "site": [site.network.sites[0]] * 3,
            "arrival_s": [0.1, 0.2, 0.3],
            "task": ["ocr", "chart", "general-vqa"],
            "prompt_tokens": [30, 40, 50],
            "max_output_tokens": [16, 32, 64],
            "image_width": [640, 1280, 1024],
            "image_height": [480, 720, 768],
            "image_bytes": [60_000, 200_000, 150_000],
        }
    )
    decision = assign(frame, site, objective={"mode": "quality_floor"}, time_limit=60.0)
    assert decision.status is Status.OPTIMAL
    assert len(decision.assignment) + len(decision.deferred) == 3


def test_assign_reports_bad_requests_by_field(site):
    with pytest.raises(InputError) as err:
        assign(
            [
                {
                    "id": "x",
                    "site": "nowhere",
                    "arrival_s": 0.0,
                    "task": "ocr",
                    "prompt_tokens": 1,
                    "max_output_tokens": 1,
                }
            ],
            site,
        )
    assert 'requests[0] (request "x").site: unknown site "nowhere"' in str(err.value)


def test_auto_falls_back_to_a_feasible_decision():
    site = read_instance(SMALL / "deferral.json")
    decision = assign(site.requests, site, time_limit=0.0)
    assert decision.status.has_assignment
