"""Closing the loop: the replay of docs/results.md with analytic, learned and oracle predictions.

Usage (from the checkout)::

    python benchmarks/replay_learned.py [--duration 1200] [--model PATH] [--diagnose S]

Replays the Azure conversation trace on loose and tight edge capacity with exact (analytic),
exact and greedy with the learned predictors (the shipped models, or ``--model`` a stem saved by
``qlmio-opt train``), the oracle and all-cloud, all on the same stream and world, and prints the
figures and the reduction against all-cloud with the share of the oracle's reduction.
``--diagnose S`` instead replays S seconds and compares the mean predicted quality of the chosen
pairs with the observed completion rate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from qlmio_opt.predictors import get_predictor
from qlmio_opt.report import markdown_table
from qlmio_opt.simulator import ReplayConfig, World, reduction_table, replay, workload


def diagnose(learned, duration: float) -> None:
    """Predicted against observed quality: all-cloud, and the requests exact sends to the edge
    (their edge quality, and the cloud quality all-cloud gave the same requests)."""
    load = workload("azure-conv", duration, seed=0)
    rows = []
    for label, predictors in (("analytic", "analytic"), ("learned", learned)):
        result = replay(
            load,
            World(),
            ReplayConfig(policies=("exact", "all-cloud"), predictors=predictors, time_limit=10.0),
        )
        exact = result.runs["exact"].requests.set_index("request")
        cloud = result.runs["all-cloud"].requests.set_index("request").loc[exact.index]
        edge = (exact["tier"] == "edge").to_numpy()
        for name, frame, mask in (
            ("all-cloud, all requests", cloud, np.ones(len(exact), bool)),
            ("exact, all requests", exact, np.ones(len(exact), bool)),
            ("exact's edge-routed requests, on their edge node", exact, edge),
            ("the same requests, on the cloud (all-cloud)", cloud, edge),
        ):
            rows.append(
                {
                    "predictors": label,
                    "rows": name,
                    "n": int(mask.sum()),
                    "mean predicted quality": frame["predicted_quality"].to_numpy()[mask].mean(),
                    "observed completion": frame["completed"].to_numpy()[mask].mean(),
                }
            )
    print(f"\n### Predicted against observed, {duration:g} s of azure-conv, loose edge capacity\n")
    print(markdown_table(pd.DataFrame(rows), index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1200.0)
    parser.add_argument("--model", default="learned", help="learned (shipped) or a saved stem")
    parser.add_argument(
        "--diagnose",
        type=float,
        default=0.0,
        help="instead: replay this many seconds and compare predicted with observed quality",
    )
    args = parser.parse_args()
    learned = get_predictor(args.model)
    if args.diagnose:
        diagnose(learned, args.diagnose)
        return
    for name, capacity in (("loose", 1.0), ("tight", 0.25)):
        start = time.perf_counter()
        load = workload("azure-conv", args.duration, seed=0, edge_capacity=capacity)
        analytic = replay(
            load,
            World(),
            ReplayConfig(policies=("exact", "all-cloud", "oracle"), time_limit=10.0),
        )
        with_learned = replay(
            load,
            World(),
            ReplayConfig(policies=("exact", "greedy"), predictors=learned, time_limit=10.0),
        )
        both = pd.concat(
            [
                analytic.summary(),
                with_learned.summary().rename(index=lambda n: f"{n} (learned)"),
            ]
        )
        print(f"\n### {name} edge capacity ({capacity:g}), {time.perf_counter() - start:.0f} s\n")
        shown = ["mean_latency_s", "p95_latency_s", "tcr", "edge_share", "mean_decision_ms"]
        print(markdown_table(both[shown]))
        print()
        print(markdown_table(reduction_table(both)))


if __name__ == "__main__":
    main()
