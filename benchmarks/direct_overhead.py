"""Overhead of the direct highspy build on small windows: build + hand-over + HiGHS run over
HiGHS's own run time, median of repeated runs.

Usage (from the checkout)::

    python benchmarks/direct_overhead.py [--sizes 50x6,50x12,200x12] [--repeats 7]

``benchmarks/scaling.py`` times one run per size; on the smallest windows, where HiGHS needs
only 10-20 ms, one run is at the mercy of the machine's load, so this repeats the three steps
(``build_milp``, ``passModel``, HiGHS's run with the greedy warm start, one thread) and prints the
median ratio with the steps of the median run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from windows import sized_window

from qlmio_opt.formulations import build_problem
from qlmio_opt.formulations.milp_arrays import build_milp, columns_from_assignment
from qlmio_opt.predictors import predict
from qlmio_opt.solvers.greedy import Greedy
from qlmio_opt.solvers.highs_direct import new_highs, pass_model, solve_highs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50x6,50x12,200x12")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| window | median ratio | best ratio | build ms | hand-over ms | HiGHS run ms |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        requests, nodes = (int(v) for v in size.split("x"))
        problem = build_problem(instance := sized_window(requests, nodes), predict(instance))
        start = Greedy().solve(problem).assignment
        runs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            milp = build_milp(problem)
            build = time.perf_counter() - t
            highs = new_highs(time_limit=None, mip_rel_gap=1e-4, threads=1, seed=0)
            t = time.perf_counter()
            pass_model(highs, milp)
            hand_over = time.perf_counter() - t
            initial = columns_from_assignment(milp, problem, start)
            run = solve_highs(milp, time_limit=60, threads=1, initial=initial).run_s
            runs.append(((build + hand_over + run) / run, build, hand_over, run))
        runs.sort()
        _, build, hand_over, run = runs[len(runs) // 2]
        print(
            f"| {size} | {statistics.median(r[0] for r in runs):.3f} | {runs[0][0]:.3f} | "
            f"{1000 * build:.2f} | {1000 * hand_over:.2f} | {1000 * run:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
