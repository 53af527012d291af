"""Scaling: model building and solving times against window size, measured in one run.

For each size (requests x nodes) one generated window: predict, Problem build, Pyomo model
build, direct array build + hand-over to HiGHS, HiGHS's own MILP run (time limit, threads 1),
the LP relaxation, and the greedy path with its gap to the exact answer.

    python benchmarks/scaling.py [--sizes 50,200,500,1000,2000,5000] [--nodes 6,12]
                                 [--time-limit 60] [--pyomo-max 5000]
                                 [--out benchmarks/out/scaling.csv]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from windows import sized_window

from qlmio_opt.faces.report import frame_table
from qlmio_opt.formulations import build_problem
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.formulations.milp_arrays import build_milp, columns_from_assignment
from qlmio_opt.predictors import predict
from qlmio_opt.solvers import get_solver
from qlmio_opt.solvers.highs_direct import new_highs, pass_model, solve_highs

ROOT = Path(__file__).resolve().parent


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def measure(requests: int, nodes: int, time_limit: float, pyomo_max: int) -> dict:
    instance = sized_window(requests, nodes)
    predictions, predict_s = timed(predict, instance)
    problem, problem_s = timed(build_problem, instance, predictions)
    row = {"requests": requests, "nodes": nodes, "predict_s": predict_s, "problem_s": problem_s}

    if requests <= pyomo_max:
        from qlmio_opt.formulations.pyomo_model import build_pyomo_model

        _, row["pyomo_build_s"] = timed(build_pyomo_model, problem)

    milp, row["direct_build_s"] = timed(build_milp, problem)
    h = new_highs(time_limit=None, mip_rel_gap=1e-4, threads=1, seed=0)
    _, row["direct_pass_s"] = timed(lambda: pass_model(h, milp))

    greedy = get_solver("greedy")
    result, row["greedy_s"] = timed(greedy.solve, problem)
    greedy_obj = (
        evaluate(problem, result.assignment).objective if result.assignment is not None else None
    )

    lp = solve_highs(milp, relax=True, threads=1)
    row["lp_s"] = lp.run_s
    initial = (
        None
        if result.assignment is None
        else columns_from_assignment(milp, problem, result.assignment)
    )
    mip = solve_highs(milp, time_limit=time_limit, threads=1, initial=initial)
    row["highs_run_s"] = mip.run_s
    row["highs_status"] = mip.status
    row["highs_gap"] = mip.mip_gap
    row["overhead_ratio"] = (row["direct_build_s"] + row["direct_pass_s"] + mip.run_s) / mip.run_s
    if mip.objective is not None and greedy_obj is not None:
        row["greedy_gap"] = (greedy_obj - mip.objective) / abs(mip.objective)
        row["greedy_gap_to_bound"] = (
            (greedy_obj - mip.bound) / abs(mip.bound) if mip.bound else float("nan")
        )
    row["speedup_greedy_vs_exact"] = (row["direct_build_s"] + mip.run_s) / row["greedy_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200,500,1000,2000,5000")
    parser.add_argument("--nodes", default="6,12")
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--pyomo-max", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "scaling.csv")
    args = parser.parse_args()
    console = Console(width=220)
    rows = []
    for n in [int(v) for v in args.nodes.split(",")]:
        for r in [int(v) for v in args.sizes.split(",")]:
            rows.append(measure(r, n, args.time_limit, args.pyomo_max))
            console.print(f"{r} x {n}: done", style="dim")
    frame = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    frame_table(console, frame.set_index(["requests", "nodes"]), title="scaling (seconds)")


if __name__ == "__main__":
    main()
