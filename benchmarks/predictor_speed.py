"""How long predicting a window takes: analytic against the shipped learned predictors.

Usage (from the checkout)::

    python benchmarks/predictor_speed.py [--sizes 500x6,5000x12] [--runs 30]

For each generated window, every variant is timed ``--runs`` times, the variants interleaved
round by round in one process (so that a load change on a shared machine hits them alike), and
the table gives the median (a second table the best run) of the wall-clock time, and for the
whole learned predictor also of the CPU time of the calling thread (less sensitive to the
process being descheduled on a busy machine). Each call goes from the validated instance to the
predictions (features, trees, calibration):

- ``analytic``: :class:`~qlmio_opt.predictors.analytic.AnalyticPredictor`;
- ``quality`` / ``latency``: the learned quality model alone / the learned latency model alone
  (output length and latency, no p90, as the learned predictor calls it);
- ``learned``: the whole learned predictor (it runs the analytic one as well);
- ``before``: the same through the straightforward path kept as the tests' reference
  (``tests/predictors/reference_path.py``: every pair a feature row of the table path, the trees
  walked one full matrix per step), i.e. the code this benchmark measured before the fast path.

The fast path keeps the parse of every distinct prompt between calls; it is emptied before
every timed call (``cold``: a scheduler sees new prompts in every window), except in the
``learned warm ms`` column. The issue's target is under 20 ms for 500 x 6 (``learned ms``).
The predictions of the two paths are compared too (largest absolute difference, printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from windows import sized_window

from qlmio_opt.faces.report import markdown_table
from qlmio_opt.predictors import get_predictor
from qlmio_opt.predictors.learned_features import clear_caches

# the tests' oracle of the fast path (tests/predictors/reference_path.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "predictors"))
from reference_path import (
    reference_latency,
    reference_predictor,
    reference_quality,
)


def cold(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` with the prompt cache emptied first (outside the timing: see :func:`interleaved`)."""
    fn.cold = True  # type: ignore[attr-defined]
    return fn


def interleaved(
    variants: dict[str, Callable[[], Any]], runs: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Wall-clock and CPU seconds (of this thread) of ``runs`` calls of every variant, one call
    of each per round."""
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(runs):
        for name, fn in variants.items():
            if getattr(fn, "cold", False):
                clear_caches()
            c0, t0 = time.thread_time(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.thread_time() - c0)
    return {k: np.array(v) for k, v in wall.items()}, {k: np.array(v) for k, v in cpu.items()}


def largest_difference(a: Any, b: Any) -> float:
    """Largest absolute difference between the finite entries of two prediction sets."""
    worst = 0.0
    for name in ("quality", "latency_s", "memory_gb"):
        x, y = getattr(a, name), getattr(b, name)
        if not np.array_equal(np.isfinite(x), np.isfinite(y)):
            return float("inf")
        ok = np.isfinite(x)
        worst = max(worst, float(np.max(np.abs(x[ok] - y[ok]), initial=0.0)))
    for name in a.components:
        x, y = a.components[name], b.components[name]
        ok = np.isfinite(x) & np.isfinite(y)
        worst = max(worst, float(np.max(np.abs(x[ok] - y[ok]), initial=0.0)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500x6,5000x12")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    analytic, learned = get_predictor("analytic"), get_predictor("learned")
    before = reference_predictor(learned)
    quality, latency = learned.quality_model_, learned.latency_model_
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    medians, bests = [], []
    for size in args.sizes.split(","):
        n_req, n_node = (int(v) for v in size.split("x"))
        instance = sized_window(n_req, n_node)
        base = analytic.predict(instance)
        ok = base.eligible
        transfer = np.where(ok, base.components["transfer_s"], 0.0)
        rtt = np.where(ok, base.components["rtt_s"], 0.0)
        clear_caches()
        diff = largest_difference(learned.predict(instance), before.predict(instance))
        print(f"{n_req} x {n_node}: largest |fast - reference| over all predictions: {diff:.3g}")
        runs = args.runs if n_req * n_node <= 10_000 else max(3, args.runs // 5)
        t, cpu = interleaved(
            {
                "analytic ms": lambda i=instance: analytic.predict(i),
                "quality before ms": lambda i=instance: reference_quality(quality, i),
                "quality ms": cold(lambda i=instance: quality.predict_proba_instance(i)),
                "latency before ms": lambda i=instance, t=transfer, r=rtt: reference_latency(
                    latency, i, t, r, p90=False
                ),
                "latency ms": cold(
                    lambda i=instance, t=transfer, r=rtt: latency.predict_instance(
                        i, t, r, p90=False
                    )
                ),
                "learned before ms": lambda i=instance: before.predict(i),
                "learned ms": cold(lambda i=instance: learned.predict(i)),
                "learned warm ms": lambda i=instance: learned.predict(i),
            },
            runs,
        )
        for rows, stat in ((medians, np.median), (bests, np.min)):
            row: dict[str, Any] = {"window": f"{n_req} x {n_node}"}
            row.update({name: 1000.0 * float(stat(v)) for name, v in t.items()})
            row["before / after"] = row["learned before ms"] / row["learned ms"]
            row["learned / analytic"] = row["learned ms"] / row["analytic ms"]
            for name in ("learned before ms", "learned ms"):
                row[name.replace(" ms", " cpu ms")] = 1000.0 * float(stat(cpu[name]))
            rows.append(row)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"\nmedian of {args.runs} interleaved runs (fewer above 10,000 pairs):\n")
    print(markdown_table(pd.DataFrame(medians).set_index("window")))
    print("\nbest run:\n")
    print(markdown_table(pd.DataFrame(bests).set_index("window")))


if __name__ == "__main__":
    main()
