"""Every registered solver on the committed windows, against the exact optimum, in one run.

Prints per solver: windows with a feasible answer, median / p95 / max gap to the exact objective
of the same run (and median / p95 gap to ``instances/bks.csv``), median solve time and the median
speed ratio to exact; the per-window rows go
to a CSV. Exact runs with the given time limit (60 s by default): on windows it cannot close,
the gap is to its incumbent, and the proven gap is in the exact rows.

    python benchmarks/solver_gaps.py [--limit N] [--time-limit 60] [--solvers exact,greedy,...]
                                     [--out benchmarks/out/solver_gaps.csv]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress

from qlmio_opt import read_instance
from qlmio_opt.app.compare import compare, summarise
from qlmio_opt.domain.best_known import KnownValues
from qlmio_opt.faces.report import frame_table
from qlmio_opt.solvers import SOLVERS

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--solvers", default=",".join(n for n in SOLVERS if n != "exact-pyomo"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "solver_gaps.csv")
    args = parser.parse_args()
    names = args.solvers.split(",")
    if "exact" not in names:
        names.insert(0, "exact")
    files = sorted((ROOT / "instances").glob("window_*.json"))[: args.limit]
    console = Console(width=200)
    frames = []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("windows", total=len(files))
        for path in files:
            instance = read_instance(path)
            best = KnownValues.beside(path).objective(instance.name)
            known = None if best is None else {instance.name: best}
            frames.append(compare([instance], names, time_limit=args.time_limit, best_known=known))
            bar.advance(task)
    frame = pd.concat(frames, ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    summary = summarise(frame)
    summary["max_gap_to_exact"] = frame.groupby("solver", sort=False)["gap_to_exact"].max()
    exact = frame[frame.solver == "exact"]
    console.print(
        f"{len(files)} windows on {platform.machine()} ({platform.python_version()}); exact proved "
        f"{(exact.status == 'optimal').sum()} optimal within {args.time_limit:g} s"
    )
    frame_table(console, summary, title="solvers against the exact optimum (gaps as fractions)")
    big = frame[(frame.solver == "greedy") & (frame.gap_to_exact > 0.01)]
    if len(big):
        frame_table(console, big.set_index("instance"), title="greedy windows above 1% gap")
    if "greedy" in names:
        pivot = frame.pivot_table(index="instance", columns="solver", values="time_s")
        ratio = pivot["exact"] / pivot["greedy"]
        console.print(
            f"greedy speed ratio to exact: median {np.median(ratio):.0f}x, "
            f"min {ratio.min():.1f}x over {len(ratio)} windows; ratio of the median times "
            f"{pivot['exact'].median() / pivot['greedy'].median():.0f}x, of the total times "
            f"{pivot['exact'].sum() / pivot['greedy'].sum():.0f}x"
        )


if __name__ == "__main__":
    main()
