"""Hostile but well-formed instances through the command line: solved (0), refused as bad input
naming the field (2) or reported infeasible (3), never an internal error (1) or a traceback."""

import json

import pytest
from conftest import SMALL

from qlmio_opt.faces.cli import EXIT_INFEASIBLE, EXIT_INPUT, EXIT_OK, main


def _objective(**values):
    return lambda d: d["objective"].update(values)


def _links(**values):
    return lambda d: [link.update(values) for link in d["network"]["links"]]


def _model(**values):
    return lambda d: d["catalog"]["models"]["toy-vlm"].update(values)


def _device(**values):
    return lambda d: d["catalog"]["devices"]["toy-gpu"].update(values)


def _request_id(value):
    return lambda d: d["requests"][0].update(id=value)


def _empty(d):
    d["requests"] = []


def _window(seconds):
    def edit(d):
        d["window_s"] = seconds
        for r in d["requests"]:
            r["arrival_s"] = 0.0

    return edit


# case -> (edit of instances/small/analytic.json, the field an exit 2 must name, or None when
# the case must solve or be reported infeasible)
CASES = {
    "both weights 0": (_objective(latency_weight=0.0, quality_weight=0.0), None),
    "latency_scale_s 5e-324": (_objective(latency_scale_s=5e-324), "objective.latency_scale_s"),
    "latency_scale_s 1e-6": (_objective(latency_scale_s=1e-6), None),
    "bandwidth 1e-300": (_links(bandwidth_mbps=1e-300), "bandwidth_mbps"),
    "bandwidth 1e-3": (_links(bandwidth_mbps=1e-3), None),
    "rtt 0": (_links(rtt_ms=0.0), None),
    "kv_bytes_per_token 1e300": (
        _model(kv_bytes_per_token=1e300),
        "catalog.models.toy-vlm.kv_bytes_per_token",
    ),
    "weights_gb 1e-300": (_model(weights_gb=1e-300), "catalog.models.toy-vlm.weights_gb"),
    "prefill_tflops 1e300": (
        _device(prefill_tflops=1e300),
        "catalog.devices.toy-gpu.prefill_tflops",
    ),
    "accuracy 0": (
        _model(
            accuracy=dict.fromkeys(
                ("ocr", "document", "chart", "general-vqa", "reasoning", "captioning"), 0.0
            )
        ),
        None,
    ),
    "empty window": (_empty, None),
    "window_s 5e-324": (_window(5e-324), None),
    "deferral_penalty_s 5e-324": (_objective(deferral_penalty_s=5e-324), None),
    "request id with an escape": (_request_id("r\x1b[2J"), "requests[0].id"),
    "request id of spaces": (_request_id("  "), "requests[0]"),
    "cost beyond 1e15": (
        lambda d: (
            _objective(latency_scale_s=1e-6, latency_weight=1e6)(d),
            _links(bandwidth_mbps=1e-3)(d),
        ),
        "on node",
    ),
}
SOLVERS = ("exact", "greedy", "per-request", "all-edge")


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_instance_never_exits_1(case, solver, tmp_path, capsys):
    edit, field = CASES[case]
    data = json.loads((SMALL / "analytic.json").read_text())
    edit(data)
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(data))
    code = main(["solve", str(path), "--solver", solver, "--format", "json"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert "internal error" not in captured.err
    if field is None:
        assert code in (EXIT_OK, EXIT_INFEASIBLE), captured.err
        solution = json.loads(captured.out)
        assert "NaN" not in captured.out and "Infinity" not in captured.out
        if solution["status"] in ("optimal", "feasible"):
            assert solution["objective"] is not None
    else:
        assert code == EXIT_INPUT, captured.err
        assert field in captured.err
        assert "\x1b" not in captured.err  # an id's escape is never sent to the terminal
