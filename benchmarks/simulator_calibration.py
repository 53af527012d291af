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

from qlmio_opt.faces.report import markdown_table
from qlmio_opt.simulator.calibration import quality_calibration, speed_calibration


def prompt_signal() -> str:
    """The prompt's share of the world's difficulty variance per task, beside the share of the
    judged score the question explains in the real M4A1 log (what ``word_sd`` is set from)."""
    from qlmio_opt.app.m4a1 import load_m4a1
    from qlmio_opt.simulator import World

    world = World()
    sd = world.config.difficulty_sd
    lines = [
        "## Prompt signal\n",
        "| task | prompts | sd of prompt difficulty | share of variance |",
    ]
    lines.append("|---|---|---|---|")
    for task, values in world.task_prompt_difficulty.items():
        share = values.var() / (values.var() + sd**2)
        lines.append(f"| {task} | {len(values)} | {values.std():.2f} | {share:.2f} |")
    log = load_m4a1()
    for action, rows in log.groupby("action"):
        score = rows["score"]
        groups = rows["question"].nunique()
        r2 = ((rows.groupby("question")["score"].transform("mean") - score.mean()) ** 2).mean()
        r2 /= score.var(ddof=0)
        task_r2 = ((rows.groupby("task_cat")["score"].transform("mean") - score.mean()) ** 2).mean()
        task_r2 /= score.var(ddof=0)
        n = len(rows)
        adjusted = 1 - (1 - r2) * (n - 1) / (n - groups)
        lines.append(
            f"\nM4A1 action {action} ({n} calls, {groups} questions): question R2 {r2:.2f} "
            f"(adjusted {adjusted:.2f}), task category R2 {task_r2:.2f}"
        )
    return "\n".join(lines) + "\n"


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

    print(prompt_signal())

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
