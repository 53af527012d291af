"""What a tight time limit must hold before and after any solver: the floor, step by step.

Usage (from the checkout)::

    python benchmarks/time_floor.py [--sizes 1000x12,10000x12] [--runs 15]

For each generated window (``benchmarks/windows.py``) every step is timed ``--runs`` times,
the steps interleaved round by round in one process (a load change on a shared machine hits
them alike), with Python's garbage collector paused as ``qlmio_opt.solve`` pauses it. The
tables give the median and the best run, in milliseconds of wall time and of the calling
thread's CPU time (less sensitive to the process waiting for a core on a busy machine):

- ``predict``: the analytic predictor; ``predict before``: the plain version kept as the
  tests' reference (``tests/predictors/analytic_reference.py``: one request field at a time,
  one node at a time, every image through its rule), the code before the fast path;
- ``build``: the problem (``build_problem``: eligibility, congestion curves and their convex
  envelopes);
- ``quick``: the greedy's quick construction (``solvers/greedy_quick.py``), what a time limit
  too short for the priced start gets;
- ``solution``: ``to_solution`` of the quick construction's assignment (what ``solve`` keeps
  ``SOLUTION_S_PER_REQUEST`` per request for).

``floor`` (the sum of ``predict`` and ``build``) is what ``benchmarks/time_limits.py`` prints as
``floor_s``: a solver runs only on what a limit leaves of it.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from windows import sized_window

from qlmio_opt.app.solve import to_solution
from qlmio_opt.domain.solution import Status, Times
from qlmio_opt.faces.report import markdown_table
from qlmio_opt.formulations import build_problem
from qlmio_opt.predictors import AnalyticPredictor
from qlmio_opt.solvers.base import SolverResult
from qlmio_opt.solvers.greedy_quick import quick_assignment

# the tests' reference of the analytic predictor (tests/predictors/analytic_reference.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "predictors"))
from analytic_reference import reference_predict


def interleaved(
    steps: dict[str, Callable[[], Any]], runs: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Wall and thread-CPU seconds of ``runs`` calls of every step, one call of each per round,
    with the garbage collector paused during each call."""
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for fn in steps.values():  # warm-up
        fn()
    for _ in range(runs):
        for name, fn in steps.items():
            gc.disable()
            c0, t0 = time.thread_time(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.thread_time() - c0)
            gc.enable()
    return {k: np.array(v) for k, v in wall.items()}, {k: np.array(v) for k, v in cpu.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000x12,10000x12")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    analytic = AnalyticPredictor()
    tables: dict[str, list[dict[str, Any]]] = {"median": [], "best run": []}
    for size in args.sizes.split(","):
        n_req, n_node = (int(v) for v in size.split("x"))
        instance = sized_window(n_req, n_node)
        predictions = analytic.predict(instance)
        problem = build_problem(instance, predictions)
        assignment = quick_assignment(problem)
        result = SolverResult(Status.FEASIBLE, assignment)
        steps: dict[str, Callable[[], Any]] = {
            "predict": lambda i=instance: analytic.predict(i),
            "predict before": lambda i=instance: reference_predict(i),
            "build": lambda i=instance, p=predictions: build_problem(i, p),
            "quick": lambda p=problem: quick_assignment(p),
        }
        if assignment is not None:
            steps["solution"] = lambda i=instance, p=problem, r=result: to_solution(
                i, p, r, "greedy", Times(), "analytic"
            )
        wall, cpu = interleaved(steps, args.runs)
        for title, stat in (("median", np.median), ("best run", np.min)):
            row: dict[str, Any] = {"window": f"{n_req} x {n_node}"}
            for name in steps:
                row[f"{name} ms"] = 1000.0 * float(stat(wall[name]))
            row["floor ms"] = row["predict ms"] + row["build ms"]
            for name in ("predict", "build", "quick"):
                row[f"{name} cpu ms"] = 1000.0 * float(stat(cpu[name]))
            tables[title].append(row)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for title, rows in tables.items():
        print(f"\n{title} of {args.runs} interleaved runs:\n")
        print(markdown_table(pd.DataFrame(rows).set_index("window")))


if __name__ == "__main__":
    main()
