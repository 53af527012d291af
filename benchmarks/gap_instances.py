"""The greedy on tight generalized-assignment-style windows: how often it finds a feasible answer
where HiGHS proves one exists, its gap there, and its time, with and without its second start.

Usage (from the checkout)::

    python benchmarks/gap_instances.py [--count 50] [--sizes 10x3,20x4,50x5,100x10]
        [--families C,D] [--time-limit 30] [--no-cache]

Each window is :func:`qlmio_opt.domain.scenarios.gap.gap_window` (families C and D of the GAP
literature, every node's memory 0.8 of what an even spread needs, deferral off), seeds
``0 .. count-1`` per size and family. Three solves per window:

* ``exact``: ``ExactHighs`` without its greedy warm start (so that it owes the greedy nothing),
  within ``--time-limit``; an answer proves the window feasible, ``infeasible`` that it is not;
* ``before``: the greedy with ``Effort(regret_fallback=False)``, its priced start only;
* ``after``: the greedy as shipped, which tries the regret start
  (:mod:`qlmio_opt.solvers.greedy_regret`) when the priced one stays infeasible.

Per size and family: the windows exact proves feasible, how many of them each greedy answers,
the mean and worst gap ``(greedy - exact) / |exact|`` over the windows each answers (against
exact's incumbent: ``opt`` counts the windows it proved optimal, within 0.01%; objectives
recomputed by :func:`~qlmio_opt.formulations.evaluation.evaluate`), how many times the second
start ran, and the times: the median of each greedy, the median of ``after / before`` per window
(near 1 where the second start did not run: the same work, timed twice; the two run in
alternating order), the same median over the windows where it ran, and exact's median.
Exact results are cached in ``benchmarks/out/`` (keyed by window and time limit); the greedies
are timed in every run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qlmio_opt import Instance
from qlmio_opt.domain.scenarios.gap import GAP_FAMILIES, gap_window
from qlmio_opt.formulations import build_problem
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.formulations.problem import Problem
from qlmio_opt.predictors import predict
from qlmio_opt.solvers.greedy import Effort, Greedy

OUT = Path(__file__).resolve().parent / "out"


@dataclass(frozen=True)
class Run:
    """One solve: the recomputed objective (None: no feasible answer), seconds, and whether the
    greedy's second start ran."""

    objective: float | None
    seconds: float
    second_start: bool = False
    status: str = ""


def exact_run(name: str, problem: Problem, time_limit: float, use_cache: bool) -> Run:
    """HiGHS without the greedy warm start, from the cache when present."""
    from qlmio_opt.solvers.exact import ExactHighs

    cache = OUT / f"{name}.exact-cold.{time_limit:g}s.json"
    if use_cache and cache.exists():
        record = json.loads(cache.read_text())
        return Run(record["objective"], record["time_s"], status=record["status"])
    start = time.perf_counter()
    result = ExactHighs(warm_start=False).solve(problem, time_limit=time_limit)
    seconds = time.perf_counter() - start
    objective = _objective(problem, result.assignment)
    OUT.mkdir(exist_ok=True)
    (OUT / ".gitignore").write_text("*\n")
    status = str(result.status)
    cache.write_text(json.dumps({"objective": objective, "time_s": seconds, "status": status}))
    return Run(objective, seconds, status=status)


def greedy_run(problem: Problem, effort: Effort) -> Run:
    start = time.perf_counter()
    result = Greedy(effort).solve(problem)
    seconds = time.perf_counter() - start
    second = bool(result.stats.get("regret_start", 0.0))
    return Run(_objective(problem, result.assignment), seconds, second)


def _objective(problem: Problem, assignment: np.ndarray | None) -> float | None:
    if assignment is None:
        return None
    ev = evaluate(problem, assignment)
    return ev.objective if ev.feasible else None


@dataclass
class Group:
    """The runs of one size and family."""

    label: str
    exact: list[Run]
    before: list[Run]
    after: list[Run]

    def row(self) -> str:
        proven = [i for i, run in enumerate(self.exact) if run.objective is not None]
        optimal = sum(run.status == "optimal" for run in self.exact)
        cells = [self.label, str(len(self.exact)), str(len(proven)), str(optimal)]
        for runs in (self.before, self.after):
            answered = [i for i in proven if runs[i].objective is not None]
            gaps = [100 * _gap(runs[i], self.exact[i]) for i in answered]
            cells += [
                str(len(answered)),
                _pct(statistics.fmean(gaps) if gaps else None),
                _pct(max(gaps) if gaps else None),
            ]
        ratios = [a.seconds / b.seconds for a, b in zip(self.after, self.before, strict=True)]
        ran = [r for r, a in zip(ratios, self.after, strict=True) if a.second_start]
        cells += [
            str(len(ran)),
            f"{1000 * statistics.median(r.seconds for r in self.before):.1f}",
            f"{1000 * statistics.median(r.seconds for r in self.after):.1f}",
            f"{statistics.median(ratios):.2f}",
            f"{statistics.median(ran):.2f}" if ran else "-",
            f"{1000 * statistics.median(r.seconds for r in self.exact):.0f}",
        ]
        return "".join(f"{c:>{w}}" for c, w in zip(cells, WIDTHS, strict=True))


COLUMNS = (
    "size/family",
    "n",
    "exact feas",
    "opt",
    "before feas",
    "mean gap",
    "max gap",
    "after feas",
    "mean gap",
    "max gap",
    "2nd ran",
    "before ms",
    "after ms",
    "after/bef",
    "  ...when ran",
    "exact ms",
)
WIDTHS = (12, 4, 11, 5, 12, 10, 9, 11, 10, 9, 8, 10, 9, 10, 14, 10)


def _gap(run: Run, exact: Run) -> float:
    assert run.objective is not None and exact.objective is not None
    return (run.objective - exact.objective) / max(abs(exact.objective), 1e-9)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}%"


def solve_group(
    num_requests: int, num_nodes: int, family: str, count: int, time_limit: float, cache: bool
) -> Group:
    group = Group(f"{num_requests}x{num_nodes} {family}", [], [], [])
    for seed in range(count):
        data = gap_window(num_requests, num_nodes, seed, family)
        instance = Instance.from_dict(data)
        problem = build_problem(instance, predict(instance))
        group.exact.append(exact_run(data["name"], problem, time_limit, cache))
        if seed % 2:  # alternate which runs first (caches warmed by the first)
            group.after.append(greedy_run(problem, Effort()))
            group.before.append(greedy_run(problem, Effort(regret_fallback=False)))
        else:
            group.before.append(greedy_run(problem, Effort(regret_fallback=False)))
            group.after.append(greedy_run(problem, Effort()))
    return group


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="windows per size and family")
    parser.add_argument("--sizes", default="10x3,20x4,50x5,100x10", help="RxN,RxN,...")
    parser.add_argument("--families", default=",".join(GAP_FAMILIES), help="C, D or both")
    parser.add_argument("--time-limit", type=float, default=30.0, help="exact solver limit (s)")
    parser.add_argument("--no-cache", action="store_true", help="re-solve the exact model")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    header = "".join(f"{c:>{w}}" for c, w in zip(COLUMNS, WIDTHS, strict=True))
    print(header)
    print("-" * len(header))
    groups = []
    for num_requests, num_nodes in sizes:
        for family in args.families.split(","):
            group = solve_group(
                num_requests, num_nodes, family, args.count, args.time_limit, not args.no_cache
            )
            groups.append(group)
            print(group.row(), flush=True)
    total = Group(
        "all",
        [r for g in groups for r in g.exact],
        [r for g in groups for r in g.before],
        [r for g in groups for r in g.after],
    )
    print("-" * len(header))
    print(total.row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
