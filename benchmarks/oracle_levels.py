"""How well each level of knowledge ranks the world's drawn outcomes, per node.

Usage (from the checkout)::

    python benchmarks/oracle_levels.py [--duration 600] [--window 50]

Takes the first ``--duration`` seconds of the Azure conversation trace on the default deployment
(the replay of ``docs/results.md``), cuts them into windows of ``--window`` requests and scores
every pair's predicted quality against the drawn outcome: AUC and Brier score per node for
analytic, the shipped learned predictor (with and without its selection calibration), the
observable oracle (completion probability given what a request shows) and the probability
oracle (given its hidden difficulty too). The observable oracle is the ceiling of any predictor
of a request's features.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, roc_auc_score

from qlmio_opt.domain.instance import Instance
from qlmio_opt.faces.report import markdown_table
from qlmio_opt.predictors import get_predictor
from qlmio_opt.predictors.learned import LearnedPredictor
from qlmio_opt.simulator import OraclePredictor, World, workload

SOURCES = ("analytic", "learned", "learned, no selection", "observable", "probability")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--window", type=int, default=50)
    args = parser.parse_args()
    world = World()
    learned = get_predictor("learned")
    predictors = {
        "analytic": get_predictor("analytic"),
        "learned": learned,
        "learned, no selection": LearnedPredictor(
            learned.quality_model_path, selection=False
        ).fit(),
        "observable": OraclePredictor(world, knowledge="observable"),
        "probability": OraclePredictor(world, knowledge="probability"),
    }
    load = workload("azure-conv", args.duration, seed=0)
    frames = []
    for start in range(0, len(load.requests), args.window):
        requests = [dict(r, arrival_s=0.0) for r in load.requests[start : start + args.window]]
        instance = Instance.from_dict(
            {**load.base, "window_s": 2.0, "name": f"w{start}", "requests": requests}
        )
        done = world.pairs(instance.requests, instance.nodes).completed
        quality = {name: p.predict(instance).quality for name, p in predictors.items()}
        for j, node in enumerate(instance.nodes):
            frames.append(
                pd.DataFrame(
                    {
                        "node": node.id,
                        "done": done[:, j],
                        **{k: v[:, j] for k, v in quality.items()},
                    }
                )
            )
    pairs = pd.concat(frames)
    rows = {}
    for node, d in pairs.groupby("node"):
        rows[node] = {f"auc {s}": roc_auc_score(d["done"], d[s]) for s in SOURCES}
        rows[node] |= {f"brier {s}": brier_score_loss(d["done"], d[s]) for s in SOURCES}
    table = pd.DataFrame.from_dict(rows, orient="index").round(3)
    print(f"{len(load.requests)} requests, {len(pairs)} pairs\n")
    print(markdown_table(table[[c for c in table.columns if c.startswith("auc")]]))
    print()
    print(markdown_table(table[[c for c in table.columns if c.startswith("brier")]]))
    means = ", ".join(f"{s} {np.mean(table['auc ' + s]):.3f}" for s in SOURCES)
    print(f"\nmean AUC over nodes: {means}")


if __name__ == "__main__":
    main()
