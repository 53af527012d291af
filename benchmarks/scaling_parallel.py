"""Scale-out: the committed windows solved in parallel, and very large windows, in one run.

(a) The 100 committed windows solved with ``exact`` by ``qlmio-opt solve`` three times, one after
    the other: ``--jobs 1``, ``--jobs 2`` (loky processes) and ``--backend dask --jobs 2`` (a
    LocalCluster of two single-threaded workers). Wall time of each command, start-up included,
    its ratio to ``--jobs 1``, and whether the answers agree with the serial run.
(b) Generated windows of 2,000 / 5,000 / 10,000 requests x 12 nodes (written to a temporary
    folder, never committed): greedy's solve time, exact's status, bound (and which bound it
    is: ``greedy`` Lagrangian, ``highs`` MIP dual bound or ``lp`` relaxation) and proven gap,
    exact's whole solve step (build, warm start, HiGHS, bound) against the time limit
    (``exact_solve_s``, ``over_limit_s``), HiGHS's own run time and the peak resident memory
    of each ``qlmio-opt solve`` process (``os.wait4``). The machine's load average is printed
    before and after each solve.

    python benchmarks/scaling_parallel.py [--part a|b|both] [--time-limit 60]
                                          [--sizes 2000,5000,10000] [--nodes 12]
                                          [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from windows import sized_window

from qlmio_opt import write_instance
from qlmio_opt.faces.report import frame_table

ROOT = Path(__file__).resolve().parent
INSTANCES = ROOT.parent / "instances"
MODES = {
    "jobs 1": ["--jobs", "1"],
    "loky, jobs 2": ["--jobs", "2"],
    "dask LocalCluster, 2 workers": ["--backend", "dask", "--jobs", "2"],
}


def run_cli(args: list[str], out_file: Path) -> dict:
    """Run ``qlmio-opt ARGS`` with JSON output into ``out_file`` (its stderr beside it); the
    wall time, exit code, peak RSS and parsed output."""
    start = time.perf_counter()
    with out_file.open("w") as stdout, out_file.with_suffix(".stderr").open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qlmio_opt.faces.cli", *args, "--format", "json"],
            stdout=stdout,
            stderr=stderr,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out_file.read_text()
    return {
        "wall_s": wall,
        "code": proc.returncode,
        "peak_mb": usage.ru_maxrss / 1024.0,  # kB on Linux: the largest process of the tree
        "output": json.loads(text) if text.strip() else None,
    }


def part_a(time_limit: float, out: Path, console: Console) -> pd.DataFrame:
    files = [str(p) for p in sorted(INSTANCES.glob("window_*.json"))]
    base = ["solve", *files, "--solver", "exact", "--time-limit", str(time_limit)]
    runs = {}
    for k, (mode, extra) in enumerate(MODES.items()):
        runs[mode] = run_cli([*base, *extra], out / f"scaling_parallel_run{k}.json")
        console.print(f"{mode}: {runs[mode]['wall_s']:.1f} s", style="dim")
    return summarise_runs(runs)


def summarise_runs(runs: dict[str, dict]) -> pd.DataFrame:
    """One row per mode; answers compared with the first (serial) run on the windows both
    closed (status optimal): objective within the MIP gap 1e-4, and the identical assignment."""
    first = next(iter(runs.values()))
    serial = {s["instance"]: s for s in first["output"]}
    rows = []
    for mode, run in runs.items():
        sols = run["output"]
        both = [
            (s, serial[s["instance"]])
            for s in sols
            if s["status"] == "optimal" and serial[s["instance"]]["status"] == "optimal"
        ]
        same_objective = sum(_same(s["objective"], ref["objective"]) for s, ref in both)
        same_assignment = sum(s["assignment"] == ref["assignment"] for s, ref in both)
        rows.append(
            {
                "mode": mode,
                "windows": len(sols),
                "optimal": sum(s["status"] == "optimal" for s in sols),
                "time_limit": sum(s["status"] == "time_limit" for s in sols),
                "wall_s": run["wall_s"],
                "speedup_vs_jobs_1": first["wall_s"] / run["wall_s"],
                "sum_solve_s": sum(s["times"]["total_s"] for s in sols),
                "same_objective": f"{same_objective}/{len(both)}",
                "same_assignment": f"{same_assignment}/{len(both)}",
                "exit_code": run["code"],
            }
        )
    return pd.DataFrame(rows).set_index("mode")


def _same(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= 1e-4 * max(1.0, abs(b))


def part_b(
    sizes: list[int], nodes: int, time_limit: float, work: Path, console: Console
) -> pd.DataFrame:
    rows = []
    for requests in sizes:
        start = time.perf_counter()
        instance = sized_window(requests, nodes)
        path = work / f"{instance.name}.json"
        write_instance(instance, path)
        generate_s = time.perf_counter() - start
        greedy = run_cli(["solve", str(path), "--solver", "greedy"], work / "greedy.json")
        before = _load()
        exact = run_cli(
            ["solve", str(path), "--solver", "exact", "--time-limit", str(time_limit)],
            work / "exact.json",
        )
        console.print(f"load average before / after exact: {before} / {_load()}", style="dim")
        g, e = greedy["output"], exact["output"]
        stats = e.get("solver_stats", {})
        rows.append(
            {
                "requests": requests,
                "nodes": len(instance.nodes),
                "greedy_solve_ms": 1000 * g["times"]["solve_s"],
                "greedy_total_s": g["times"]["total_s"],
                "greedy_peak_mb": greedy["peak_mb"],
                "exact_status": e["status"],
                "exact_objective": e.get("objective"),
                "exact_bound": e.get("bound"),
                "exact_gap": e.get("gap"),
                "greedy_gap_to_bound": _gap(g.get("objective"), e.get("bound")),
                "milp_columns": stats.get("columns"),
                "bound_source": _bound_source(stats),
                "highs_large_model": _flag(stats.get("highs_large_model")),
                "highs_submip": _flag(stats.get("highs_submip")),
                "warm_start_s": stats.get("warm_start_s"),
                "highs_time_limit_s": stats.get("highs_time_limit_s"),
                "highs_run_s": stats.get("highs_run_s"),
                "lp_bound_s": stats.get("lp_bound_s"),
                "time_limit_s": time_limit,
                "exact_solve_s": e["times"]["solve_s"],
                "over_limit_s": e["times"]["solve_s"] - time_limit,
                "exact_wall_s": exact["wall_s"],
                "exact_peak_mb": exact["peak_mb"],
            }
        )
        console.print(f"{requests} x {nodes}: generated in {generate_s:.1f} s, done", style="dim")
    return pd.DataFrame(rows).set_index(["requests", "nodes"])


def _load() -> str:
    """The 1-, 5- and 15-minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _bound_source(stats: dict) -> str | None:
    """Which bound exact reported: the largest of its ``bound_<source>`` stats."""
    found = {k.removeprefix("bound_"): v for k, v in stats.items() if k.startswith("bound_")}
    return max(found, key=found.__getitem__) if found else None


def _flag(value: float | None) -> str | None:
    return None if value is None else ("yes" if value else "no")


def _gap(objective: float | None, bound: float | None) -> float | None:
    if objective is None or bound is None or objective == 0:
        return None
    return abs(objective - bound) / abs(objective)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["a", "b", "both"], default="both")
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--sizes", default="2000,5000,10000")
    parser.add_argument("--nodes", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    args = parser.parse_args()
    console = Console(width=320)
    console.print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"time limit {args.time_limit:g} s per window; load average {_load()}",
        style="dim",
    )
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qlmio-scaling-") as tmp:
        work = Path(tmp)
        if args.part in ("a", "both"):
            frame = part_a(args.time_limit, args.out, console)
            frame.to_csv(args.out / "scaling_parallel_windows.csv")
            frame_table(console, frame, title="(a) 100 committed windows, exact")
        if args.part in ("b", "both"):
            sizes = [int(v) for v in args.sizes.split(",")]
            frame = part_b(sizes, args.nodes, args.time_limit, work, console)
            frame.to_csv(args.out / "scaling_parallel_large.csv")
            frame_table(console, frame, title="(b) large windows (seconds, MB)")


if __name__ == "__main__":
    main()
