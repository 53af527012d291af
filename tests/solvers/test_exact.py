"""The exact solver: hand-checked optima, brute force on tiny windows, limits and infeasibility."""

import itertools

import numpy as np
import pytest
from conftest import INSTANCES, SMALL
from hypothesis import given, settings
from hypothesis import strategies as st

from qlmio_opt import Instance, Status, read_instance, solve
from qlmio_opt.app.check import check
from qlmio_opt.formulations import build_problem
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.formulations.milp_arrays import build_milp, columns_from_assignment
from qlmio_opt.predictors import predict
from qlmio_opt.solvers import get_solver
from qlmio_opt.solvers.exact import ExactHighs


def problem_of(instance):
    return build_problem(instance, predict(instance))


def brute_force(problem):
    """Minimum objective over every assignment evaluate() finds feasible (None if none)."""
    options = list(range(problem.num_nodes)) + ([-1] if problem.deferral_allowed else [])
    best = None
    for combo in itertools.product(options, repeat=problem.num_requests):
        ev = evaluate(problem, np.array(combo))
        if not ev.violations and (best is None or ev.objective < best - 1e-12):
            best = ev.objective
    return best


@pytest.mark.parametrize(
    ("name", "objective"),
    [("memory", -22.3), ("bandwidth", -22.5), ("floor", 3.6), ("deferral", -9.5)],
)
def test_hand_checked_optima(name, objective):
    s = solve(read_instance(SMALL / f"{name}.json"), "exact")
    assert s.status is Status.OPTIMAL
    assert s.objective == pytest.approx(objective, abs=1e-9)
    assert s.gap is not None and s.gap <= 1e-4


def test_infeasible_window_names_requests_and_constraint():
    s = solve(read_instance(SMALL / "infeasible.json"), "exact")
    assert s.status is Status.INFEASIBLE
    assert 'memory on node "edge-0"' in s.message
    assert '"r0", "r1"' in s.message


def test_congestion_makes_spreading_pay():
    """Without overrides the congestion curves are live, and the optimum matches brute force."""
    base = read_instance(SMALL / "analytic.json").to_dict()
    first = base["requests"][0]
    base["requests"] = [dict(first, id=f"q{i}", arrival_s=0.1 * i) for i in range(6)]
    instance = Instance.from_dict(base)
    problem = problem_of(instance)
    assert any(c.values[-1] > 0 for c in problem.congestion_curves)
    s = get_solver("exact").solve(problem)
    assert s.status is Status.OPTIMAL
    assert evaluate(problem, s.assignment).objective == pytest.approx(brute_force(problem))


def random_instance(seed, num_requests, deferral, floor):
    rng = np.random.default_rng(seed)
    data = read_instance(SMALL / "memory.json").to_dict()
    data["nodes"].append(
        {
            "id": "edge-1",
            "tier": "edge",
            "model": "qwen2-vl-2b",
            "device": "jetson-agx-orin",
            "memory_gb": float(rng.uniform(0.3, 2.0)),
        }
    )
    data["network"]["links"].append(
        {
            "id": "cell-0/edge-1",
            "from": "cell-0",
            "to": "edge-1",
            "bandwidth_mbps": float(rng.uniform(1.0, 6.0)),
            "rtt_ms": 6.0,
        }
    )
    data["nodes"][0]["memory_gb"] = float(rng.uniform(0.3, 2.0))
    data["network"]["links"][1]["bandwidth_mbps"] = float(rng.uniform(1.0, 6.0))
    data["requests"] = [
        {
            "id": f"q{i}",
            "site": "cell-0",
            "arrival_s": float(rng.uniform(0, 1)),
            "task": "ocr",
            "prompt_tokens": int(rng.integers(0, 100)),
            "images": [{"width": 640, "height": 480, "bytes": int(rng.integers(5e4, 3e5))}],
            "max_output_tokens": 32,
        }
        for i in range(num_requests)
    ]
    latency = rng.uniform(0.1, 3.0, (num_requests, 3)).round(3)
    latency = [[None if rng.random() < 0.1 else float(v) for v in row] for row in latency]
    for row in latency:
        if all(v is None for v in row):
            row[1] = 1.0
    data["overrides"] = {
        "latency_s": latency,
        "quality": rng.uniform(0.4, 1.0, (num_requests, 3)).round(3).tolist(),
        "memory_gb": rng.uniform(0.1, 1.0, (num_requests, 3)).round(3).tolist(),
    }
    if floor:
        data["objective"] = {
            "mode": "quality_floor",
            "quality_target": float(rng.uniform(0.5, 0.9)),
        }
    if deferral:
        data["objective"]["deferral_penalty_s"] = 4.0
    return Instance.from_dict(data)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    num_requests=st.integers(1, 6),
    deferral=st.booleans(),
    floor=st.booleans(),
)
def test_exact_equals_brute_force(seed, num_requests, deferral, floor):
    problem = problem_of(random_instance(seed, num_requests, deferral, floor))
    result = ExactHighs(mip_rel_gap=1e-9).solve(problem)
    best = brute_force(problem)
    if best is None:
        assert result.status is Status.INFEASIBLE
        assert result.message
    else:
        assert result.status is Status.OPTIMAL
        assert evaluate(problem, result.assignment).objective == pytest.approx(best, abs=1e-7)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 100_000), num_requests=st.integers(2, 6))
def test_exact_is_never_worse_than_any_solver(seed, num_requests):
    from qlmio_opt.solvers import SOLVERS

    problem = problem_of(random_instance(seed, num_requests, True, False))
    exact = evaluate(problem, ExactHighs().solve(problem).assignment).objective
    for name in SOLVERS:
        result = get_solver(name).solve(problem, seed=seed)
        if result.assignment is None:
            continue
        ev = evaluate(problem, result.assignment)
        if not ev.violations:
            assert exact <= ev.objective + 1e-6 * max(1.0, abs(ev.objective))


def test_time_limit_returns_the_warm_start_and_a_bound():
    # the solver itself: solve()'s limit also covers predictions, which may use all of 0.05 s
    problem = problem_of(read_instance(INSTANCES / "window_014.json"))
    result = ExactHighs().solve(problem, time_limit=0.05)
    assert result.status in (Status.TIME_LIMIT, Status.OPTIMAL)
    # never "no solution": the fast path's answer is the incumbent
    assert result.assignment is not None
    ev = evaluate(problem, result.assignment)
    assert result.bound is not None and result.bound <= ev.objective + 1e-6 * abs(ev.objective)
    assert not ev.violations


def test_matrix_objective_equals_evaluation_for_any_assignment():
    instance = read_instance(INSTANCES / "window_042.json")
    problem = problem_of(instance)
    milp = build_milp(problem)
    rng = np.random.default_rng(0)
    for _ in range(5):
        assignment = np.array(
            [rng.choice(np.flatnonzero(row)) for row in problem.allowed], dtype=np.int64
        )
        cols = columns_from_assignment(milp, problem, assignment)
        assert milp.col_cost @ cols == pytest.approx(evaluate(problem, assignment).objective)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 100_000), active=st.integers(0, 12))
def test_requests_already_on_a_node_shift_its_congestion(seed, active):
    """Earlier windows' requests on a node: exact still equals brute force, the checker agrees,
    and the node's congestion is never lower than on an idle node."""
    from qlmio_opt.app.check import check
    from qlmio_opt.app.solve import solve

    base = read_instance(SMALL / "analytic.json").to_dict()
    first = base["requests"][0]
    rng = np.random.default_rng(seed)
    base["requests"] = [dict(first, id=f"q{i}", arrival_s=0.1 * i) for i in range(5)]
    idle = Instance.from_dict(base)
    if active:  # requests of earlier windows waiting on the node
        waiting = {"task": "ocr", "prompt_tokens": 60, "max_output_tokens": 64}
        base["nodes"][0]["state"] = {"waiting": [waiting] * active}
    busy = Instance.from_dict(base)
    p_idle, p_busy = problem_of(idle), problem_of(busy)
    counts = np.arange(p_busy.congestion_curves[0].max_count + 1)
    assert (p_busy.congestion_curves[0](counts) >= p_idle.congestion_curves[0](counts) - 1e-9).all()
    result = ExactHighs(mip_rel_gap=1e-9).solve(p_busy)
    assert evaluate(p_busy, result.assignment).objective == pytest.approx(brute_force(p_busy))
    solution = solve(busy, "greedy", seed=int(rng.integers(0, 10)))
    report = check(busy, solution)
    assert report.feasible and report.objective_matches and not report.mismatches, report.summary()


def test_a_window_above_the_pair_limit_gets_the_greedys_answer_and_says_why():
    instance = read_instance(INSTANCES / "window_042.json")
    pairs = int(problem_of(instance).allowed.sum())
    limited = solve(instance, ExactHighs(max_pairs=pairs - 1))
    greedy = solve(instance, "greedy")
    assert f"{pairs:,} allowed request-node pairs" in limited.message
    assert "columns" not in limited.solver_stats  # the MILP was never built
    assert limited.assignment == greedy.assignment
    assert limited.status in (Status.FEASIBLE, Status.OPTIMAL)
    assert check(instance, limited).accepted
    at_the_limit = solve(instance, ExactHighs(max_pairs=pairs))
    assert at_the_limit.status is Status.OPTIMAL and "columns" in at_the_limit.solver_stats


def test_above_the_pair_limit_without_a_warm_start_is_an_error_the_fallback_answers():
    instance = read_instance(INSTANCES / "window_042.json")
    cold = ExactHighs(max_pairs=1, warm_start=False)
    alone = solve(instance, cold)
    assert alone.status is Status.ERROR and not alone.assignment
    assert "above exact's limit of 1" in alone.message
    answered = solve(instance, cold, fallback="greedy")
    assert answered.assignment and check(instance, answered).accepted
