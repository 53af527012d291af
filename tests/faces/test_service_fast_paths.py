"""The service's cheap paths give what the slower general ones they replace give: a body parsed
without the repeated-key walk, refused with the command line's messages all the same; a solution
document encoded as FastAPI's JSONResponse encodes it; a window's predictions counted into a
histogram at once, exposed as prometheus_client's own histogram exposes them one by one."""

import json
import math

import pytest
from conftest import INSTANCES
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from qlmio_opt import Scheduler, read_instance
from qlmio_opt.domain.errors import InputError
from qlmio_opt.domain.io import parse_json
from qlmio_opt.faces.service.core import Refused, Service, encode_json
from qlmio_opt.faces.service.metrics import LATENCY_BUCKETS_S, WindowHistogram

SITE = INSTANCES / "window_042.json"


@pytest.fixture(scope="module")
def service():
    return Service(Scheduler(read_instance(SITE), solver="greedy"))


def cli_message(text: str, source: str) -> str:
    with pytest.raises(InputError) as error:
        parse_json(text, source)
    return error.value.render()


@pytest.mark.parametrize(
    "text",
    [
        '{"requests": [], "requests": []}',
        '{"requests": [{"id": "a", "id": "b"}]}',
        '{"requests": [{"id": "a", "images": [{"width": 1, "width": 2}]}]}',
        '{"requests": [' + "7" * 5000 + "]}",  # past Python's digit limit
        '{"requests": [' + "[" * 100_000 + "]" * 100_000 + "]}",
        "  ",
    ],
    ids=["repeated", "repeated-in-request", "repeated-in-image", "long-integer", "deep", "empty"],
)
def test_a_body_the_quick_parse_refuses_gets_the_command_line_s_message(service, text):
    source = "POST /v1/windows"
    with pytest.raises(Refused) as refused:
        service.decide_window(text.encode())
    assert refused.value.status == 400
    assert refused.value.error.render() == cli_message(text, source)


def test_a_window_s_answer_is_the_bytes_json_response_sends(service):
    site = read_instance(SITE)
    requests = [r.model_dump(mode="json", exclude_unset=True) for r in site.requests[:5]]
    requests[0]["prompt"] = "Qu'est-ce que c'est ? 日本語"  # non-ASCII stays as it is
    result = service.decide_window(json.dumps({"requests": requests}).encode())
    document = json.loads(result.document)
    assert result.document == JSONResponse(document).body
    assert set(document["assignment"]) | set(document["deferred"]) == {r["id"] for r in requests}
    with pytest.raises(ValueError):
        encode_json({"objective": math.nan})  # as JSONResponse refuses it


def test_a_window_histogram_is_exposed_as_the_client_s_histogram():
    values = [0.0, 0.1, 0.1000001, 0.25, 1.0, 3.3, 63.9, 64.0, 64.5, 1e6, 2.0, 0.05]
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    one_by_one = Histogram("x_seconds", "Doc.", buckets=LATENCY_BUCKETS_S, registry=theirs)
    at_once = WindowHistogram("x_seconds", "Doc.", buckets=LATENCY_BUCKETS_S, registry=ours)
    for chunk in (values[:5], [], values[5:]):
        for value in chunk:
            one_by_one.observe(value)
        at_once.observe_all(chunk)
    expected = [
        line for line in generate_latest(theirs).decode().splitlines() if "_created" not in line
    ]
    assert generate_latest(ours).decode().splitlines() == expected
