"""Closing the loop, first look: the replay of docs/results.md with the learned quality model.

Usage (from the checkout)::

    python benchmarks/replay_learned.py [--duration 1200]

Trains :class:`~qlmio_opt.predictors.learned.LearnedPredictor` (learned quality, analytic
latency) on ``bench-data`` (3,000 requests, seed 0), then replays the Azure conversation trace on
loose and tight edge capacity with exact and greedy using it, beside exact with the analytic
predictors and all-cloud, and prints the figures and the reduction against all-cloud.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from qlmio_opt.predictors.learned import LearnedPredictor
from qlmio_opt.report import markdown_table
from qlmio_opt.simulator import ReplayConfig, World, reduction_table, replay, workload
from qlmio_opt.simulator.dataset import bench_data


def diagnose(learned: LearnedPredictor, duration: float) -> None:
    """Mean predicted quality of the chosen pairs against the observed completion rate."""
    load = workload("azure-conv", duration, seed=0)
    rows = []
    for label, predictors in (("analytic", "analytic"), ("learned", learned)):
        result = replay(
            load, World(), ReplayConfig(policies=("exact", "all-cloud"), predictors=predictors)
        )
        for policy, run in result.runs.items():
            d = run.requests
            rows.append(
                {
                    "predictors": label,
                    "policy": policy,
                    "mean predicted quality": d["predicted_quality"].mean(),
                    "observed completion": d["completed"].mean(),
                }
            )
    print(f"\n### Chosen pairs, {duration:g} s of azure-conv, loose edge capacity\n")
    print(markdown_table(pd.DataFrame(rows), index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1200.0)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument(
        "--diagnose",
        type=float,
        default=0.0,
        help="instead: replay this many seconds and compare predicted with observed quality",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    learned = LearnedPredictor(random_state=0).fit(bench_data(args.train, 0))
    print(f"trained in {time.perf_counter() - start:.0f} s")
    if args.diagnose:
        diagnose(learned, args.diagnose)
        return
    for name, capacity in (("loose", 1.0), ("tight", 0.25)):
        load = workload("azure-conv", args.duration, seed=0, edge_capacity=capacity)
        analytic = replay(
            load, World(), ReplayConfig(policies=("exact", "all-cloud"), time_limit=10.0)
        )
        with_learned = replay(
            load,
            World(),
            ReplayConfig(policies=("exact", "greedy"), predictors=learned, time_limit=10.0),
        )
        both = pd.concat(
            [
                analytic.summary(),
                with_learned.summary().rename(index=lambda n: f"{n} (learned quality)"),
            ]
        )
        print(f"\n### {name} edge capacity ({capacity:g})\n")
        shown = ["mean_latency_s", "p95_latency_s", "tcr", "edge_share", "mean_decision_ms"]
        print(markdown_table(both[shown]))
        print()
        print(markdown_table(reduction_table(both)))


if __name__ == "__main__":
    main()
