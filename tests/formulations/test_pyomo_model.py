"""The Pyomo model of docs/formulation.md and the ``exact-pyomo`` solver.

Hand-checked optima of the small windows, benchmark windows recomputed by ``evaluate``, brute force
over every assignment of random tiny windows (with and without congestion), the rows the builder
leaves out, the status mapping, and agreement with the direct highspy build (``exact``).
"""

import copy
import functools
import importlib.util
import itertools
import json

import numpy as np
import pyomo.environ as pyo
import pytest
from conftest import INSTANCES, SMALL
from pyomo.contrib.solver.common.factory import SolverFactory

from qlmio_opt import Instance, Status, read_instance
from qlmio_opt.formulations import build_problem
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.formulations.pyomo_model import assignment_from_model, build_pyomo_model
from qlmio_opt.predictors import predict
from qlmio_opt.solvers.exact_pyomo import ExactPyomo

BENCHMARK = ["window_000", "window_010", "window_099"]


def problem_of(instance):
    return build_problem(instance, predict(instance))


def small(name):
    return problem_of(read_instance(SMALL / f"{name}.json"))


def benchmark(name):
    return problem_of(read_instance(INSTANCES / f"{name}.json"))


def node_names(problem, assignment):
    return [None if n < 0 else problem.node_ids[n] for n in assignment]


def brute_force(problem):
    """Smallest ``evaluate`` objective over every assignment with no violation (None if none).

    Pairs that are not allowed are not enumerated (``evaluate`` would reject them anyway).
    """
    defer = [-1] if problem.deferral_allowed else []
    options = [[*np.flatnonzero(row).tolist(), *defer] for row in problem.allowed]
    best = None
    for combo in itertools.product(*options):
        ev = evaluate(problem, np.array(combo, dtype=np.int64))
        if not ev.violations and (best is None or ev.objective < best):
            best = ev.objective
    return best


def assert_consistent(problem, result):
    """The solver's objective is the evaluated one, the assignment feasible, the bound below."""
    ev = evaluate(problem, result.assignment)
    assert ev.violations == ()
    scale = max(1.0, abs(ev.objective))
    assert result.reported_objective == pytest.approx(ev.objective, abs=1e-6 * scale)
    if result.bound is not None:
        assert result.bound <= ev.objective + 1e-6 * scale
    return ev.objective


# --- hand-checked windows ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "optimum", "nodes"),
    [
        ("memory", -22.3, ["cloud-0", "edge-0", "cloud-0"]),
        ("bandwidth", -22.5, ["cloud-0", "edge-0", "edge-0"]),
        ("floor", 3.6, ["cloud-0", "cloud-0", "cloud-0"]),
        ("deferral", -9.5, [None, "edge-0", "cloud-0"]),
    ],
)
def test_small_window_optimum(name, optimum, nodes):
    problem = small(name)
    result = ExactPyomo().solve(problem)
    assert result.status is Status.OPTIMAL
    assert node_names(problem, result.assignment) == nodes
    assert assert_consistent(problem, result) == pytest.approx(optimum, abs=1e-9)
    assert result.stats["build_s"] >= 0 and result.stats["highs_run_s"] >= 0


def test_infeasible_window_is_reported_with_its_culprits():
    result = ExactPyomo().solve(small("infeasible"))
    assert result.status is Status.INFEASIBLE
    assert result.assignment is None
    assert '"edge-0"' in result.message and '"r0", "r1"' in result.message


def test_any_pyomo_solver_takes_the_model():
    """The builder calls no solver: a plain Pyomo solve of the model gives the stated optimum."""
    problem = small("memory")
    model = build_pyomo_model(problem)
    SolverFactory("highs").solve(model)
    assert pyo.value(model.cost) == pytest.approx(-22.3)
    assert node_names(problem, assignment_from_model(model, 3)) == ["cloud-0", "edge-0", "cloud-0"]


def test_infeasible_model_without_the_solver_class():
    """The Pyomo model alone: HiGHS proves infeasible.json infeasible."""
    model = build_pyomo_model(small("infeasible"))
    results = SolverFactory("highs").solve(
        model, load_solutions=False, raise_exception_on_nonoptimal_result=False
    )
    assert results.termination_condition.name == "provenInfeasible"


# --- what the builder leaves out -----------------------------------------------------------


def test_only_binding_rows_and_allowed_pairs():
    memory = build_pyomo_model(small("memory"))
    assert len(memory.x) == 6 and not hasattr(memory, "d")
    assert list(memory.memory) == [0]  # edge-0: 1.5 GB allowed on 0.8 GB; cloud-0 unbounded
    assert len(memory.bandwidth) == 0  # 3 Mb over 100 Mb links
    assert len(memory.CONGESTED) == 0  # overrides: E_n = 0, no theta, no pieces
    assert not hasattr(memory, "quality")

    bandwidth = build_pyomo_model(small("bandwidth"))
    assert len(bandwidth.memory) == 0  # 1.5 GB on a 10 GB edge
    link_ids = small("bandwidth").link_ids
    assert [link_ids[k] for k in bandwidth.bandwidth] == ["cell-0/core"]

    deferral = build_pyomo_model(small("deferral"))
    assert len(deferral.x) == 4  # r0 and r1 have no cloud latency
    assert len(deferral.d) == 3
    assert hasattr(build_pyomo_model(small("floor")), "quality")


def test_congestion_pieces_skip_the_zero_piece():
    problem = benchmark("window_099")
    model = build_pyomo_model(problem)
    for n in model.CONGESTED:
        a, b = problem.congestion_curves[n].segments()
        kept = [(x, y) for x, y in zip(a, b, strict=True) if abs(x) > 1e-12 or abs(y) > 1e-12]
        assert len([i for m_, i in model.PIECES if m_ == n]) == len(kept) == len(a) - 1
    assert len(model.x) == int(problem.allowed.sum())


def _no_node_for_r0(deferral):
    data = json.loads((SMALL / "memory.json").read_text())
    data["requests"][0]["min_quality"] = 0.95  # r0 reaches 0.8 / 0.9: no allowed node
    if deferral:
        data["objective"]["deferral_penalty_s"] = 5.0
    return problem_of(Instance.from_dict(data))


def test_request_with_no_allowed_node():
    problem = _no_node_for_r0(deferral=False)
    result = ExactPyomo().solve(problem)
    assert result.status is Status.INFEASIBLE
    assert '"r0"' in result.message
    # the model alone stays well-formed: a constant, infeasible assignment row
    model = build_pyomo_model(problem)
    assert model.assign[0].body() == 1 and model.assign[0].upper == 0
    results = SolverFactory("highs").solve(
        model, load_solutions=False, raise_exception_on_nonoptimal_result=False
    )
    assert results.termination_condition.name == "provenInfeasible"
    # with deferral, r0 simply waits
    problem = _no_node_for_r0(deferral=True)
    result = ExactPyomo().solve(problem)
    assert result.status is Status.OPTIMAL and result.assignment[0] == -1
    assert assert_consistent(problem, result) == pytest.approx(brute_force(problem))


# --- benchmark windows ---------------------------------------------------------------------


@pytest.mark.parametrize("name", BENCHMARK)
def test_benchmark_window_objective_matches_evaluation(name):
    problem = benchmark(name)
    result = ExactPyomo().solve(problem)
    assert result.status is Status.OPTIMAL
    objective = assert_consistent(problem, result)
    assert result.bound is not None
    assert (objective - result.bound) <= 1e-4 * abs(objective) + 1e-9


def test_time_limit_keeps_the_start_and_no_solution_is_a_time_limit():
    problem = benchmark("window_000")
    cold = ExactPyomo().solve(problem, time_limit=0)
    # a time limit, not an error (exit 4, not 3): the build cannot fit, so it is not started
    assert cold.status is Status.TIME_LIMIT and cold.assignment is None
    assert cold.message.startswith("time limit")
    start = ExactPyomo().solve(problem).assignment
    warm = ExactPyomo().solve(problem, time_limit=0, initial=start)
    assert warm.status is Status.TIME_LIMIT
    assert np.array_equal(warm.assignment, start)
    assert_consistent(problem, warm)


def test_initial_assignment_must_have_one_entry_per_request():
    with pytest.raises(ValueError, match="initial has shape"):
        ExactPyomo().solve(small("memory"), initial=np.zeros(2, dtype=np.int64))


# --- brute force -----------------------------------------------------------------------------


def _tiny_instance(seed):
    """memory.json with random sizes: 1-6 requests on two sites, 2-3 nodes, tight resources."""
    rng = np.random.default_rng(seed)
    data = json.loads((SMALL / "memory.json").read_text())
    num_requests = int(rng.integers(1, 7))
    three_nodes = bool(rng.random() < 0.6)
    data["network"]["sites"] = ["cell-0", "cell-1"]
    links = data["network"]["links"]  # cell-0/edge-0, cell-0/core, wan (core -> cloud-0)
    links += [
        {"id": "cell-1/core", "from": "cell-1", "to": "core", "bandwidth_mbps": 100.0},
        {"id": "core/edge-0", "from": "core", "to": "edge-0", "bandwidth_mbps": 100.0},
    ]
    for link in links:
        link.setdefault("rtt_ms", 5.0)
    if three_nodes:
        edge = copy.deepcopy(data["nodes"][0])
        data["nodes"].append(dict(edge, id="edge-1"))
        links.append({"id": "cell-1/edge-1", "from": "cell-1", "to": "edge-1", "rtt_ms": 5.0})
        links.append({"id": "core/edge-1", "from": "core", "to": "edge-1", "rtt_ms": 5.0})
        links[-2]["bandwidth_mbps"] = links[-1]["bandwidth_mbps"] = 100.0
    for link in links:  # some links tight: about 1 Mb per request
        if rng.random() < 0.4:
            link["bandwidth_mbps"] = round(float(rng.uniform(0.8, 4.0)), 2)
    for node in data["nodes"]:
        if node["tier"] == "edge":
            node["memory_gb"] = round(float(rng.uniform(0.3, 2.0)), 2)
    data["requests"] = [
        {
            "id": f"q{i}",
            "site": str(rng.choice(["cell-0", "cell-1"])),
            "arrival_s": round(0.1 * i, 2),
            "task": "ocr",
            "prompt_tokens": 0,
            "images": [{"width": 640, "height": 480, "bytes": int(rng.integers(50_000, 300_000))}],
            "max_output_tokens": 32,
        }
        for i in range(num_requests)
    ]
    if rng.random() < 0.15:
        data["requests"][0]["min_quality"] = 0.97  # may leave q0 without an allowed node
    num_nodes = len(data["nodes"])
    latency = rng.uniform(0.2, 2.0, (num_requests, num_nodes)).round(2).tolist()
    for row in latency:
        for j in range(num_nodes):
            if rng.random() < 0.15 and sum(v is not None for v in row) > 1:
                row[j] = None
    data["overrides"] = {
        "latency_s": latency,
        "quality": rng.uniform(0.5, 0.98, (num_requests, num_nodes)).round(2).tolist(),
        "memory_gb": rng.uniform(0.1, 0.8, (num_requests, num_nodes)).round(2).tolist(),
    }
    if rng.random() < 0.35:
        data["objective"] = {
            "mode": "quality_floor",
            "quality_target": round(float(rng.uniform(0.6, 0.9)), 3),
        }
    if rng.random() < 0.4:
        data["objective"]["deferral_penalty_s"] = round(float(rng.uniform(0.5, 6.0)), 2)
    return Instance.from_dict(data)


def _compare_with_brute_force(problem, best):
    result = ExactPyomo().solve(problem, mip_rel_gap=1e-9)
    if best is None:
        assert result.status is Status.INFEASIBLE, result
        assert result.message
    else:
        assert result.status is Status.OPTIMAL, result
        assert assert_consistent(problem, result) == pytest.approx(best, abs=1e-7)


TINY_SEEDS = range(40)


@functools.cache
def tiny(seed):
    """A random tiny problem and its brute-force optimum (None = infeasible)."""
    problem = problem_of(_tiny_instance(seed))
    return problem, brute_force(problem)


@pytest.mark.parametrize("seed", TINY_SEEDS)
def test_tiny_windows_match_brute_force(seed):
    problem, best = tiny(seed)
    _compare_with_brute_force(problem, best)


def test_tiny_windows_cover_the_cases():
    """The seeds above include every kind of window the model distinguishes."""
    problems, outcomes = zip(*(tiny(seed) for seed in TINY_SEEDS), strict=True)
    assert any(p.deferral_allowed for p in problems)
    assert any(p.quality_target is not None for p in problems)
    assert any(p.num_nodes == 3 for p in problems)
    assert any(o is None for o in outcomes)  # some infeasible
    assert any(len(build_pyomo_model(p).bandwidth) for p in problems)
    assert any(len(build_pyomo_model(p).memory) for p in problems)


def _congested_instance(seed):
    """analytic.json (no overrides: live congestion) with 5-6 requests and an optional 2nd edge."""
    rng = np.random.default_rng(seed)
    data = json.loads((SMALL / "analytic.json").read_text())
    r0, r1 = data["requests"]
    requests = []
    for i in range(int(rng.integers(5, 7))):
        base = copy.deepcopy(r0 if rng.random() < 0.6 else r1)
        base.update(
            id=f"q{i}",
            arrival_s=round(float(rng.uniform(0.0, 2.0)), 3),
            prompt_tokens=int(rng.integers(20, 400)),
            max_output_tokens=int(rng.choice([32, 64, 128])),
        )
        requests.append(base)
    data["requests"] = requests
    if seed % 2:
        data["nodes"].append(dict(data["nodes"][0], id="edge-1"))
        edge_link = {"id": "cell-0/edge-1", "from": "cell-0", "to": "edge-1", "rtt_ms": 12.0}
        data["network"]["links"].append(dict(edge_link, bandwidth_mbps=80.0))
    if seed % 3 == 1:
        data["objective"]["deferral_penalty_s"] = 6.0
    if seed % 3 == 2:
        data["objective"] = {"mode": "quality_floor"}
    return Instance.from_dict(data)


@pytest.mark.parametrize("seed", range(6))
def test_congested_windows_match_brute_force(seed):
    problem = problem_of(_congested_instance(seed))
    assert any(curve.values[-1] > 0 for curve in problem.congestion_curves)
    model = build_pyomo_model(problem)
    assert len(model.PIECES) > 0
    _compare_with_brute_force(problem, brute_force(problem))


# --- agreement with the direct highspy build -------------------------------------------------

HAVE_EXACT = importlib.util.find_spec("qlmio_opt.solvers.exact") is not None


@pytest.mark.skipif(not HAVE_EXACT, reason="solvers/exact.py (direct highspy) not present")
@pytest.mark.parametrize(
    "where", [*(f"small/{n}" for n in ("memory", "bandwidth", "floor", "deferral")), *BENCHMARK]
)
def test_pyomo_and_direct_highs_agree(where):
    from qlmio_opt.solvers.exact import ExactHighs

    problem = problem_of(read_instance(INSTANCES / f"{where}.json"))
    pyomo_result = ExactPyomo().solve(problem, mip_rel_gap=1e-9)
    direct = ExactHighs(mip_rel_gap=1e-9).solve(problem)
    assert pyomo_result.status is direct.status is Status.OPTIMAL
    a = evaluate(problem, pyomo_result.assignment).objective
    b = evaluate(problem, direct.assignment).objective
    assert a == pytest.approx(b, rel=1e-6, abs=1e-9)


@pytest.mark.skipif(not HAVE_EXACT, reason="solvers/exact.py (direct highspy) not present")
def test_pyomo_and_direct_highs_agree_on_infeasible():
    from qlmio_opt.solvers.exact import ExactHighs

    problem = small("infeasible")
    assert ExactPyomo().solve(problem).status is ExactHighs().solve(problem).status
    assert ExactPyomo().solve(problem).status is Status.INFEASIBLE
