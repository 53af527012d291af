"""Closing the loop: the replay of docs/results.md with analytic, learned and oracle predictions.

Usage (from the checkout)::

    python benchmarks/replay_learned.py [--duration 1200] [--model PATH] [--diagnose S]

Replays the Azure conversation trace on loose and tight edge capacity with exact (analytic),
exact and greedy with the learned predictors (the shipped models, or ``--model`` a stem saved by
``qlmio-opt train``; with their selection calibration, ``predictors/selection.py``), exact with
the learned predictors without the selection calibration, the oracle and all-cloud (analytic
predictions; all-cloud with the learned predictions is shown too: its cloud node is chosen by
the learned latency, as the learned floor's reference is), and exact with the two weaker oracles
of :class:`~qlmio_opt.simulator.OraclePredictor` (true completion probabilities, and the
probabilities given only what a request shows, both with expected latencies), all on the same
stream and world, and prints the figures and the reduction against all-cloud with the share of
the oracle's reduction and of the observable oracle's. This is the evaluated replay (seed 0, the
trace's first 20 minutes): the selection calibration's margin is chosen on other replays
(``benchmarks/replay_selection.py``).
``--diagnose S`` instead replays S seconds and compares the mean predicted quality of the chosen
pairs with the observed completion rate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from qlmio_opt.faces.report import markdown_table
from qlmio_opt.predictors import get_predictor
from qlmio_opt.predictors.learned import LearnedPredictor
from qlmio_opt.simulator import (
    OraclePredictor,
    ReplayConfig,
    World,
    reduction_table,
    replay,
    workload,
)


class _Recorder:
    """Wraps a predictor and records, per request, the floor's all-cloud reference quality and the
    window's target, as the formulation computes them (diagnostic only; read-only use)."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.rows: dict[str, tuple[float, float]] = {}
        self.unplaceable = {"deadline": 0, "min_quality": 0}

    def fit(self, data=None, y=None):
        return self

    def predict(self, instance):
        from qlmio_opt.formulations.problem import build_problem

        predictions = self.predictor.predict(instance)
        if instance.requests:
            problem = build_problem(instance, predictions)
            n = problem.num_requests
            cloud = np.where(problem.allowed & ~problem.is_edge, problem.latency_s, np.inf)
            best = np.argmin(cloud, axis=1)
            has = np.isfinite(cloud[np.arange(n), best])
            anywhere = np.where(problem.allowed, problem.quality, 0.0).max(axis=1)
            ref = np.where(has, problem.quality[np.arange(n), best], anywhere)
            placeable = problem.allowed.any(axis=1)
            fast_enough = (
                predictions.eligible & (predictions.latency_s <= problem.deadline_s[:, None])
            ).any(axis=1)
            self.unplaceable["deadline"] += int((~placeable & ~fast_enough).sum())
            self.unplaceable["min_quality"] += int((~placeable & fast_enough).sum())
            for i, r in enumerate(instance.requests):
                self.rows[r.id] = (float(ref[i]), float(problem.quality_target))
        return predictions


def diagnose(learned, duration: float) -> None:
    """Predicted against observed quality: all-cloud, and the requests exact sends to the edge
    (their edge quality, and the cloud quality all-cloud gave the same requests); then, for
    exact, the floor's reference quality and target as the formulation computed them (the
    reference of each request as in the window that dispatched it), and how often a window held
    a request that could run on no node (each such request counts with quality 0 in the
    target), by cause."""
    load = workload("azure-conv", duration, seed=0)
    rows, floor = [], []
    for label, predictors in (("analytic", get_predictor("analytic")), ("learned", learned)):
        recorder = _Recorder(predictors)
        result = replay(
            load,
            World(),
            ReplayConfig(policies=("exact",), predictors=recorder, time_limit=10.0),
        )
        cloud_run = replay(
            load,
            World(),
            ReplayConfig(policies=("all-cloud",), predictors=predictors, time_limit=10.0),
        )
        exact = result.runs["exact"].requests.set_index("request")
        cloud = cloud_run.runs["all-cloud"].requests.set_index("request").loc[exact.index]
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
        rec = pd.DataFrame.from_dict(
            recorder.rows, orient="index", columns=["reference", "target"]
        ).loc[exact.index]
        windows = exact.assign(**rec).groupby("dispatch_s")
        floor.append(
            {
                "predictors": label,
                "mean predicted quality (exact)": exact["predicted_quality"].mean(),
                "mean reference quality": rec["reference"].mean(),
                "mean window target": windows["target"].first().mul(windows.size()).sum()
                / len(exact),
                "unplaceable (window, request): deadline": recorder.unplaceable["deadline"],
                "unplaceable: min_quality": recorder.unplaceable["min_quality"],
                "deferrals": int(exact["deferrals"].sum()),
                "windows with target < reference - 0.5 pt": float(
                    (windows["reference"].mean() - windows["target"].first() > 0.0051).mean()
                ),
            }
        )
    print(f"\n### Predicted against observed, {duration:g} s of azure-conv, loose edge capacity\n")
    print(markdown_table(pd.DataFrame(rows), index=False))
    print("\n### The floor of exact's windows (reference and target as the formulation has them)\n")
    print(markdown_table(pd.DataFrame(floor), index=False))


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
        world = World()
        analytic = replay(
            load,
            world,
            ReplayConfig(policies=("exact", "all-cloud", "oracle"), time_limit=10.0),
        )
        bounds = [
            replay(
                load,
                world,
                ReplayConfig(
                    policies=("exact",),
                    predictors=OraclePredictor(world, knowledge=level),
                    time_limit=10.0,
                ),
            )
            .summary()
            .rename(index=lambda n, level=level: f"{n} ({level} oracle)")
            for level in ("probability", "observable")
        ]
        with_learned = replay(
            load,
            world,
            ReplayConfig(
                policies=("exact", "greedy", "all-cloud"), predictors=learned, time_limit=10.0
            ),
        )
        frames = [
            analytic.summary(),
            with_learned.summary().rename(index=lambda n: f"{n} (learned)"),
        ]
        if getattr(learned, "selection_", None) is not None:
            unselected = LearnedPredictor(learned.quality_model_path, selection=False).fit()
            without = replay(
                load,
                world,
                ReplayConfig(policies=("exact",), predictors=unselected, time_limit=10.0),
            )
            frames.append(without.summary().rename(index=lambda n: f"{n} (learned, no selection)"))
        both = pd.concat([*frames, *bounds])
        print(f"\n### {name} edge capacity ({capacity:g}), {time.perf_counter() - start:.0f} s\n")
        shown = ["mean_latency_s", "p95_latency_s", "tcr", "edge_share", "mean_decision_ms"]
        print(markdown_table(both[shown]))
        print()
        reduction = reduction_table(both)
        ceiling = reduction.loc["exact (observable oracle)", "latency_reduction"]
        reduction["share_of_observable_oracle_reduction"] = reduction["latency_reduction"] / ceiling
        print(markdown_table(reduction))


if __name__ == "__main__":
    main()
