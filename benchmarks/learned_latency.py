"""Learned against analytic latency on held-out benchmark data (for docs/predictors.md).

Usage (from the checkout)::

    python benchmarks/learned_latency.py [--train 3000] [--test 1000]

Trains :class:`~qlmio_opt.predictors.learned_latency.LearnedLatencyModel` on the ``train`` split
of ``bench-data`` seed 0 (its p90 widened on the ``validation`` split) and scores it on every row
of seed 1 (other requests, other loads):
MAE, MAPE and median APE of the end-to-end latency, the 90th-percentile estimate's coverage, and
the output length's MAPE, overall, per tier and on the rows where the node was idle (no
background request active), against the analytic stand-alone prediction (which knows neither
the load nor the output length).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from qlmio_opt.faces.report import markdown_table
from qlmio_opt.predictors.learned_latency import (
    LearnedLatencyModel,
    analytic_parts,
    latency_metrics,
)
from qlmio_opt.simulator.dataset import bench_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=1000)
    args = parser.parse_args()

    start = time.perf_counter()
    train = bench_data(args.train, 0).table
    test = bench_data(args.test, 1).table
    print(f"data: {len(train):,} + {len(test):,} rows in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    model = LearnedLatencyModel(random_state=0).fit(train)  # train split; p90 widened on validation
    print(f"fit: {time.perf_counter() - start:.1f} s")
    learned = model.predict_table(test)
    analytic = analytic_parts(test)

    rows = []
    subsets = {
        "all rows": np.ones(len(test), bool),
        "edge": (test["tier"] == "edge").to_numpy(),
        "cloud": (test["tier"] == "cloud").to_numpy(),
        "idle node (no background active)": (test["bg_active"] == 0).to_numpy(),
    }
    actual = test["latency_s"].to_numpy()
    out = test["output_tokens"].to_numpy(float)
    for name, rows_mask in subsets.items():
        a = latency_metrics(actual[rows_mask], analytic["latency_s"][rows_mask])
        b = latency_metrics(
            actual[rows_mask], learned["latency_s"][rows_mask], learned["latency_p90_s"][rows_mask]
        )
        rows.append(
            {
                "rows": name,
                "n": int(rows_mask.sum()),
                "MAPE analytic": a["mape"],
                "MAPE learned": b["mape"],
                "median APE analytic": a["median_ape"],
                "median APE learned": b["median_ape"],
                "MAE analytic (s)": a["mae_s"],
                "MAE learned (s)": b["mae_s"],
                "p90 coverage learned": b["p90_coverage"],
                "output-length MAPE analytic": float(
                    np.mean(
                        np.abs(analytic["typical_output_tokens"][rows_mask] - out[rows_mask])
                        / out[rows_mask]
                    )
                ),
                "output-length MAPE learned": float(
                    np.mean(
                        np.abs(learned["output_tokens"][rows_mask] - out[rows_mask])
                        / out[rows_mask]
                    )
                ),
            }
        )
    print("\n" + markdown_table(pd.DataFrame(rows), index=False, digits=3))


if __name__ == "__main__":
    main()
