"""Optimality gap and speed of the greedy solver against the exact MILP on the committed windows.

Usage (from the checkout)::

    python benchmarks/greedy_gap.py [--limit N] [--time-limit 60] [--no-cache]

For every ``instances/window_*.json`` it solves the window with ``greedy`` and with the exact
solver (``solvers/exact.py``'s ``ExactHighs``), then prints one row per window and the
median / p95 gap and the median speed ratio.
Gap = (greedy objective - exact objective) / |exact objective|, both recomputed by
:func:`qlmio_opt.formulations.evaluation.evaluate`. Exact results are cached in ``benchmarks/out/``
(keyed by window, time limit and which exact solver ran), so re-running after a greedy change is
quick.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from qlmio_opt import read_instance
from qlmio_opt.formulations import build_problem
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.formulations.problem import Problem
from qlmio_opt.predictors import predict
from qlmio_opt.solvers import get_solver

ROOT = Path(__file__).resolve().parent.parent

OUT = Path(__file__).resolve().parent / "out"


def exact_solver():
    """The package's exact solver, as ``(cache key, run(problem, time_limit))``."""
    from qlmio_opt.solvers.exact import ExactHighs

    solver = ExactHighs()

    def run(problem: Problem, time_limit: float):
        result = solver.solve(problem, time_limit=time_limit)
        return str(result.status), result.assignment, result.bound

    return "exact", run


def cached_exact(path: Path, problem: Problem, time_limit: float, use_cache: bool) -> dict:
    """Exact objective, status and time for one window (from the cache when present)."""
    kind, run = exact_solver()
    cache = OUT / f"{path.stem}.{kind}.{time_limit:g}s.json"
    if use_cache and cache.exists():
        return {**json.loads(cache.read_text()), "cached": True}
    start = time.perf_counter()
    status, assignment, bound = run(problem, time_limit)
    elapsed = time.perf_counter() - start
    record = {
        "status": status,
        "time_s": elapsed,
        "objective": None,
        "bound": None if bound is None else float(bound),
        "assignment": None,
        "cached": False,
    }
    if assignment is not None:
        ev = evaluate(problem, assignment)
        record["objective"] = ev.objective if ev.feasible else None
        record["assignment"] = [int(a) for a in assignment]
    OUT.mkdir(exist_ok=True)
    (OUT / ".gitignore").write_text("*\n")
    cache.write_text(json.dumps(record))
    return record


def greedy_run(
    problem: Problem, repeats: int, name: str = "greedy"
) -> tuple[float | None, float, str]:
    """Greedy objective (None if infeasible), best-of-``repeats`` wall time and status."""
    solver = get_solver(name)
    best = np.inf
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = solver.solve(problem)
        best = min(best, time.perf_counter() - start)
    if result.assignment is None:
        return None, best, str(result.status)
    ev = evaluate(problem, result.assignment)
    if ev.violations:
        return None, best, "violates: " + "; ".join(ev.violations)
    return ev.objective, best, str(result.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N windows")
    parser.add_argument("--time-limit", type=float, default=60.0, help="exact solver limit (s)")
    parser.add_argument("--repeats", type=int, default=3, help="greedy timing: best of N")
    parser.add_argument("--no-cache", action="store_true", help="re-solve the exact model")
    parser.add_argument(
        "--solver", default="greedy", help="the fast solver to measure (greedy, greedy-thorough)"
    )
    args = parser.parse_args(argv)

    paths = sorted((ROOT / "instances").glob("window_*.json"))[: args.limit]
    header = (
        f"{'window':<11}{'req':>5}{'nodes':>6}{'exact obj':>13}{'status':>11}{'mip gap':>9}"
        f"{'greedy obj':>13}{'gap %':>8}{'exact s':>9}{'greedy ms':>10}{'speedup':>9}"
    )
    print(header)
    print("-" * len(header))
    gaps, ratios, near_500x6, greedy_times, exact_times = [], [], [], [], []
    fresh: list[bool] = []
    for path in paths:
        instance = read_instance(path)
        problem = build_problem(instance, predict(instance))
        exact = cached_exact(path, problem, args.time_limit, not args.no_cache)
        fresh.append(not exact.get("cached", False))
        obj, g_time, g_status = greedy_run(problem, args.repeats, args.solver)
        opt = exact["objective"]
        gap = None
        if opt is not None and obj is not None:
            gap = (obj - opt) / max(abs(opt), 1e-9)
            gaps.append(gap)
        ratio = exact["time_s"] / g_time
        ratios.append(ratio)
        greedy_times.append(g_time)
        exact_times.append(exact["time_s"])
        if problem.num_nodes == 6 and 400 <= problem.num_requests <= 600:
            near_500x6.append(f"{path.stem} ({problem.num_requests} x 6) {1000 * g_time:.1f} ms")
        mip_gap = _mip_gap(opt, exact.get("bound"))
        print(
            f"{path.stem:<11}{problem.num_requests:>5}{problem.num_nodes:>6}"
            f"{_fmt(opt, 13, '.4f')}{exact['status']:>11}{mip_gap:>9}"
            f"{_fmt(obj, 13, '.4f')}{_fmt(None if gap is None else 100 * gap, 8, '.3f')}"
            f"{exact['time_s']:>9.2f}{1000 * g_time:>10.2f}{ratio:>9.0f}"
            + ("" if obj is not None else f"  greedy: {g_status}")
        )
    if gaps:
        pct = 100 * np.asarray(gaps)
        print(
            f"\n{len(gaps)} windows compared: median gap {np.median(pct):.3f}%, "
            f"p95 {np.percentile(pct, 95):.3f}%, max {pct.max():.3f}%; "
            f"median speed ratio {statistics.median(ratios):.0f}x"
        )
        ms = 1000 * np.asarray(greedy_times)
        print(
            f"{int((pct > 3.0).sum())} windows above a 3% gap; "
            f"greedy time median {np.median(ms):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms; "
            "exact median / greedy median "
            f"{statistics.median(exact_times) / statistics.median(greedy_times):.0f}x"
        )
        cached = fresh.count(False)
        if cached:
            print(
                f"({cached} exact times come from the cache and were measured when it was "
                "filled, maybe on a busier machine: for a side-by-side ratio rerun with --no-cache "
                "or run benchmarks/solver_gaps.py)"
            )
        else:
            print("(exact and greedy were timed in this run)")
    if near_500x6:
        print("greedy on ~500-request x 6-node windows: " + "; ".join(near_500x6))
    return 0


def _mip_gap(objective: float | None, bound: float | None) -> str:
    if objective is None or bound is None:
        return "-"
    return f"{100 * abs(objective - bound) / max(abs(objective), 1e-9):.3f}%"


def _fmt(value: float | None, width: int, spec: str) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


if __name__ == "__main__":
    raise SystemExit(main())
