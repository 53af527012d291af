"""The greedy's gap to the exact optimum on and off its tuning set, side by side in one run.

Usage (from the checkout)::

    python benchmarks/greedy_held_out.py [--sets committed,tuning,held-out,gap]
        [--held-out-seeds 3,4,5] [--tuning-seeds 2] [--count 30] [--variant-count 20]
        [--heavy-seeds 6] [--floor-seeds 7]
        [--gap-count 10] [--time-limit 30] [--committed-time-limit 10] [--no-cache]
        [--greedy-cache FILE]

The sets (one row each):

* ``committed``: ``instances/window_*.json`` (default scenario, seed 0), where the greedy was
  tuned. The reference is the better of ``instances/bks.csv`` and ``exact`` (as a user runs it,
  warm-started from the greedy) solved in this run within ``--committed-time-limit``, timed:
  the speed ratio (median exact time / median greedy time) is of this run.
* ``tuning``: generated windows ``0 .. count-1`` of the default scenario for each of
  ``--tuning-seeds``: the windows the greedy's changes were checked on while they were made.
* ``held-out``: the same for each of ``--held-out-seeds`` (one row per seed), and two scenario
  variants of the default on further seeds (``heavy``: load factor 1-3 instead of 0.3-3;
  ``floor``: every window a quality-floor objective), ``--variant-count`` windows each, on
  seed 6 and 7 (``--heavy-seeds``, ``--floor-seeds``: one row per seed). None of them was looked
  at while tuning (heavy seed 12 was, for the search budget: never pass it here).
* ``gap``: the tight generalized-assignment-style windows of ``benchmarks/gap_instances.py``
  (families C and D, sizes 10x3, 20x4, 50x5, 100x10, seeds ``gap-first ..
  gap-first + gap-count - 1``; ``--gap-first 10`` gives the GAP tuning set).

Off the committed set the reference is ``ExactHighs(warm_start=False)`` (so that it owes the greedy
nothing) within ``--time-limit``, cached in ``benchmarks/out/`` by window and limit; windows it
does not prove optimal are counted (``unproven``) and their gap is to its incumbent.
Per set: windows, exact proven, greedy feasible where exact found a solution, median / p95 /
max gap ``(greedy - exact) / max(|exact|, 1)`` in per cent, the same in objective units, the
mean relative gap (the GAP target), windows above 3%, greedy median ms, exact median s; then
the three worst windows of each set with the number of requests each answer defers.
Objectives are recomputed by :func:`~qlmio_opt.formulations.evaluation.evaluate`. The greedy
is timed on its second call (wall clock).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from qlmio_opt import Instance, read_instance
from qlmio_opt.domain.scenarios import DEFAULT, Scenario, generate_window
from qlmio_opt.domain.scenarios.gap import GAP_FAMILIES, gap_window
from qlmio_opt.faces.report import markdown_table
from qlmio_opt.formulations import build_problem
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.formulations.problem import Problem
from qlmio_opt.predictors import predict
from qlmio_opt.solvers.greedy import Greedy

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"

# Held-out scenario variants of the default, and the seed each is drawn with (not 0-5: the
# committed windows and the default-scenario sets use those).
VARIANTS: tuple[tuple[Scenario, int], ...] = (
    (dataclasses.replace(DEFAULT, name="heavy", load_range=(1.0, 3.0)), 6),
    (dataclasses.replace(DEFAULT, name="floor", quality_floor_share=1.0), 7),
)
GAP_SIZES = ((10, 3), (20, 4), (50, 5), (100, 10))


@dataclass(frozen=True)
class Window:
    """One window of a set, with its exact reference."""

    set_name: str
    name: str
    problem: Problem
    exact: float | None  # the reference objective (None: exact found no solution)
    proven: bool
    exact_s: float
    exact_deferred: int | None


def _model_digest(problem: Problem) -> str:
    """12 hex digits of a hash of what the MILP is built from."""
    digest = hashlib.sha256()
    arrays = [problem.pair_cost(masked=False), problem.memory_gb, problem.allowed]
    arrays += [problem.floor_gain] if problem.floor_gain is not None else []
    arrays += [c.values for c in problem.congestion_curves]
    for array in arrays:
        digest.update(np.ascontiguousarray(array, dtype=float).tobytes())
    digest.update(repr(problem.deferral_cost() if problem.deferral_allowed else None).encode())
    return digest.hexdigest()[:12]


def exact_record(key: str, problem: Problem, time_limit: float, use_cache: bool) -> dict:
    """Cold ``ExactHighs`` on ``problem``: objective, status, time and deferrals (cached)."""
    from qlmio_opt.solvers.exact import ExactHighs

    # keyed by the model too: a change of the formulation (the floor's reference, say) must
    # not reuse an optimum of the old model
    cache = OUT / f"{key}.{_model_digest(problem)}.exact-cold.{time_limit:g}s.json"
    if use_cache and cache.exists():
        return json.loads(cache.read_text())
    start = time.perf_counter()
    result = ExactHighs(warm_start=False).solve(problem, time_limit=time_limit)
    record = {
        "time_s": time.perf_counter() - start,
        "status": str(result.status),
        **_answer(problem, result.assignment),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / ".gitignore").write_text("*\n")
    cache.write_text(json.dumps(record))
    return record


def _answer(problem: Problem, assignment: np.ndarray | None) -> dict:
    """The recomputed objective and deferrals of an answer (None for both if infeasible)."""
    if assignment is None:
        return {"objective": None, "deferred": None}
    ev = evaluate(problem, assignment)
    if not ev.feasible:
        return {"objective": None, "deferred": None}
    return {"objective": ev.objective, "deferred": int((np.asarray(assignment) < 0).sum())}


def _problem(data: dict) -> Problem:
    instance = Instance.from_dict(data)
    return build_problem(instance, predict(instance))


def generated(set_name: str, scenario: Scenario, seed: int, count: int, args) -> Iterator[Window]:
    for k in range(count):
        problem = _problem(generate_window(scenario, k, seed))
        name = f"{scenario.name}-s{seed}-{k:03d}"
        record = exact_record(name, problem, args.time_limit, not args.no_cache)
        yield _window(set_name, name, problem, record)


def gap_set(args) -> Iterator[Window]:
    for num_requests, num_nodes in GAP_SIZES:
        for family in GAP_FAMILIES:
            for seed in range(args.gap_first, args.gap_first + args.gap_count):
                data = gap_window(num_requests, num_nodes, seed, family)
                problem = _problem(data)
                record = exact_record(data["name"], problem, args.time_limit, not args.no_cache)
                yield _window("gap", data["name"], problem, record)


def committed(args) -> Iterator[Window]:
    """The committed windows, exact (warm, as shipped) solved and timed in this run."""
    from qlmio_opt.solvers import get_solver

    bks = pd.read_csv(ROOT / "instances" / "bks.csv").set_index("instance")
    for path in sorted((ROOT / "instances").glob("window_*.json")):
        instance = read_instance(path)
        problem = build_problem(instance, predict(instance))
        start = time.perf_counter()
        result = get_solver("exact").solve(problem, time_limit=args.committed_time_limit)
        seconds = time.perf_counter() - start
        answer = _answer(problem, result.assignment)
        known = bks.loc[path.stem] if path.stem in bks.index else None
        objective, proven = answer["objective"], str(result.status) == "optimal"
        if known is not None and (objective is None or known.objective < objective):
            objective, proven = float(known.objective), known.status == "optimal"
        record = {"objective": objective, "status": "optimal" if proven else "", "time_s": seconds}
        record["deferred"] = answer["deferred"]
        yield _window("committed", path.stem, problem, record)


def _window(set_name: str, name: str, problem: Problem, record: dict) -> Window:
    return Window(
        set_name,
        name,
        problem,
        record["objective"],
        record["status"] == "optimal",
        record["time_s"],
        record.get("deferred"),
    )


def greedy_row(window: Window) -> dict:
    solver = Greedy()
    solver.solve(window.problem)
    start = time.perf_counter()
    result = solver.solve(window.problem)
    ms = 1000 * (time.perf_counter() - start)
    answer = _answer(window.problem, result.assignment)
    row = {
        "set": window.set_name,
        "window": window.name,
        "requests": window.problem.num_requests,
        "nodes": window.problem.num_nodes,
        "exact": window.exact,
        "proven": window.proven,
        "exact_s": window.exact_s,
        "exact_deferred": window.exact_deferred,
        "greedy": answer["objective"],
        "greedy_deferred": answer["deferred"],
        "greedy_ms": ms,
    }
    if window.exact is not None and answer["objective"] is not None:
        row["abs_gap"] = answer["objective"] - window.exact
        row["rel_gap"] = row["abs_gap"] / max(abs(window.exact), 1.0)
    return row


def summary_row(rows: pd.DataFrame) -> dict:
    solvable = rows[rows.exact.notna()]
    both = solvable[solvable.greedy.notna()]
    rel, units = 100 * both.rel_gap, both.abs_gap
    return {
        "windows": len(rows),
        "exact proven": f"{int(rows.proven.sum())}/{len(rows)}",
        "greedy feasible": f"{len(both)}/{len(solvable)}",
        "median %": f"{rel.median():.3f}",
        "p95 %": f"{np.percentile(rel, 95):.3f}",
        "max %": f"{rel.max():.2f}",
        "mean %": f"{rel.mean():.3f}",
        "> 3%": int((rel > 3).sum()),
        "median units": f"{units.median():.4f}",
        "p95 units": f"{np.percentile(units, 95):.3f}",
        "max units": f"{units.max():.3f}",
        "greedy ms": f"{rows.greedy_ms.median():.1f}",
        "exact s": f"{rows.exact_s.median():.2f}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="committed,tuning,held-out,gap")
    parser.add_argument("--held-out-seeds", default="3,4,5")
    parser.add_argument("--tuning-seeds", default="2")
    parser.add_argument("--count", type=int, default=30, help="windows per default-scenario seed")
    parser.add_argument("--variant-count", type=int, default=20, help="windows per variant")
    for scenario, seed in VARIANTS:
        parser.add_argument(
            f"--{scenario.name}-seeds",
            default=None,
            help=f"{scenario.name} variant (default {seed})",
        )
    parser.add_argument("--gap-count", type=int, default=10, help="GAP windows per size/family")
    parser.add_argument("--gap-first", type=int, default=0, help="first GAP seed")
    parser.add_argument("--time-limit", type=float, default=30.0, help="cold exact limit (s)")
    parser.add_argument("--committed-time-limit", type=float, default=10.0)
    parser.add_argument("--no-cache", action="store_true", help="re-solve the cold exact runs")
    parser.add_argument("--rows", type=Path, default=OUT / "greedy_held_out.csv")
    args = parser.parse_args(argv)
    sets = args.sets.split(",")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    sources: list[tuple[str, Iterator[Window]]] = []
    if "committed" in sets:
        sources.append(("committed (tuned on)", committed(args)))
    if "tuning" in sets:
        for seed in _ints(args.tuning_seeds):
            sources.append(
                (f"tuning: default s{seed}", generated("t", DEFAULT, seed, args.count, args))
            )
    if "held-out" in sets:
        for seed in _ints(args.held_out_seeds):
            sources.append(
                (f"held-out: default s{seed}", generated("h", DEFAULT, seed, args.count, args))
            )
        for scenario, default_seed in VARIANTS:
            for seed in _ints(getattr(args, f"{scenario.name}_seeds") or str(default_seed)):
                label = f"held-out: {scenario.name} s{seed}"
                sources.append((label, generated("h", scenario, seed, args.variant_count, args)))
    if "gap" in sets:
        sources.append(("gap-style C+D", gap_set(args)))
    frames, summary = [], {}
    for label, windows in sources:
        rows = pd.DataFrame([{**greedy_row(w), "set": label} for w in windows])
        frames.append(rows)
        summary[label] = summary_row(rows)
        print(f"{label}: {summary[label]}", flush=True)
    frame = pd.concat(frames, ignore_index=True)
    args.rows.parent.mkdir(exist_ok=True)
    frame.to_csv(args.rows, index=False)
    print(markdown_table(pd.DataFrame(summary).T))
    print("\nworst windows (relative gap %, objective units, deferred greedy/exact):")
    for label, rows in frame.groupby("set", sort=False):
        worst = rows.dropna(subset=["rel_gap"]).nlargest(3, "rel_gap")
        print(
            f"  {label}: "
            + "; ".join(
                f"{r.window} {100 * r.rel_gap:.2f}% {r.abs_gap:.3f} u "
                f"{_int(r.greedy_deferred)}/{_int(r.exact_deferred)}"
                f"{'' if r.proven else ' (unproven)'}"
                for r in worst.itertuples()
            )
        )
    if "committed" in sets:
        rows = frame[frame.set.str.startswith("committed")]
        ratio = rows.exact_s.median() / (rows.greedy_ms.median() / 1000)
        print(
            f"\ncommitted: exact (warm, limit {args.committed_time_limit:g} s) median "
            f"{rows.exact_s.median():.3f} s, greedy median {rows.greedy_ms.median():.1f} ms: "
            f"ratio of medians {ratio:.0f}x (same run)"
        )
    return 0


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _int(value: float | None) -> str:
    return "-" if value is None or pd.isna(value) else str(int(value))


if __name__ == "__main__":
    raise SystemExit(main())
