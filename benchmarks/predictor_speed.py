"""How long predicting a window takes: analytic against the shipped learned predictors.

Usage (from the checkout)::

    python benchmarks/predictor_speed.py [--sizes 500x6,2000x12] [--runs 30]

For each generated window, the median of ``--runs`` calls of ``predict`` (everything from the
validated instance to the predictions: features, trees, calibration) for the analytic predictor,
the learned quality model alone, the learned latency model alone and the whole learned
predictor, all measured in the same run. The issue's target is under 20 ms for 500 x 6.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from windows import sized_window

from qlmio_opt.predictors import get_predictor
from qlmio_opt.report import markdown_table


def median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500x6,2000x12")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    analytic, learned = get_predictor("analytic"), get_predictor("learned")
    quality, latency = learned.quality_model_, learned.latency_model_
    rows = []
    for size in args.sizes.split(","):
        n_req, n_node = (int(v) for v in size.split("x"))
        instance = sized_window(n_req, n_node)
        base = analytic.predict(instance)
        parts = base.components
        ok = base.eligible
        transfer = np.where(ok, parts["transfer_s"], 0.0)
        rtt = np.where(ok, parts["rtt_s"], 0.0)
        rows.append(
            {
                "window": f"{n_req} x {n_node}",
                "analytic ms": median_ms(lambda i=instance: analytic.predict(i), args.runs),
                "learned quality ms": median_ms(
                    lambda i=instance: quality.predict_proba_instance(i), args.runs
                ),
                "learned latency ms": median_ms(
                    lambda i=instance, t=transfer, r=rtt: latency.predict_instance(
                        i, t, r, p90=False
                    ),
                    args.runs,
                ),
                "learned (all) ms": median_ms(lambda i=instance: learned.predict(i), args.runs),
            }
        )
    table = pd.DataFrame(rows).set_index("window")
    table["learned / analytic"] = table["learned (all) ms"] / table["analytic ms"]
    print(markdown_table(table))


if __name__ == "__main__":
    main()
