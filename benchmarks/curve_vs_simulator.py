"""The congestion curve against the simulator on single nodes (the table in docs/formulation.md).

Usage (from the checkout)::

    python benchmarks/curve_vs_simulator.py [--max-count 20] [--samples 5] [--seed 0]

For every distinct node (model, device, slots, memory) of the scenario's deployment and both
serving engines, ``m = 1 .. max-count`` requests drawn as the scenario draws them reach the idle
node at the same instant. The world serves them (:mod:`qlmio_opt.simulator.engine`, built as the
replay builds it, with the world's speeds); the formulation predicts the sum of their latencies
(arrival at the node to the last token) as their stand-alone vision + prefill + decode times plus
the node's congestion curve at ``m`` (:func:`qlmio_opt.formulations.build_problem` on a one-node
instance holding those ``m`` requests). Two predictions are shown:

* ``predicted``: with the world's own stand-alone times (the oracle predictor), so that the
  error is the curve's alone;
* ``analytic``: with the analytic predictor's, what the optimiser sees by default (the curve's
  error plus the predictor's).

Each figure is summed over ``samples`` independent draws of the ``m`` requests. The relative
error is ``(predicted - simulated) / simulated``. Prints a markdown table per node and engine,
then one summary row each: the largest error while ``m`` is within the node's slots
(``max_within_slots``), and the mean and largest over every ``m``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qlmio_opt.domain.instance import ENGINE_SCHEDULERS, Instance
from qlmio_opt.domain.scenarios.draws import draw_requests
from qlmio_opt.domain.scenarios.generate import get_scenario
from qlmio_opt.faces.report import markdown_table
from qlmio_opt.formulations import build_problem
from qlmio_opt.predictors import Predictor, get_predictor, predict
from qlmio_opt.simulator.oracle import OraclePredictor
from qlmio_opt.simulator.single_node import total_latency_together_s
from qlmio_opt.simulator.workload import deployment
from qlmio_opt.simulator.world import World

SAMPLE_STREAM = 271828  # the draws' second seed word: any fixed number, kept for reproducibility
SITE = "site-0"


def draw_bodies(scenario: str, count: int, seed: int, sample: int) -> list[dict[str, Any]]:
    """``count`` request bodies drawn as ``scenario`` draws them (one site, arriving at 0)."""
    rng = np.random.default_rng([int(seed), SAMPLE_STREAM, int(sample)])
    draws = draw_requests(get_scenario(scenario), rng, count, 1).requests
    return [d.body(f"r{k}", SITE, 0.0) for k, d in enumerate(draws)]


def one_node_instance(
    node: dict[str, Any], scheduler: str, bodies: list[dict[str, Any]]
) -> Instance:
    """An instance with ``node`` alone (idle, with the ``scheduler`` engine) and ``bodies``."""
    return Instance.from_dict(
        {
            "format": "qlmio-opt/instance",
            "version": 1,
            "name": "one-node",
            "window_s": 1.0,
            "objective": {"mode": "weighted"},
            "nodes": [{**node, "engine": {"scheduler": scheduler}}],
            "network": {
                "sites": [SITE],
                "links": [
                    {"id": "l", "from": SITE, "to": node["id"], "bandwidth_mbps": 1e3, "rtt_ms": 1}
                ],
            },
            "requests": bodies,
        }
    )


def simulated_total_s(instance: Instance, world: World) -> float:
    """Sum over the instance's requests of their latency on its one node when they all reach it
    idle at time 0, served by the world (the node built as the replay builds it)."""
    return total_latency_together_s(instance, world)


@dataclass(frozen=True)
class Predicted:
    """The formulation's total latency (s) of a node's requests, and its stand-alone part."""

    solo_s: float
    congestion_s: float

    @property
    def total_s(self) -> float:
        return self.solo_s + self.congestion_s


def predicted_total(instance: Instance, predictor: Predictor) -> Predicted:
    """Stand-alone vision + prefill + decode of every request plus the congestion curve of the
    one node at the number of requests (all of them on it)."""
    predictions = predict(instance, predictor)
    parts = predictions.components
    solo = parts["vision_s"][:, 0] + parts["prefill_s"][:, 0] + parts["decode_s"][:, 0]
    problem = build_problem(instance, predictions)
    congestion = float(problem.congestion_curves[0](len(instance.requests)))
    return Predicted(float(solo.sum()), congestion)


def compare_node(
    node: dict[str, Any],
    scheduler: str,
    samples: list[list[dict[str, Any]]],
    max_count: int,
    world: World,
) -> pd.DataFrame:
    """One row per ``m``: simulated and predicted totals summed over the samples."""
    oracle, analytic = OraclePredictor(world), get_predictor("analytic")
    rows = []
    for m in range(1, max_count + 1):
        sim = truth = solo = congestion = by_analytic = 0.0
        for bodies in samples:
            instance = one_node_instance(node, scheduler, bodies[:m])
            sim += simulated_total_s(instance, world)
            predicted = predicted_total(instance, oracle)
            truth += predicted.total_s
            solo += predicted.solo_s
            congestion += predicted.congestion_s
            by_analytic += predicted_total(instance, analytic).total_s
        rows.append(
            {
                "m": m,
                "solo_s": solo,
                "simulated_s": sim,
                "curve_s": congestion,
                "predicted_s": truth,
                "rel_error": (truth - sim) / sim,
                "analytic_s": by_analytic,
                "analytic_rel_error": (by_analytic - sim) / sim,
            }
        )
    return pd.DataFrame(rows)


def distinct_nodes(base: dict[str, Any]) -> list[tuple[dict[str, Any], list[str]]]:
    """The deployment's nodes with a distinct (model, device, slots, memory), each with the ids
    of the nodes it stands for."""
    groups: dict[tuple[Any, ...], tuple[dict[str, Any], list[str]]] = {}
    for node in base["nodes"]:
        key = (node["model"], node["device"], node.get("max_concurrency"), node.get("memory_gb"))
        groups.setdefault(key, (node, []))[1].append(node["id"])
    return list(groups.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--deployment-seed", type=int, default=0)
    parser.add_argument("--max-count", type=int, default=20, help="largest m (default 20)")
    parser.add_argument("--samples", type=int, default=5, help="draws per m (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request draws")
    args = parser.parse_args()
    start = time.perf_counter()
    world = World()
    base = deployment(args.scenario, args.deployment_seed)
    samples = [
        draw_bodies(args.scenario, args.max_count, args.seed, s) for s in range(args.samples)
    ]
    summary = []
    for node, ids in distinct_nodes(base):
        for scheduler in ENGINE_SCHEDULERS:
            table = compare_node(node, scheduler, samples, args.max_count, world)
            label = f"{'/'.join(ids)} ({node['model']} on {node['device']}, {scheduler})"
            print(f"## {label}\n\n{markdown_table(table, index=False)}\n")
            err, analytic = table["rel_error"].abs(), table["analytic_rel_error"].abs()
            slots = int(one_node_instance(node, scheduler, []).node_concurrency[0])
            within = err[table["m"] <= slots]
            summary.append(
                {
                    "nodes": "/".join(ids),
                    "model": node["model"],
                    "device": node["device"],
                    "slots": slots,
                    "engine": scheduler,
                    "max_within_slots": within.max() if len(within) else float("nan"),
                    "mean_abs_rel_error": err.mean(),
                    "max_abs_rel_error": err.max(),
                    "worst_m": int(table["m"][err.idxmax()]),
                    "analytic_mean_abs_rel_error": analytic.mean(),
                    "analytic_max_abs_rel_error": analytic.max(),
                }
            )
    print("## Summary (|relative error| over m = 1 ..", f"{args.max_count})\n")
    print(markdown_table(pd.DataFrame(summary), index=False, digits=3))
    print(
        f"\n{args.samples} draws per m, request seed {args.seed}, deployment "
        f"{args.scenario}/{args.deployment_seed}; {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
