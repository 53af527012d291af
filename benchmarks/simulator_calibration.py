"""The world against the published figures it is calibrated to (tables for docs/simulator.md).

Usage (from the checkout)::

    python benchmarks/simulator_calibration.py [--requests-per-task 100000] [--runs 200]

Prints, as markdown: per (model, task) the simulated completion rate (drawn outcomes over
TextVQA-prompt requests at the task's reference image size) against the published accuracy, and
per published throughput figure the simulated single-stream speed against it, with the analytic
predictor's roofline beside it.
"""

from __future__ import annotations

import argparse
import time

from qlmio_opt.report import markdown_table
from qlmio_opt.simulator.calibration import quality_calibration, speed_calibration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-per-task", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    quality = quality_calibration(requests_per_task=args.requests_per_task, seed=args.seed)
    wide = quality.pivot(index="model", columns="task", values="error_pts").round(2)
    print(
        f"## Completion: simulated - published, points ({args.requests_per_task:,} requests "
        "per task)\n"
    )
    print(markdown_table(wide))
    err = quality["error_pts"].abs()
    print(
        f"\nmax |error| {err.max():.2f} points over {len(quality)} (model, task) cells; "
        f"{(err <= 1.0).sum()} of {len(quality)} within 1 point; mean |error| {err.mean():.2f}"
    )
    exp_err = (100 * (quality["expected"] - quality["published"])).abs()
    print(f"mean true probability: max |error| {exp_err.max():.2f} points\n")

    speed = speed_calibration(runs=args.runs)
    speed = speed.assign(
        published=speed["published"].round(1),
        simulated=speed["simulated"].round(1),
        roofline=speed["roofline"].round(1),
        error_pct=(100 * speed["error"]).round(1),
        roofline_error_pct=(100 * (speed["roofline"] / speed["published"] - 1)).round(1),
    ).drop(columns="error")
    print(f"## Speeds: simulated against published ({args.runs} runs each)\n")
    print(markdown_table(speed, index=False))
    anchors = speed[speed["kind"] == "anchor"]
    bounds = speed[speed["kind"] == "lower bound"]
    print(
        f"\nanchors: max |error| {anchors['error_pct'].abs().max():.1f}% over {len(anchors)} "
        f"(roofline alone: {anchors['roofline_error_pct'].abs().max():.1f}%); lower bounds "
        f"exceeded: {(bounds['simulated'] >= bounds['published']).sum()} of {len(bounds)}"
    )
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
