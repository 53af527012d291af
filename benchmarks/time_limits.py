"""Time limits as promises: each solver's wall time against its limit, side by side.

For each size (generated default-scenario windows, ``benchmarks/windows.py``) and limit, every
solver is called as a user calls it, ``qlmio_opt.solve(instance, solver, time_limit=...)``
(predictions, problem, solver and Solution all inside the limit), and the table shows the wall
time over the limit, whether it kept the promise (wall <= limit + max(10% of it, 50 ms),
docs/scaling.md, "Time limits"), the status and whether an assignment came back. ``cpu_s`` is
the process's CPU time during the call (all its threads: on a shared machine, the wall time
less the waits for a core, plus HiGHS's threads). ``floor_s`` is
what comes before any solver (predict + problem) and ``wrap_s`` what comes after it (the
Solution); ``auto`` is ``qlmio_opt.assign``'s default (exact, the greedy as fallback).

    python benchmarks/time_limits.py [--sizes 1000x12,10000x12] [--limits 0.1,0.5,1,2]
                                     [--solvers all] [--out benchmarks/out/time_limits.csv]

Each solve runs once, in this process, one after the other; HiGHS left stopping in the
background by one solve is waited for by the next exact solve within that solve's own limit.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from windows import sized_window

from qlmio_opt import solve
from qlmio_opt.faces.report import frame_table
from qlmio_opt.solvers import SOLVERS

ROOT = Path(__file__).resolve().parent
SLACK_SHARE, SLACK_MIN_S = 0.10, 0.05  # the documented promise


def allowed_s(limit: float) -> float:
    """The latest wall time that keeps the promise for ``limit``."""
    return limit + max(SLACK_SHARE * limit, SLACK_MIN_S)


def run_one(instance, solver: str, limit: float) -> dict:
    """One solve, as ``solve()`` (or ``assign()``'s ``auto``) does it, timed from outside."""
    name, fallback = ("exact", "greedy") if solver == "auto" else (solver, None)
    load_before = os.getloadavg()[0]
    cpu_start = time.process_time()
    start = time.perf_counter()
    solution = solve(instance, name, time_limit=limit, fallback=fallback)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    times = solution.times
    return {
        "requests": len(instance.requests),
        "nodes": len(instance.nodes),
        "solver": solver,
        "limit_s": limit,
        "wall_s": wall,
        "cpu_s": cpu,
        "ratio": wall / limit,
        "kept": wall <= allowed_s(limit),
        "status": solution.status.value,
        # a time_limit status may come without an assignment: a decision per request says so
        "answered": bool(solution.requests),
        "floor_s": times.predict_s + times.build_s,
        "solve_s": times.solve_s,
        "wrap_s": wall - times.total_s,
        "answered_by": solution.solver,
        "load": load_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000x12,10000x12", help="REQUESTSxNODES,...")
    parser.add_argument("--limits", default="0.1,0.5,1,2")
    parser.add_argument("--solvers", default="all", help="comma-separated, or all (+ auto)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "time_limits.csv")
    args = parser.parse_args()
    solvers = [*SOLVERS, "auto"] if args.solvers == "all" else args.solvers.split(",")
    limits = [float(v) for v in args.limits.split(",")]
    console = Console(width=200)
    rows = []
    for size in args.sizes.split(","):
        requests, nodes = (int(v) for v in size.split("x"))
        instance = sized_window(requests, nodes)
        for solver in solvers:
            for limit in limits:
                rows.append(run_one(instance, solver, limit))
                console.print(
                    f"{size} {solver} {limit:g} s: {rows[-1]['wall_s']:.3f} s", style="dim"
                )
    frame = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    wide = frame.pivot_table(
        index=["requests", "nodes", "solver"], columns="limit_s", values="ratio", sort=False
    )
    wide.columns = [f"wall/limit @ {c:g} s" for c in wide.columns]
    frame_table(console, wide, title="wall time / time limit (solve() as a user calls it)")
    cpu = frame.pivot_table(
        index=["requests", "nodes", "solver"], columns="limit_s", values="cpu_s", sort=False
    )
    cpu.columns = [f"cpu s @ {c:g} s" for c in cpu.columns]
    frame_table(console, cpu, title="process CPU seconds of the call (waits for a core excluded)")
    broken = frame[~frame["kept"]]
    frame_table(
        console,
        broken.set_index(["requests", "nodes", "solver", "limit_s"])[
            ["wall_s", "cpu_s", "floor_s", "solve_s", "wrap_s", "status", "answered_by", "load"]
        ],
        title=f"over limit + max(10%, 50 ms): {len(broken)} of {len(frame)} solves",
    )
    summary = frame.groupby("solver", sort=False).agg(
        kept=("kept", "sum"), solves=("kept", "size"), worst_ratio=("ratio", "max")
    )
    frame_table(console, summary, title="per solver")


if __name__ == "__main__":
    main()
