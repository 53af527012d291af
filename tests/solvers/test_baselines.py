"""Baseline policies on hand-checkable windows, verified by the independent checker."""

import numpy as np
import pytest
from conftest import INSTANCES, SMALL
from hypothesis import given, settings
from hypothesis import strategies as st

from qlmio_opt import Status, read_instance, solve
from qlmio_opt.app.check import check
from qlmio_opt.solvers import SOLVERS, get_solver


def _verify(instance, solution):
    """The independent checker's verdict; feasible-status solutions must pass it exactly."""
    report = check(instance, solution)
    if solution.status.has_assignment:  # optimal, feasible, time_limit
        assert report.feasible, report.summary()
        assert report.objective_matches, report.summary()
        assert solution.objective == pytest.approx(report.objective, rel=1e-9, abs=1e-9)
    return report.violations


def test_registry_has_the_baselines():
    assert {"all-cloud", "all-edge", "latency-greedy"} <= set(SOLVERS)
    with pytest.raises(ValueError, match="unknown solver"):
        get_solver("simplex-magic")


def test_latency_greedy_on_memory_window():
    instance = read_instance(SMALL / "memory.json")
    s = solve(instance, "latency-greedy")
    _verify(instance, s)
    # r0 takes the edge first (arrival order); r1 and r2 no longer fit (0.6 + 0.6 / 0.3 > 0.8)
    assert s.assignment == {"r0": "edge-0", "r1": "cloud-0", "r2": "cloud-0"}
    assert s.objective == pytest.approx(-7.6 - 7.6 - 6.5)
    assert s.status is Status.FEASIBLE


def test_all_cloud_and_all_edge_apply_their_rule():
    instance = read_instance(SMALL / "memory.json")
    cloud = solve(instance, "all-cloud")
    assert set(cloud.assignment.values()) == {"cloud-0"}
    assert cloud.objective == pytest.approx(-7.8 - 7.6 - 6.5)
    _verify(instance, cloud)
    edge = solve(instance, "all-edge")
    assert set(edge.assignment.values()) == {"edge-0"}
    # 1.5 GB on a 0.8 GB node: the rule is applied, and the broken constraint is reported
    assert edge.status is Status.INFEASIBLE
    assert any('memory on node "edge-0"' in v for v in edge.violations)
    (violation,) = _verify(instance, edge)
    assert violation.startswith('memory: node "edge-0"')


def test_bandwidth_limits_latency_greedy():
    instance = read_instance(SMALL / "bandwidth.json")
    s = solve(instance, "latency-greedy")
    _verify(instance, s)
    assert set(s.assignment.values()) == {"edge-0"}  # all fastest on the edge, memory is ample
    cloud = solve(instance, "all-cloud")
    assert cloud.status is Status.INFEASIBLE
    assert any('bandwidth on link "cell-0/core"' in v for v in cloud.violations)


def test_infeasible_window_names_the_request_and_the_constraint():
    instance = read_instance(SMALL / "infeasible.json")
    s = solve(instance, "latency-greedy")
    assert s.status is Status.INFEASIBLE
    assert 'request "r1" fits on no node' in s.message
    assert 'memory on "edge-0"' in s.message
    assert not s.assignment


def test_deferral_keeps_the_window_decidable():
    instance = read_instance(SMALL / "deferral.json")
    s = solve(instance, "latency-greedy")
    _verify(instance, s)
    assert s.status is Status.FEASIBLE
    assert s.deferred == ("r1",)
    assert s.objective == pytest.approx(-7.6 + 5.0 - 6.5)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_every_solver_on_every_small_window_is_checked(solver):
    for path in sorted(SMALL.glob("*.json")):
        instance = read_instance(path)
        s = solve(instance, solver)
        assert s.status in set(Status)
        if s.status.has_assignment:
            _verify(instance, s)
        elif s.assignment:
            assert s.violations  # a kept assignment with status infeasible says what it breaks
            assert _verify(instance, s)  # and the checker finds it broken too


def test_solves_are_deterministic():
    instance = read_instance(INSTANCES / "window_042.json")
    a = solve(instance, "latency-greedy", seed=3)
    b = solve(instance, "latency-greedy", seed=3)
    assert a.assignment == b.assignment and a.objective == b.objective


@pytest.mark.parametrize("name", ["window_000.json", "window_042.json", "window_077.json"])
def test_latency_greedy_is_feasible_on_benchmark_windows(name):
    instance = read_instance(INSTANCES / name)
    s = solve(instance, "latency-greedy")
    assert s.status is Status.FEASIBLE
    _verify(instance, s)
    assert len(s.assignment) + len(s.deferred) == len(instance.requests)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    num_requests=st.integers(1, 8),
    memory=st.floats(0.2, 3.0),
    core_mbps=st.floats(0.5, 20.0),
    deferral=st.booleans(),
)
def test_latency_greedy_property(seed, num_requests, memory, core_mbps, deferral):
    """On random override windows, latency-greedy is either feasible (and checks out) or says
    which request fits nowhere."""
    rng = np.random.default_rng(seed)
    base = read_instance(SMALL / "memory.json").to_dict()
    reqs = []
    for i in range(num_requests):
        reqs.append(
            {
                "id": f"q{i}",
                "site": "cell-0",
                "arrival_s": float(rng.uniform(0, 1)),
                "task": "ocr",
                "prompt_tokens": int(rng.integers(0, 200)),
                "images": [{"width": 640, "height": 480, "bytes": int(rng.integers(1e4, 4e5))}],
                "max_output_tokens": 32,
            }
        )
    base["requests"] = reqs
    base["nodes"][0]["memory_gb"] = memory
    base["network"]["links"][1]["bandwidth_mbps"] = core_mbps
    base["overrides"] = {
        "latency_s": rng.uniform(0.1, 3.0, (num_requests, 2)).round(4).tolist(),
        "quality": rng.uniform(0.3, 1.0, (num_requests, 2)).round(4).tolist(),
        "memory_gb": rng.uniform(0.05, 1.0, (num_requests, 2)).round(4).tolist(),
    }
    if deferral:
        base["objective"]["deferral_penalty_s"] = 5.0
    instance = type(read_instance(SMALL / "memory.json")).from_dict(base)
    s = solve(instance, "latency-greedy")
    if s.status is Status.FEASIBLE:
        _verify(instance, s)
    else:
        assert not deferral
        assert "fits on no node" in s.message
