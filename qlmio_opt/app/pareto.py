"""The quality-latency trade-off curve of one window (epsilon-constraint on mean quality).

Every point solves the instance's own problem -- its memory, bandwidth, congestion and deferral
rules, with the predictions made once -- in ``quality_floor`` mode; only the quality target
changes from point to point. The targets are evenly spaced from the fastest decision's mean
quality (the decision with no quality floor at all) up to the highest mean quality found among
decisions that serve as many requests as the fastest one (:func:`highest_quality`).

Why that high end: the quality floor is a mean over the requests served in the window, so
deferring a hard request raises it without buying quality with latency. With deferral on, the
mean could be pushed up to the single best request's quality by deferring all the others, one
penalty each: that is not the quality-latency trade-off. Inside the range a point may still defer
more requests than the fastest decision, when that is the cheapest way to meet its target at the
instance's ``deferral_penalty_s``; the ``deferred`` column shows it, ``objective_s`` counts the
penalty, and the plot labels it.

Columns (:data:`COLUMNS`): ``quality_target``; ``status`` of the solve (``optimal``,
``time_limit``, ``feasible`` for heuristics, ``infeasible``, ``error``); ``mean_quality`` and
``mean_latency_s`` over the served requests; ``deferred`` requests; ``objective_s``, the
minimised total latency (congestion and deferral penalties included); ``gap`` to the solver's
bound; ``edge_share`` of the served requests; ``solve_s``; ``message`` (why a point has no
decision, or why it is not proven optimal). A point with no decision has empty figures.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from qlmio_opt.app.solve import to_solution
from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.solution import Solution, Status, Times
from qlmio_opt.formulations.evaluation import evaluate
from qlmio_opt.formulations.problem import Problem, build_problem
from qlmio_opt.formulations.problem import with_target as absolute_floor
from qlmio_opt.predictors import Predictor, predict
from qlmio_opt.solvers import Solver, SolverResult, get_solver

Progress = Callable[[int, int], None]

COLUMNS = [
    "quality_target",
    "status",
    "mean_quality",
    "mean_latency_s",
    "deferred",
    "objective_s",
    "gap",
    "edge_share",
    "solve_s",
    "message",
]


@dataclasses.dataclass(frozen=True)
class _Window:
    """What every point shares: the instance in ``quality_floor`` mode, its problem, the solver."""

    instance: Instance
    problem: Problem
    solver: Solver
    predictors: str
    time_limit: float | None
    seed: int

    def run(self, problem: Problem) -> tuple[SolverResult, float]:
        """The solver's raw answer to ``problem`` and the seconds it took."""
        start = time.perf_counter()
        result = self.solver.solve(problem, time_limit=self.time_limit, seed=self.seed)
        return result, time.perf_counter() - start

    def solution(self, problem: Problem, result: SolverResult, seconds: float) -> Solution:
        """``result`` measured against ``problem`` (objective and feasibility recomputed)."""
        times = Times(solve_s=seconds, total_s=seconds)
        return to_solution(self.instance, problem, result, self.solver.name, times, self.predictors)

    def solve(self, problem: Problem) -> Solution:
        return self.solution(problem, *self.run(problem))


def floor_instance(instance: Instance) -> Instance:
    """``instance`` in ``quality_floor`` mode with no floor (target 0), every other objective
    field (deferral penalty, tolerance, weights) kept as given."""
    keep = instance.objective.model_dump(exclude={"mode", "quality_target"}, exclude_unset=True)
    return instance.replace(objective={**keep, "mode": "quality_floor", "quality_target": 0.0})


def with_target(problem: Problem, target: float) -> Problem:
    """The same problem with another mean-quality target."""
    objective = problem.objective.model_copy(update={"quality_target": float(target)})
    return absolute_floor(dataclasses.replace(problem, objective=objective), target)


# Weight of latency in the most-quality search: it only breaks ties between equal qualities (a
# zero weight would turn the infinite latency of unreachable pairs into NaN costs). A window of a
# few hundred requests at tens of seconds each adds < 1e-5 with it, so it can only choose between
# decisions whose total quality differs by less than that, below the exact solver's 1e-4
# relative gap on a total of hundreds.
TIE_BREAK_LATENCY_WEIGHT = 1e-9


def most_quality_problem(problem: Problem, may_serve: np.ndarray | None = None) -> Problem:
    """Serve as many requests as the window allows, then maximise their total quality.

    A served request scores its quality plus 1 and a deferral nothing, so serving one more
    request outweighs any quality gain (qualities lie in [0, 1]). Memory, bandwidth and the
    deferral rule are ``problem``'s; ``may_serve`` (bool per request) confines the decision to
    those requests, the others being deferred.
    """
    allowed = problem.allowed if may_serve is None else problem.allowed & may_serve[:, None]
    objective = problem.objective.model_copy(
        update={
            "mode": "weighted",
            "latency_weight": TIE_BREAK_LATENCY_WEIGHT,
            "quality_weight": 1.0,
            "quality_target": None,
        }
    )
    return dataclasses.replace(
        problem,
        allowed=allowed,
        quality=problem.quality + 1.0,
        objective=objective,
        quality_target=None,
        floor_gain=None,
    )


def _placed(solution: Solution, problem: Problem) -> np.ndarray:
    """Node index per request (-1 deferred) of a solution with an assignment."""
    index = {node: j for j, node in enumerate(problem.node_ids)}
    nodes = [solution.assignment.get(r) for r in problem.request_ids]
    return np.array([-1 if node is None else index.get(node, -1) for node in nodes])


def highest_quality(window: _Window, fastest: Solution) -> float:
    """The highest mean quality found among decisions serving as many requests as ``fastest``.

    Candidates: the fastest decision itself; the most-quality decision over every request
    (:func:`most_quality_problem`); and, when that one serves more requests than the fastest
    decision (which deferred some it could serve, as waiting was cheaper), the most-quality
    decision over the requests the fastest decision serves. A candidate that breaks a constraint,
    or serves fewer requests (a solver stopped by its time limit), does not count.
    """
    served = _placed(fastest, window.problem) >= 0
    best = float(fastest.mean_quality or 0.0)  # the caller passes a decision serving some
    for may_serve in (None, served):
        result = window.solver.solve(
            most_quality_problem(window.problem, may_serve),
            time_limit=window.time_limit,
            seed=window.seed,
        )
        if result.assignment is None:
            continue
        assignment = np.asarray(result.assignment)
        ev = evaluate(window.problem, assignment)
        count = int((assignment >= 0).sum())
        if ev.feasible and ev.mean_quality is not None and count >= served.sum():
            best = max(best, ev.mean_quality)
        if count <= served.sum():
            break  # it serves what the fastest decision serves: confining it changes nothing
    return best


def _row(target: float, solution: Solution, instance: Instance) -> dict[str, object]:
    """One CSV row; the figures are empty when the point has no (valid) decision."""
    decided = solution.status.has_assignment
    figures = {
        "mean_quality": solution.mean_quality,
        "mean_latency_s": solution.mean_latency_s,
        "deferred": len(solution.deferred),
        "objective_s": solution.objective,
        "edge_share": _edge_share(instance, solution.assignment),
    }
    return {
        "quality_target": float(target),
        "status": solution.status.value,
        **{k: v if decided else None for k, v in figures.items()},
        "gap": solution.gap,
        "solve_s": solution.times.solve_s,
        "message": solution.message or "",
    }


def pareto_curve(
    instance: Instance,
    points: int = 10,
    *,
    solver: str | Solver = "exact",
    time_limit: float | None = 10.0,
    predictors: str | Predictor = "analytic",
    seed: int = 0,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Minimise latency for ``points`` evenly spaced mean-quality targets; one row per target.

    Parameters
    ----------
    instance
        The window; its objective's mode and target are replaced, the rest is kept.
    points
        Targets on the curve (at least 2), from the fastest decision's mean quality to the
        highest reachable one (see the module docstring). A window with no trade-off (the
        fastest decision is also the best) gives one row.
    solver, time_limit, seed
        How each point is solved; ``time_limit`` is seconds per solve.
    predictors
        Predictors of quality and latency, run once for every point.
    progress
        Called as ``progress(done, total)`` after each point.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`. With no decision even without a floor (an infeasible window,
        or a time limit with no solution), the frame has that one row, its reason in
        ``message``.
    """
    window = _window(instance, solver, predictors, time_limit, seed)
    result, seconds = window.run(window.problem)
    fastest = window.solution(window.problem, result, seconds)
    if fastest.mean_quality is None or not fastest.status.has_assignment:
        _report(progress, 1, 1)
        return pd.DataFrame([_row(0.0, _no_curve(fastest), window.instance)], columns=COLUMNS)
    targets = _targets(float(fastest.mean_quality), highest_quality(window, fastest), points)
    # the fastest decision is optimal with no floor, so also at its own mean quality: reuse it
    first = window.solution(with_target(window.problem, targets[0]), result, seconds)
    rows = [_row(targets[0], first, window.instance)]
    _report(progress, 1, len(targets))
    for target in targets[1:]:
        solution = window.solve(with_target(window.problem, target))
        rows.append(_row(target, solution, window.instance))
        _report(progress, len(rows), len(targets))
    return pd.DataFrame(rows, columns=COLUMNS)


def _window(
    instance: Instance,
    solver: str | Solver,
    predictors: str | Predictor,
    time_limit: float | None,
    seed: int,
) -> _Window:
    floor = floor_instance(instance)
    return _Window(
        instance=floor,
        problem=build_problem(floor, predict(floor, predictors)),
        solver=get_solver(solver),
        predictors=predictors if isinstance(predictors, str) else type(predictors).__name__,
        time_limit=time_limit,
        seed=seed,
    )


def _targets(low: float, high: float, points: int) -> np.ndarray:
    """``points`` evenly spaced targets from ``low`` to ``high``; one when they coincide."""
    # below 1e-9 apart the two ends are the same decision's mean up to rounding
    return np.linspace(low, high, max(points, 2)) if high > low + 1e-9 else np.array([low])


def _no_curve(fastest: Solution) -> Solution:
    """The fastest attempt, saying why there is no curve."""
    if fastest.status.has_assignment:  # a decision that serves nobody
        return fastest.model_copy(update={"message": "every request is deferred"})
    return fastest


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _edge_share(instance: Instance, assignment: dict[str, str]) -> float | None:
    if not assignment:
        return None
    edge = {n.id for n in instance.nodes if n.tier == "edge"}
    return sum(node in edge for node in assignment.values()) / len(assignment)


def plot_pareto(frame: pd.DataFrame, path: Path, title: str) -> None:
    """Mean latency against mean quality: decided points joined (hollow when not proven
    optimal), targets with no decision marked on the quality axis, extra deferrals labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    decided = frame.dropna(subset=["mean_quality", "mean_latency_s"])
    proven = decided[decided["status"] == Status.OPTIMAL.value]
    unproven = decided[decided["status"] != Status.OPTIMAL.value]
    missing = frame[~frame.index.isin(decided.index)]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(decided["mean_quality"], decided["mean_latency_s"], "-", color="tab:blue", zorder=1)
    ax.plot(
        proven["mean_quality"], proven["mean_latency_s"], "o", color="tab:blue", label="optimal"
    )
    if len(unproven):
        ax.plot(
            unproven["mean_quality"],
            unproven["mean_latency_s"],
            "o",
            mfc="white",
            color="tab:blue",
            label="not proven optimal (time limit or heuristic)",
        )
    _label_extra_deferrals(ax, decided)
    if len(missing):
        # at the foot of the axes (x in data, y in axes units), so they do not stretch the scale
        ax.plot(
            missing["quality_target"],
            np.full(len(missing), 0.03),
            "x",
            color="tab:red",
            transform=ax.get_xaxis_transform(),
            label="target with no decision",
        )
    ax.set_xlabel("mean predicted quality of the served requests (probability of completion)")
    ax.set_ylabel("mean predicted latency of the served requests (s)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label_extra_deferrals(ax, decided: pd.DataFrame) -> None:
    """Write "+k deferred" next to points that defer more requests than the first one."""
    if not len(decided):
        return
    base = decided["deferred"].iloc[0]
    for row in decided.itertuples(index=False):
        if row.deferred > base:
            ax.annotate(
                f"+{int(row.deferred - base)} deferred",
                (row.mean_quality, row.mean_latency_s),
                textcoords="offset points",
                xytext=(-6, 4),
                ha="right",
                fontsize="x-small",
                color="tab:red",
            )
