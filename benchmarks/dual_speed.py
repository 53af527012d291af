"""The greedy's dual with its dense price matrix and without, side by side.

Small windows keep the dual's ``(D, C * R)`` price matrix densely (``Dual.dense``); larger ones
compute each product from the structure. This times the same maximisation both ways on the
committed windows (alternately in one process, best of ``--repeats``, on one BLAS thread as the
greedy runs it) and prints the median times, their ratio and how far the two bounds differ.

    python benchmarks/dual_speed.py [--repeats 3] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from qlmio_opt import read_instance
from qlmio_opt.faces.report import markdown_table
from qlmio_opt.formulations import build_problem
from qlmio_opt.predictors import predict
from qlmio_opt.solvers.greedy import Effort
from qlmio_opt.solvers.greedy_prices import Dual
from qlmio_opt.solvers.greedy_state import build_window
from qlmio_opt.solvers.runtime import hot_path

ROOT = Path(__file__).resolve().parent.parent


def maximise(window, problem, dense: bool) -> tuple[float, float, int]:
    """Seconds to build and maximise the dual, its bound and the evaluations used."""
    effort = Effort()
    start = time.perf_counter()
    dual = Dual(window, problem.allowed.sum(axis=0))
    if not dense:
        dual.dense = None
    scale = float(np.abs(window.cost[np.isfinite(window.cost)]).mean())
    taus = tuple(scale * t for t in effort.temperatures)
    y, evaluations = dual.maximise(None, taus, effort.dual_evaluations)
    bound, _ = dual.value(y)
    return time.perf_counter() - start, bound, evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    for path in sorted((ROOT / "instances").glob("window_*.json"))[: args.limit]:
        instance = read_instance(path)
        problem = build_problem(instance, predict(instance))
        window = build_window(problem)
        if Dual(window, problem.allowed.sum(axis=0)).dense is None:
            continue  # too large for the dense path: both ways are the same code
        best = {True: np.inf, False: np.inf}
        with hot_path():
            for _ in range(args.repeats):
                for dense in (True, False):
                    seconds, bound, evaluations = maximise(window, problem, dense)
                    best[dense] = min(best[dense], seconds)
                    if dense:
                        dense_bound, dense_evals = bound, evaluations
                    else:
                        structured_bound, structured_evals = bound, evaluations
        rows.append(
            {
                "window": path.stem,
                "pairs": problem.num_requests * (problem.num_nodes + 1),
                "dense ms": 1000 * best[True],
                "structured ms": 1000 * best[False],
                "bound difference": abs(dense_bound - structured_bound)
                / max(1.0, abs(structured_bound)),
                "evaluations": dense_evals,
                "structured evaluations": structured_evals,
            }
        )
    frame = pd.DataFrame(rows)
    ratio = frame["structured ms"] / frame["dense ms"]
    summary = pd.DataFrame(
        {
            "windows": [len(frame)],
            "dense median ms": [round(frame["dense ms"].median(), 2)],
            "structured median ms": [round(frame["structured ms"].median(), 2)],
            "median ratio": [round(ratio.median(), 2)],
            "min ratio": [round(ratio.min(), 2)],
            "median evaluations (dense / structured)": [
                f"{frame['evaluations'].median():.0f} / "
                f"{frame['structured evaluations'].median():.0f}"
            ],
            "max relative bound difference": [f"{frame['bound difference'].max():.1e}"],
        }
    )
    print(markdown_table(summary.set_index("windows")))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
