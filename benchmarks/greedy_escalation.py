"""The greedy's escalation (more search where the dual bound leaves room), on and off.

Usage (from the checkout)::

    python benchmarks/greedy_escalation.py [--settings 0.02:2,0.02:3:0.002]
    python benchmarks/greedy_escalation.py --held-out SEED COUNT [--time-limit 30]
    python benchmarks/greedy_escalation.py --solve-exact [--time-limit 60]

On the committed windows the gap is to the best-known value of ``instances/bks.csv`` (with
``--solve-exact``, exact also solves each within ``--time-limit`` in the same run, for the speed
ratios). With ``--held-out`` the windows are generated afresh (default scenario, windows
0..COUNT-1 of SEED, none of them committed) and exact solves each within ``--time-limit``.
Where exact ran, every setting's median per-window ratio of exact's time to its own is printed.
Each setting ``GAP:SCALE[:STOP]`` escalates when the normal search ends more than GAP above the
bound, with SCALE times its budget more, and stops any search within STOP of the bound
(``Effort.gap``, default 0.005; ``0.02:3:0.002`` is the greedy before 2026-12-03's second
session); ``off`` is the default without escalation. Greedy is timed on its second call (wall
clock).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from qlmio_opt import Instance, read_instance
from qlmio_opt.domain.scenarios import generate_window
from qlmio_opt.faces.report import markdown_table
from qlmio_opt.formulations import build_problem
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.predictors import predict
from qlmio_opt.solvers import get_solver
from qlmio_opt.solvers.greedy import Effort, Greedy

ROOT = Path(__file__).resolve().parent.parent


def efforts(settings: str) -> dict[str, Effort]:
    out = {"off": Effort(escalate_scale=0.0)}
    for item in settings.split(","):
        values = [float(v) for v in item.split(":")]
        stop = {"gap": values[2]} if len(values) > 2 else {}
        out[item] = Effort(escalate_gap=values[0], escalate_scale=values[1], **stop)
    return out


def windows(args) -> list[tuple[str, object, float | None]]:
    """(name, problem, reference objective or None to solve exactly)."""
    if args.held_out is None:
        bks = pd.read_csv(ROOT / "instances" / "bks.csv").set_index("instance")["objective"]
        out = []
        for name in bks.index:
            instance = read_instance(ROOT / "instances" / f"{name}.json")
            out.append((name, build_problem(instance, predict(instance)), float(bks[name])))
        return out
    seed, count = args.held_out
    out = []
    for k in range(count):
        instance = Instance.from_dict(generate_window("default", k, seed))
        out.append((f"seed{seed}-{k:03d}", build_problem(instance, predict(instance)), None))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="0.02:2,0.02:3:0.002")
    parser.add_argument("--held-out", type=int, nargs=2, metavar=("SEED", "COUNT"))
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--solve-exact", action="store_true")
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    configs = efforts(args.settings)
    rows = []
    for name, problem, reference in windows(args):
        row = {"window": name, "requests": problem.num_requests}
        if reference is None or args.solve_exact:
            start = time.perf_counter()
            result = get_solver("exact").solve(problem, time_limit=args.time_limit)
            row["exact_s"] = time.perf_counter() - start
            row["exact_status"] = str(result.status)
            solved = evaluate(problem, result.assignment).objective
            reference = solved if reference is None else min(reference, solved)
        for label, effort in configs.items():
            solver = Greedy(effort)
            solver.solve(problem)
            start = time.perf_counter()
            result = solver.solve(problem)
            row[f"{label} ms"] = 1000 * (time.perf_counter() - start)
            value = evaluate(problem, result.assignment).objective
            row[f"{label} gap"] = (value - reference) / abs(reference)
            row[f"{label} escalated"] = result.stats["escalated"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    summary = []
    for label in configs:
        gap, ms = frame[f"{label} gap"], frame[f"{label} ms"]
        worst = frame.sort_values(f"{label} gap", ascending=False).head(5)
        summary.append(
            {
                "setting": label,
                "median gap %": round(100 * gap.median(), 3),
                "p95 gap %": round(100 * np.percentile(gap, 95), 2),
                "windows > 3%": int((gap > 0.03).sum()),
                "max gap %": round(100 * gap.max(), 1),
                "escalated": int(frame[f"{label} escalated"].sum()),
                "median ms": round(ms.median(), 1),
                "p95 ms": round(np.percentile(ms, 95), 1),
                "worst": ", ".join(
                    f"{w} {100 * g:.1f}" for w, g in worst[["window", f"{label} gap"]].values
                ),
            }
        )
    print(f"{len(frame)} windows")
    print(markdown_table(pd.DataFrame(summary).set_index("setting")))
    if "exact_s" in frame:
        proven = int((frame["exact_status"] == "optimal").sum())
        ratios = ", ".join(
            f"{label} {np.median(1000 * frame['exact_s'] / frame[f'{label} ms']):.0f}x"
            for label in configs
        )
        print(
            f"exact: {proven}/{len(frame)} proven within {args.time_limit:g} s, median "
            f"{frame['exact_s'].median():.2f} s; median per-window ratio of exact's time to "
            f"the greedy's: {ratios}"
        )


if __name__ == "__main__":
    main()
