"""The paper's claim tested in the simulated world (tables for docs/results.md).

Usage (from the checkout)::

    python benchmarks/replay_results.py [--duration 1200] [--window 2] [--out benchmarks/out/replay]

Replays the Azure LLM 2023 conversation trace on the default deployment with the
``quality_floor`` objective (minimise latency, mean predicted quality at least all-cloud's less
0.5 points), under loose (whole edge boxes) and tight (a quarter of each edge box's memory and
slots) edge capacity. Policies: exact and greedy batch optimisation, per-request routing,
all-cloud, all-edge and the oracle (exact with the world's truth). It prints, per setting, the
per-policy figures, the reduction against all-cloud with the share of the oracle's reduction, the
formulation's latency error, and the same exact policy when it cannot see the load left by
earlier windows. Also ``--speed``: one hour of the trace under greedy and under exact, timed.
"""

from __future__ import annotations

import argparse
import platform
import time
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from qlmio_opt import __version__
from qlmio_opt.faces.report import markdown_table
from qlmio_opt.simulator import ReplayConfig, World, reduction_table, replay, workload
from qlmio_opt.simulator.metrics import COLUMNS
from qlmio_opt.simulator.output import write_results

POLICIES = ("exact", "greedy", "per-request", "all-cloud", "all-edge", "oracle")
SETTINGS = (("loose", 1.0), ("tight", 0.25))
# the summary's columns less the prediction-error ones, which get their own table
SHOWN = tuple(
    c
    for c in COLUMNS
    if c
    not in ("requests", "p95_decision_ms", "predicted_mean_latency_s", "latency_prediction_error")
)


def run_setting(name: str, capacity: float, args: argparse.Namespace) -> None:
    load = workload("azure-conv", args.duration, seed=args.seed, edge_capacity=capacity)
    config = ReplayConfig(
        window_s=args.window, policies=POLICIES, time_limit=args.time_limit, seed=args.seed
    )
    start = time.perf_counter()
    result = replay(load, World(), config)
    blind = replay(
        load,
        World(),
        ReplayConfig(
            window_s=args.window,
            policies=("exact",),
            time_limit=args.time_limit,
            seed=args.seed,
            observe_load=False,
        ),
    )
    elapsed = time.perf_counter() - start
    if args.out:
        write_results(result, Path(args.out) / name)
    summary = result.summary()
    blind_row = blind.summary().rename(index={"exact": "exact (load not observed)"})
    both = pd.concat([summary, blind_row])
    print(
        f"\n### {name} edge capacity ({capacity:g} of each edge box): "
        f"{len(load.requests):,} requests in {args.duration:g} s, windows of {args.window:g} s "
        f"({elapsed:.0f} s to replay)\n"
    )
    print(markdown_table(both[list(SHOWN)]))
    print(
        "\nAgainst all-cloud (latency reduction of the mean, TCR difference in points, share of "
        "the oracle's reduction):\n"
    )
    print(markdown_table(reduction_table(both)))
    print("\nFormulation's predicted mean latency against the simulated one:\n")
    print(
        markdown_table(
            both[["predicted_mean_latency_s", "mean_latency_s", "latency_prediction_error"]]
        )
    )


def speed(args: argparse.Namespace) -> None:
    load = workload("azure-conv", 3600.0, seed=args.seed)
    print(
        f"\n### One hour of azure-conv ({len(load.requests):,} requests), windows of "
        f"{args.window:g} s\n"
    )
    rows = []
    for policy in ("greedy", "exact"):
        start = time.perf_counter()
        replay(
            load,
            World(),
            ReplayConfig(window_s=args.window, policies=(policy,), time_limit=args.time_limit),
        )
        rows.append(f"| {policy} | {time.perf_counter() - start:.1f} |")
    print("| policy | replay wall time (s) |\n|---|---|")
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1200.0)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write CSVs and plots per setting here")
    parser.add_argument("--speed", action="store_true", help="time one hour under greedy, exact")
    parser.add_argument("--settings", default="loose,tight")
    args = parser.parse_args()
    print(
        f"qlmio-opt {__version__}, highspy {version('highspy')}, Python "
        f"{platform.python_version()}, {platform.machine()}"
    )
    if args.speed:
        speed(args)
        return
    for name, capacity in SETTINGS:
        if name in args.settings.split(","):
            run_setting(name, capacity, args)


if __name__ == "__main__":
    main()
