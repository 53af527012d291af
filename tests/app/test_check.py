"""The independent checker: hand-made solutions on the small windows, congestion by hand, and a
cross-check of every solver's output against the package's own evaluation."""

import json
import math

import numpy as np
import pytest
from conftest import INSTANCES, SMALL

from qlmio_opt import Instance, Solution, Status, read_instance, solve
from qlmio_opt.app.check import check, congestion_curve, lower_envelope, routes
from qlmio_opt.solvers import SOLVERS, Solver, SolverResult
from qlmio_opt.solvers.baselines import PerRequest, QualityGreedy, RandomRule, RoundRobin, Threshold


def hand(instance, assignment, deferred=(), objective=None, predictors="overrides", **extra):
    """A solution as a person would write it: only the decision and the claimed objective."""
    return Solution(
        instance=instance.name,
        solver="hand",
        predictors=predictors,
        status=extra.pop("status", Status.FEASIBLE),
        objective=objective,
        assignment=assignment,
        deferred=tuple(deferred),
        **extra,
    )


def small(name, **changes):
    instance = read_instance(SMALL / f"{name}.json")
    if not changes:
        return instance
    data = instance.to_dict()
    for key, value in changes.items():
        data[key] = value
    return Instance.from_dict(data)


def constraint_names(report):
    return [v.split(":")[0] for v in report.violations]


class Fixed(Solver):
    """Hands a given assignment to the package's evaluation (node ids; None = deferred)."""

    name = "fixed"

    def __init__(self, nodes):
        self.nodes = nodes

    def solve(self, problem, *, time_limit=None, seed=0):
        index = {n: j for j, n in enumerate(problem.node_ids)}
        out = np.array([-1 if n is None else index[n] for n in self.nodes], dtype=np.int64)
        return SolverResult(Status.FEASIBLE, out)


# -- the optima the small windows' descriptions state --------------------------------------------

OPTIMA = [
    ("memory", {"r0": "cloud-0", "r1": "edge-0", "r2": "cloud-0"}, (), -22.3),
    ("bandwidth", {"r0": "cloud-0", "r1": "edge-0", "r2": "edge-0"}, (), -22.5),
    ("deferral", {"r1": "edge-0", "r2": "cloud-0"}, ("r0",), 5.0 - 8.0 - 6.5),
    ("floor", {"r0": "cloud-0", "r1": "cloud-0", "r2": "cloud-0"}, (), 3.6),
]


@pytest.mark.parametrize(("name", "assignment", "deferred", "value"), OPTIMA)
def test_stated_optimum_passes_with_its_objective(name, assignment, deferred, value):
    instance = small(name)
    report = check(instance, hand(instance, assignment, deferred, objective=value))
    assert report.feasible, report.summary()
    assert report.violations == ()
    assert report.objective == pytest.approx(value, abs=1e-9)
    assert report.objective_matches
    assert "feasible" in report.summary()


def test_floor_optimum_means():
    instance = small("floor")
    report = check(instance, hand(instance, dict.fromkeys(("r0", "r1", "r2"), "cloud-0")))
    assert report.mean_latency_s == pytest.approx(1.2)
    assert report.mean_quality == pytest.approx(0.85)
    assert report.node_requests == {"edge-0": 0, "cloud-0": 3}
    assert report.node_congestion_s == {"edge-0": 0.0, "cloud-0": 0.0}  # latencies are given


# -- each broken constraint is named -------------------------------------------------------------


def test_memory_violation_names_the_node():
    instance = small("memory")
    report = check(instance, hand(instance, {"r0": "cloud-0", "r1": "edge-0", "r2": "edge-0"}))
    assert not report.feasible
    assert constraint_names(report) == ["memory"]
    assert 'node "edge-0"' in report.violations[0]
    assert "0.9000 GB" in report.violations[0] and "0.8000 GB" in report.violations[0]
    assert report.node_memory_gb["edge-0"] == pytest.approx(0.9)
    assert report.objective == pytest.approx(-7.8 - 8.0 - 6.7)


def test_link_violation_names_the_link():
    instance = small("bandwidth")
    report = check(instance, hand(instance, dict.fromkeys(("r0", "r1", "r2"), "cloud-0")))
    assert constraint_names(report) == ["bandwidth"]
    assert 'link "cell-0/core"' in report.violations[0]
    assert report.link_megabits == pytest.approx(
        {"cell-0/edge-0": 0.0, "cell-0/core": 3.0, "wan": 3.0}
    )
    # one request to the cloud fits (1 Mb of 1.5); two do not
    one = check(instance, hand(instance, {"r0": "cloud-0", "r1": "edge-0", "r2": "edge-0"}))
    assert one.feasible
    two = check(instance, hand(instance, {"r0": "cloud-0", "r1": "cloud-0", "r2": "edge-0"}))
    assert constraint_names(two) == ["bandwidth"]


def test_quality_floor_violation():
    instance = small("floor")
    # r2 on the edge: quality sum 0.9 + 0.9 + 0.7 = 2.5 < 3 * 0.84 = 2.52
    report = check(instance, hand(instance, {"r0": "cloud-0", "r1": "cloud-0", "r2": "edge-0"}))
    assert constraint_names(report) == ["quality floor"]
    assert "-0.020000" in report.violations[0]
    assert report.objective == pytest.approx(1.2 + 1.4 + 0.3)


def test_default_quality_target_is_all_cloud_less_the_tolerance():
    objective = {"mode": "quality_floor"}  # all-cloud mean 0.85, less 0.005: T = 0.845
    instance = small("floor", objective=objective)
    cloud = check(instance, hand(instance, dict.fromkeys(("r0", "r1", "r2"), "cloud-0")))
    assert cloud.feasible  # 2.55 >= 2.535
    mixed = {"r0": "cloud-0", "r1": "cloud-0", "r2": "edge-0"}
    assert constraint_names(check(instance, hand(instance, mixed))) == ["quality floor"]
    # with tolerance 0.02 the target is 0.83: 2.5 >= 2.49
    loose = small("floor", objective={**objective, "quality_tolerance": 0.02})
    assert check(loose, hand(loose, mixed)).feasible


def test_the_floor_compares_each_request_with_its_own_reference():
    # r3 may run nowhere (its min_quality is above both nodes'): it is deferred whatever happens
    # and outside the floor's sum. Each of r0-r2 is compared with its reference quality, its
    # quality on the one cloud node, within the tolerance 0.005 on average.
    data = small("floor").to_dict()
    data["objective"] = {"mode": "quality_floor", "deferral_penalty_s": 5.0}
    data["requests"].append({**data["requests"][0], "id": "r3", "min_quality": 0.99})
    over = data["overrides"]
    over["latency_s"].append([0.4, 1.2])
    over["quality"].append([0.9, 0.95])
    over["memory_gb"].append([0.1, 0.1])
    instance = Instance.from_dict(data)
    from qlmio_opt.formulations import build_problem
    from qlmio_opt.predictors import predict

    problem = build_problem(instance, predict(instance))
    cloud = problem.node_ids.index("cloud-0")
    expected = [*problem.quality[:3, cloud], np.nan]
    np.testing.assert_array_equal(problem.reference_quality, expected)
    assert problem.quality_target is None  # no absolute target: the reference form
    all_cloud = dict.fromkeys(("r0", "r1", "r2"), "cloud-0")
    assert check(instance, hand(instance, all_cloud, deferred=("r3",))).feasible
    mixed = {"r0": "cloud-0", "r1": "cloud-0", "r2": "edge-0"}  # r2 loses 0.15 > 3 x 0.005
    report = check(instance, hand(instance, mixed, deferred=("r3",)))
    assert constraint_names(report) == ["quality floor"]
    assert solve(instance, "exact").assignment == all_cloud


def _two_clouds(cloud_1_latency):
    """small("floor") with a second, faster-or-slower cloud node rated below the first."""
    data = small("floor").to_dict()
    data["objective"] = {"mode": "quality_floor", "quality_tolerance": 0.005}
    data["nodes"].append({**data["nodes"][1], "id": "cloud-1", "model": "qwen2-vl-7b"})
    data["network"]["links"].append(
        {"id": "wan-1", "from": "core", "to": "cloud-1", "bandwidth_mbps": 1000.0, "rtt_ms": 40.0}
    )
    over = data["overrides"]
    for row, latency in zip(over["latency_s"], cloud_1_latency, strict=True):
        row.append(latency)
    for row in over["quality"]:
        row.append(row[1] - 0.1)
    for row in over["memory_gb"]:
        row.append(row[1])
    return Instance.from_dict(data)


def test_the_reference_is_the_cloud_mean_whatever_the_state():
    # each request's reference is its mean quality over the two cloud nodes (0.9 and 0.8 for
    # r0: 0.85), whichever of them is faster at the moment
    from qlmio_opt.formulations import build_problem
    from qlmio_opt.predictors import predict

    fast, slow = _two_clouds([0.5, 0.6, 0.4]), _two_clouds([3.0, 3.0, 3.0])
    references = [build_problem(i, predict(i)).reference_quality for i in (fast, slow)]
    np.testing.assert_allclose(references[0], [0.85, 0.85, 0.70])
    np.testing.assert_array_equal(references[0], references[1])
    # all on the lower-rated cloud loses 0.05 each, beyond the tolerance: the floor is broken
    lower = dict.fromkeys(("r0", "r1", "r2"), "cloud-1")
    assert constraint_names(check(fast, hand(fast, lower))) == ["quality floor"]
    # one request on each side of the mean keeps it: r0 gains 0.05, r1 loses 0.05
    split = {"r0": "cloud-0", "r1": "cloud-1", "r2": "cloud-0"}
    assert check(fast, hand(fast, split)).feasible
    solution = solve(fast, "exact")
    assert check(fast, solution).feasible
    assert not solution.deferred
    assert solution.mean_quality >= np.mean(references[0]) - 0.005 - 1e-9


def test_deferring_a_hard_request_buys_no_slack():
    # The old floor (mean quality >= all-cloud's mean - tol) could be met by deferring the
    # request with the lowest quality everywhere; against each request's own reference, the
    # others' losses stay theirs.
    data = small("floor").to_dict()
    data["objective"] = {"mode": "quality_floor", "deferral_penalty_s": 5.0}
    instance = Instance.from_dict(data)
    qualities = data["overrides"]["quality"]
    assert min(min(row) for row in qualities) == qualities[2][0]  # r2 is hardest on the edge
    moved = {"r0": "edge-0", "r1": "cloud-0"}  # r0 moves to the edge, r2 (hard) is deferred
    report = check(instance, hand(instance, moved, deferred=("r2",)))
    loss = qualities[0][1] - qualities[0][0]  # r0's loss against its reference, the cloud
    assert loss > 2 * 0.005
    assert constraint_names(report) == ["quality floor"]


def test_ineligible_pair_null_latency():
    instance = small("deferral")
    report = check(instance, hand(instance, {"r0": "cloud-0", "r1": "edge-0", "r2": "cloud-0"}))
    assert constraint_names(report) == ["eligibility"]
    assert 'request "r0" is not allowed on node "cloud-0"' in report.violations[0]
    assert "null override" in report.violations[0]


def _with_request_fields(name, request, **fields):
    data = small(name).to_dict()
    for req in data["requests"]:
        if req["id"] == request:
            req.update(fields)
    return Instance.from_dict(data)


def test_ineligible_pair_min_quality_and_deadline():
    # r0: edge (L 0.4, Q 0.8), cloud (L 1.2, Q 0.9)
    floor = _with_request_fields("memory", "r0", min_quality=0.85)
    report = check(floor, hand(floor, {"r0": "edge-0", "r1": "cloud-0", "r2": "cloud-0"}))
    assert constraint_names(report) == ["eligibility"]
    assert "min_quality" in report.violations[0] and 'node "edge-0"' in report.violations[0]
    assert check(floor, hand(floor, {"r0": "cloud-0", "r1": "edge-0", "r2": "cloud-0"})).feasible
    deadline = _with_request_fields("memory", "r0", deadline_s=1.0)
    report = check(deadline, hand(deadline, {"r0": "cloud-0", "r1": "edge-0", "r2": "cloud-0"}))
    assert constraint_names(report) == ["eligibility"]
    assert "deadline" in report.violations[0] and 'node "cloud-0"' in report.violations[0]


def test_ineligible_pair_image_on_text_only_node():
    data = small("analytic").to_dict()
    data["nodes"][0]["modalities"] = ["text"]
    instance = Instance.from_dict(data)
    report = check(
        instance, hand(instance, {"r0": "edge-0", "r1": "edge-0"}, predictors="analytic")
    )
    assert constraint_names(report) == ["eligibility"]
    assert 'request "r0"' in report.violations[0] and "images" in report.violations[0]


def test_missing_request():
    instance = small("memory")
    report = check(instance, hand(instance, {"r0": "cloud-0", "r1": "edge-0"}))
    assert constraint_names(report) == ["assignment"]
    assert 'request "r2" is neither placed nor deferred' in report.violations[0]


def test_deferral_without_deferral():
    instance = small("memory")
    report = check(instance, hand(instance, {"r0": "cloud-0", "r1": "edge-0"}, ("r2",)))
    assert constraint_names(report) == ["deferral"]
    assert 'request "r2"' in report.violations[0]


def test_unknown_ids_and_double_decisions():
    instance = small("memory")
    report = check(
        instance,
        hand(
            instance,
            {"r0": "cloud-9", "r1": "edge-0", "r2": "cloud-0", "r7": "edge-0"},
            ("r1", "r8"),
        ),
    )
    text = "\n".join(report.violations)
    assert 'request "r0" is on unknown node "cloud-9"' in text
    assert 'request "r7" is not in the instance' in text
    assert 'deferred request "r8" is not in the instance' in text
    assert 'request "r1" is both on "edge-0" and deferred' in text
    assert set(constraint_names(report)) == {"assignment"}


def test_tampered_objective_is_caught():
    instance = small("memory")
    best = {"r0": "cloud-0", "r1": "edge-0", "r2": "cloud-0"}
    report = check(instance, hand(instance, best, objective=-22.4))
    assert report.feasible
    assert not report.objective_matches
    assert "DOES NOT MATCH" in report.summary()
    # the tolerance is 1e-6 * max(1, |objective|) = 2.23e-5 here
    assert check(instance, hand(instance, best, objective=-22.3 + 2e-5)).objective_matches
    assert not check(instance, hand(instance, best, objective=-22.3 + 3e-5)).objective_matches


def test_a_solution_without_assignment_is_reported_as_such():
    instance = small("infeasible")
    failed = hand(instance, {}, status=Status.INFEASIBLE, message='request "r1" fits on no node')
    report = check(instance, failed)
    assert not report.has_assignment and not report.feasible
    assert math.isnan(report.objective)
    assert report.objective_matches  # it claims no objective
    assert "no assignment to check" in report.summary()
    assert 'request "r1" fits on no node' in report.violations[0]
    error = check(instance, hand(instance, {}, status=Status.ERROR, objective=1.0))
    assert not error.has_assignment and not error.objective_matches


def test_a_kept_infeasible_assignment_is_still_checked():
    instance = small("memory")
    kept = hand(instance, dict.fromkeys(("r0", "r1", "r2"), "edge-0"), status=Status.INFEASIBLE)
    report = check(instance, kept)
    assert report.has_assignment and constraint_names(report) == ["memory"]


# -- routing ------------------------------------------------------------------------------------


def _detour_instance():
    """memory.json plus shortcuts through another site and through a node, and a node that only
    another site reaches: routes must pass through routers only."""
    data = small("memory").to_dict()
    data["network"]["sites"].append("cell-1")
    data["network"]["links"] += [
        {
            "id": "cell-0/cell-1",
            "from": "cell-0",
            "to": "cell-1",
            "bandwidth_mbps": 1.0,
            "rtt_ms": 1,
        },
        {"id": "cell-1/core", "from": "cell-1", "to": "core", "bandwidth_mbps": 1.0, "rtt_ms": 1},
        {"id": "edge-0/core", "from": "edge-0", "to": "core", "bandwidth_mbps": 1.0, "rtt_ms": 1},
        {"id": "cell-1/edge-1", "from": "cell-1", "to": "edge-1", "bandwidth_mbps": 9, "rtt_ms": 1},
    ]
    data["nodes"].append(
        {"id": "edge-1", "tier": "edge", "model": "qwen2-vl-2b", "device": "jetson-agx-orin"}
    )
    data["requests"].append(dict(data["requests"][2], id="r3", site="cell-1"))
    ov = data["overrides"]
    ov["latency_s"] = [[*row, None] for row in ov["latency_s"]] + [[None, 1.0, 0.2]]
    ov["quality"] = [[*row, 0.5] for row in ov["quality"]] + [[0.5, 0.75, 0.7]]
    ov["memory_gb"] = [[*row, 0.3] for row in ov["memory_gb"]] + [[0.3, 0.3, 0.3]]
    return Instance.from_dict(data)


def test_routes_pass_through_routers_only():
    instance = _detour_instance()
    paths = routes(instance)
    # cell-0 -> cell-1 -> core (2 ms) and cell-0 -> edge-0 -> core (6 ms) are shorter, but
    # sites and nodes do not forward traffic
    assert paths[("cell-0", "cloud-0")] == ("cell-0/core", "wan")
    assert paths[("cell-0", "edge-0")] == ("cell-0/edge-0",)
    assert paths[("cell-0", "edge-1")] is None
    assert paths[("cell-1", "cloud-0")] == ("cell-1/core", "wan")
    report = check(
        instance,
        hand(instance, {"r0": "cloud-0", "r1": "cloud-0", "r2": "edge-0", "r3": "edge-1"}),
    )
    assert report.feasible, report.summary()
    assert report.link_megabits["cell-0/core"] == pytest.approx(2.0)
    assert report.link_megabits["cell-0/cell-1"] == 0.0
    assert report.link_megabits["edge-0/core"] == 0.0
    assert report.link_megabits["cell-1/edge-1"] == pytest.approx(1.0)


def test_unreachable_pair_is_ineligible():
    instance = _detour_instance()
    report = check(
        instance,
        hand(instance, {"r0": "edge-1", "r1": "cloud-0", "r2": "edge-0", "r3": "edge-1"}),
    )
    assert constraint_names(report) == ["eligibility"]
    assert 'request "r0" is not allowed on node "edge-1" (no path' in report.violations[0]


def test_package_rules_out_unreachable_pairs_under_full_overrides():
    data = _detour_instance().to_dict()
    data["overrides"]["latency_s"][0][2] = 0.1  # r0 -> edge-1: a number, but no path exists
    instance = Instance.from_dict(data)
    nodes = ["edge-1", "cloud-0", "edge-0", "edge-1"]
    decision = dict(zip(instance.request_ids, nodes, strict=True))
    assert constraint_names(check(instance, hand(instance, decision))) == ["eligibility"]
    package = solve(instance, Fixed(nodes))
    assert any('"r0" is not allowed on node "edge-1"' in v for v in package.violations)


def test_package_rules_out_images_on_text_only_nodes_under_full_overrides():
    data = small("memory").to_dict()
    data["nodes"][0]["modalities"] = ["text"]  # every request of memory.json carries an image
    instance = Instance.from_dict(data)
    nodes = ["cloud-0", "edge-0", "cloud-0"]  # the package's own optimum for this window
    decision = dict(zip(instance.request_ids, nodes, strict=True))
    assert constraint_names(check(instance, hand(instance, decision))) == ["eligibility"]
    package = solve(instance, Fixed(nodes))
    assert any('"r1" is not allowed on node "edge-0"' in v for v in package.violations)


# -- congestion, by hand ------------------------------------------------------------------------


def test_lower_envelope_by_hand():
    # c = 3, S = D = alpha = 1: raw 0, 0, 2, 6, 9, 12, 15, 19 (slope drops after m = c)
    raw = [congestion_curve(7, 3, 1.0, 1.0, 1.0)]
    assert np.allclose(lower_envelope(np.array([0, 0, 2, 6, 9, 12, 15, 19.0])), raw)
    assert np.allclose(raw[0], [0, 0, 2, 5.25, 8.5, 11.75, 15, 19])
    # the envelope is over 0..max_count: with 4 the hull runs from (2, 2) to (4, 9)
    assert np.allclose(congestion_curve(4, 3, 1.0, 1.0, 1.0), [0, 0, 2, 5.5, 9])
    convex = np.array([0, 0, 1, 3, 6, 10.0])
    assert np.allclose(lower_envelope(convex), convex)


def _edge_pair_by_hand():
    """analytic.json, both requests on the edge: E(2) = alpha * D * 2 * (2 - 1) (batching) +
    (1 + g) * S_p * 2 * (2 - 1) / 2 (prefill contention)."""
    decode = (16 / 12.5 + 128 / 12.5) / 2  # r0 (ocr, 16 tokens) and r1 (128 tokens) at 12.5 tok/s
    context = ((100 + 500 + 16 / 2) + (50 + 0 + 128 / 2)) / 2  # prompt + image + output / 2
    kv = context * 100_000
    alpha = kv / (4.0e9 + kv)
    # prefill work: r0 500 patches at 10,000/s + 600 tokens at 2,500/s; r1 50 tokens
    prefill = ((500 / 10000 + 600 / 2500) + 50 / 2500) / 2
    # chunked prefill, 2,048 tokens a step: a step alone 1 / 12.5 s, with a chunk 2048 / 2500 s
    g = 1 - (1 / 12.5) / (2048 / 2500)
    return 2 * alpha * decode + (1 + g) * prefill


def test_congestion_by_hand_on_the_analytic_window():
    instance = small("analytic")
    edge = check(instance, hand(instance, {"r0": "edge-0", "r1": "edge-0"}, predictors="analytic"))
    assert edge.node_congestion_s["edge-0"] == pytest.approx(_edge_pair_by_hand(), rel=1e-12)
    assert edge.node_congestion_s["cloud"] == 0.0
    alone = check(instance, hand(instance, {"r0": "edge-0", "r1": "cloud"}, predictors="analytic"))
    assert alone.node_congestion_s == {"edge-0": 0.0, "cloud": 0.0}  # one request: no congestion
    # the objective adds the congestion once (weight 1 / 1 s); the mean latency shares it
    assert edge.objective - alone.objective == pytest.approx(
        _edge_pair_by_hand() + _pair(instance, "r1", "edge-0") - _pair(instance, "r1", "cloud")
    )
    r0_edge = 0.5 + 1.0 + 8 * 250400 / 80e6 + 0.010 + 500 / 10000 + 600 / 2500 + 16 / 12.5
    assert r0_edge == pytest.approx(3.10504)  # the description's figure
    r1_edge = 0.0 + 8 * 200 / 80e6 + 0.010 + 0.0 + 50 / 2500 + 128 / 12.5
    assert edge.mean_latency_s == pytest.approx((r0_edge + r1_edge + _edge_pair_by_hand()) / 2)
    f = 0.5**0.5  # the resolution effect multiplies the odds of completion (analytic.py)
    assert edge.mean_quality == pytest.approx((0.6 * f / (0.4 + 0.6 * f) + 0.8) / 2)


def _pair(instance, rid, nid):
    from qlmio_opt.predictors import predict

    p = predict(instance, "analytic")
    i = instance.request_ids.index(rid)
    j = instance.node_ids.index(nid)
    return p.latency_s[i, j] - 10 * p.quality[i, j]


def test_congestion_means_run_over_the_allowed_requests_only():
    # a third request the edge may not take (min_quality 0.85 > 0.8) must not enter S or D
    data = small("analytic").to_dict()
    data["requests"].append(dict(data["requests"][1], id="r2", min_quality=0.85))
    instance = Instance.from_dict(data)
    report = check(
        instance,
        hand(instance, {"r0": "edge-0", "r1": "edge-0", "r2": "cloud"}, predictors="analytic"),
    )
    assert report.node_congestion_s["edge-0"] == pytest.approx(_edge_pair_by_hand(), rel=1e-12)
    assert report.feasible
    package = solve(instance, Fixed(["edge-0", "edge-0", "cloud"]))
    assert check(instance, package).objective_matches


def test_envelope_binds_on_a_concave_window():
    """Six identical text requests, edge concurrency 3 and a KV cache large next to the weights:
    the raw curve's slope drops after m = 3 (S < 2 alpha D), so the envelope at 4 lies below the
    raw curve there. The envelope of six points at 4 is the lowest chord over it."""
    data = small("analytic").to_dict()
    data["catalog"]["models"]["toy-vlm"]["kv_bytes_per_token"] = 100_000_000
    data["nodes"][0].update(memory_gb=None, max_concurrency=3)
    data["requests"] = [dict(data["requests"][1], id=f"t{i}") for i in range(6)]
    instance = Instance.from_dict(data)
    decode = 128 / 12.5
    service = 50 / 2500 + decode
    kv = (50 + 128 / 2) * 100_000_000
    alpha = kv / (4.0e9 + kv)
    assert service < 2 * alpha * decode
    nodes = ["edge-0"] * 4 + ["cloud"] * 2
    report = check(
        instance,
        hand(instance, {f"t{i}": n for i, n in enumerate(nodes)}, predictors="analytic"),
    )
    prefill = 50 / 2500
    g = 1 - (1 / 12.5) / (2048 / 2500)  # chunked prefill: decode delay per prefill second

    def raw(m):  # queueing rounds of 3 (lengthened by the 2 others' prefills), batching,
        # prefill contention among the 3 in the slots, then 2 others' prefills per later one
        rounds = sum((i - 1) // 3 for i in range(1, m + 1))
        first = min(m, 3)
        return (
            (service + g * prefill * 2) * rounds
            + alpha * decode * m * (first - 1)
            + (1 + g) * prefill * first * (first - 1) / 2
            + g * prefill * 2 * (m - first)
        )

    expected = min(
        raw(a) + (raw(b) - raw(a)) * (4 - a) / (b - a) for a in range(4) for b in range(5, 7)
    )
    assert report.node_congestion_s["edge-0"] == pytest.approx(expected, rel=1e-12)
    assert expected < raw(4)
    package = solve(instance, Fixed(nodes))
    assert check(instance, package).objective_matches
    assert package.nodes[0].congestion_s == pytest.approx(expected, rel=1e-9)


# -- the JSON the CLI writes --------------------------------------------------------------------


def test_checks_the_json_the_cli_writes(capsys):
    from qlmio_opt.faces.cli import main

    code = main(["solve", str(SMALL / "memory.json"), "--solver", "exact", "--format", "json"])
    assert code == 0
    solution = Solution.model_validate(json.loads(capsys.readouterr().out))
    report = check(read_instance(SMALL / "memory.json"), solution)
    assert report.feasible and report.objective_matches
    assert report.objective == pytest.approx(-22.3)


# -- every solver, cross-checked against the package's evaluation --------------------------------

EXTRA = {cls.name: cls for cls in (RandomRule, RoundRobin, QualityGreedy, Threshold, PerRequest)}
ALL_SOLVERS = sorted(set(SOLVERS) | set(EXTRA))
WINDOWS = [
    *sorted(SMALL.glob("*.json")),
    INSTANCES / "window_000.json",
    INSTANCES / "window_042.json",
    INSTANCES / "window_099.json",
]


def _named(violations, word):
    """Quoted ids in the violations that mention ``word`` (memory / bandwidth)."""
    return {v.split('"')[1] for v in violations if v.startswith(word) and '"' in v}


@pytest.mark.parametrize("path", WINDOWS, ids=lambda p: p.stem)
@pytest.mark.parametrize("solver", ALL_SOLVERS)
def test_every_solver_output_checks_out(solver, path):
    instance = read_instance(path)
    s = solve(instance, SOLVERS[solver]() if solver in SOLVERS else EXTRA[solver]())
    report = check(instance, s)
    if not s.status.has_assignment and not s.assignment:
        assert not report.has_assignment
        return
    assert report.objective_matches, report.summary()
    assert report.mismatches == (), report.summary()
    if s.status in (Status.OPTIMAL, Status.FEASIBLE, Status.TIME_LIMIT):
        assert report.feasible, report.summary()
        assert s.violations == ()
    else:  # a rule's kept assignment: both sides name the same broken constraints
        assert not report.feasible
        assert _named(report.violations, "memory") == _named(s.violations, "memory on node")
        assert _named(report.violations, "bandwidth") == _named(s.violations, "bandwidth on link")
        assert ("quality floor" in constraint_names(report)) == any(
            v.startswith("quality floor") for v in s.violations
        )


def test_a_model_named_only_in_the_solution_is_not_loaded():
    from qlmio_opt.domain.errors import InputError

    instance = small("analytic")
    solution = hand(instance, {"r0": "edge-0", "r1": "cloud"}, predictors="models/mine.json")
    with pytest.raises(InputError, match=r"--predictors models/mine\.json") as err:
        check(instance, solution)
    assert err.value.issues[0].path == "predictors"
    assert check(instance, solution, predictors="analytic").feasible


# -- every figure the file claims is judged -------------------------------------------------------


def _solved(name="memory", solver="exact"):
    instance = small(name)
    return instance, solve(instance, solver)


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("mean_quality", lambda d: d.update(mean_quality=d["mean_quality"] + 0.01)),
        ("mean_latency_s", lambda d: d.update(mean_latency_s=d["mean_latency_s"] * 1.1)),
        ("gap", lambda d: d.update(gap=0.5)),
        ("bound", lambda d: d.update(bound=d["objective"] + 1.0)),
        ("requests[0]", lambda d: d["requests"][0].update(quality=0.99)),
        ("requests[1]", lambda d: d["requests"][1].update(latency_s=0.01)),
        ("requests[2]", lambda d: d["requests"][2].update(node="edge-0")),
        ("nodes[0]", lambda d: d["nodes"][0].update(memory_gb=0.1)),
        ("nodes[1]", lambda d: d["nodes"][1].update(requests=9)),
        ("nodes[0]", lambda d: d["nodes"][0].update(memory_capacity_gb=None)),
        ("nodes[0]", lambda d: d["nodes"][0].update(tier="cloud")),
        ("links[0]", lambda d: d["links"][0].update(megabits=0.0)),
        ("links[1]", lambda d: d["links"][1].update(requests=0)),
        ("links[1]", lambda d: d["links"][1].update(capacity_megabits=1e6)),
        ("violations", lambda d: d.update(violations=["memory on node x"])),
    ],
)
def test_a_false_figure_is_refused_naming_its_field(field, change):
    instance, solution = _solved()
    assert check(instance, solution).accepted
    data = solution.to_dict()
    change(data)
    report = check(instance, Solution.model_validate(data))
    assert not report.accepted
    assert report.feasible or field == "requests[2]"
    assert any(m.startswith(field) for m in report.mismatches), report.mismatches
    assert "FALSE FIGURES" in report.summary()


def test_an_infinite_recomputed_objective_never_matches():
    from qlmio_opt.app.check import _objective_matches

    assert not _objective_matches(None, math.inf)
    assert not _objective_matches(math.inf, math.inf)
    assert not _objective_matches(None, math.nan)
    assert _objective_matches(None, -22.3) and _objective_matches(-22.3, -22.3)


def test_a_solution_claiming_no_objective_is_judged_on_its_assignment():
    instance = small("memory")
    report = check(instance, hand(instance, {"r0": "cloud-0", "r1": "edge-0", "r2": "cloud-0"}))
    assert report.accepted
    assert "none claimed" in report.summary()


def test_congestion_curve_after_active_requests_by_hand():
    # c = 2, one service round of 1 s, no batching: with 2 requests already on the node the
    # window's first two wait one round each, the next two wait two rounds each
    from qlmio_opt.formulations.congestion import curve

    expected = [0, 1, 2, 4, 6]
    assert np.allclose(congestion_curve(4, 2, 1.0, 0.0, 0.0, active=2), expected)
    assert np.allclose(curve(4, 2, 1.0, 0.0, 0.0, active=2).values, expected)
    assert np.allclose(congestion_curve(4, 2, 1.0, 0.0, 0.0, active=0), [0, 0, 0, 1, 2])
