"""Solve every committed window exactly and write instances/bks.csv (best-known values).

Protocol: analytic predictors (recorded per row, with the SHA-256 of the window file, so that
`compare` and `sweep` use a row only for exactly that file), HiGHS through the direct build
(`exact`), relative gap 1e-4, a time limit per window (default 60 s), warm start from the fast
path, seed 0, HiGHS threads as given (default 1, so two runs can share this 2-core machine). A
window is `optimal` when HiGHS proved the gap; otherwise the row holds the incumbent, the bound
and the proven gap.

    python benchmarks/best_known.py [--time-limit 60] [--threads 1] [--limit N]
                                    [--only window_013,window_037] [--out instances/bks.csv]

``--only`` re-solves the named windows and replaces their rows of ``--out``, keeping the others
(for example after a change that alters those windows' models only).
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path

import highspy

import qlmio_opt
from qlmio_opt import read_instance, solve
from qlmio_opt.domain.best_known import BKS_PREDICTORS, file_sha256
from qlmio_opt.solvers.exact import ExactHighs

ROOT = Path(__file__).resolve().parent.parent
FIELDS = [
    "instance",
    "requests",
    "nodes",
    "status",
    "objective",
    "bound",
    "gap",
    "deferred",
    "time_s",
    "time_limit_s",
    "solver",
    "highs_version",
    "qlmio_opt_version",
    "machine",
    "predictors",
    "instance_sha256",
]


def highs_version() -> str:
    h = highspy.Highs()
    return f"{h.version()}" if hasattr(h, "version") else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--only", default=None, help="comma-separated window names")
    parser.add_argument("--out", type=Path, default=ROOT / "instances" / "bks.csv")
    args = parser.parse_args()
    files = sorted((ROOT / "instances").glob("window_*.json"))[: args.limit]
    kept: dict[str, dict] = {}
    if args.only:
        names = set(args.only.split(","))
        files = [f for f in files if f.stem in names]
        with open(args.out, newline="") as f:
            kept = {row["instance"]: row for row in csv.DictReader(f)}
    machine = (
        f"{platform.machine()} {platform.processor() or ''} {platform.python_version()}".strip()
    )
    rows = []
    solver = ExactHighs(threads=args.threads)
    version = highs_version()
    for path in files:
        instance = read_instance(path)
        start = time.perf_counter()
        sol = solve(instance, solver, time_limit=args.time_limit, predictors=BKS_PREDICTORS)
        elapsed = time.perf_counter() - start
        rows.append(
            {
                "instance": instance.name,
                "requests": len(instance.requests),
                "nodes": len(instance.nodes),
                "status": sol.status.value,
                "objective": f"{sol.objective:.6f}" if sol.objective is not None else "",
                "bound": f"{sol.bound:.6f}" if sol.bound is not None else "",
                "gap": f"{sol.gap:.3e}" if sol.gap is not None else "",
                "deferred": len(sol.deferred),
                "time_s": f"{elapsed:.2f}",
                "time_limit_s": args.time_limit,
                "solver": "exact (direct highspy build, mip_rel_gap 1e-4)",
                "highs_version": version,
                "qlmio_opt_version": qlmio_opt.__version__,
                "machine": machine,
                "predictors": BKS_PREDICTORS,
                "instance_sha256": file_sha256(path),
            }
        )
        print(
            f"{instance.name:12s} {len(instance.requests):5d} req  {sol.status.value:10s} "
            f"obj {rows[-1]['objective']:>14s}  gap {rows[-1]['gap']:>9s}  {elapsed:6.2f} s",
            flush=True,
        )
    if kept:
        kept.update({row["instance"]: row for row in rows})
        rows = [kept[name] for name in sorted(kept)]
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
