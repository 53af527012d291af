"""The quality-latency trade-off curve (qlmio_opt.app.pareto, ``qlmio-opt pareto``).

Most tests use tests/data/pareto_tradeoff.json, whose curve is derived by hand in its
description: four requests gain g = 1, 2, 4, 8 hundredths of quality in the cloud for 0.5, 1.0,
2.5, 6.0 s more latency, the WAN takes at most three of them, and a fifth request (rq) may go
nowhere, so it is deferred at 30 s.
"""

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, INSTANCES, SMALL

from qlmio_opt.app.pareto import pareto_curve, plot_pareto
from qlmio_opt.app.solve import solve
from qlmio_opt.domain.io import read_instance
from qlmio_opt.domain.solution import Status
from qlmio_opt.faces.cli import EXIT_INFEASIBLE, main
from qlmio_opt.solvers import Solver, SolverResult, get_solver

TRADEOFF = DATA / "pareto_tradeoff.json"
POINTS = 12
# Sum of the cloud gains G needed by each of the 12 evenly spaced targets from 0.5 to 0.64
# (ceil(14 k / 11)), and the extra latency of the one cheapest subset reaching each G.
GAIN_AT_TARGET = [0, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14]
EXTRA_LATENCY_S = {0: 0.0, 2: 1.0, 3: 1.5, 4: 2.5, 6: 3.5, 7: 4.0, 8: 6.0, 9: 6.5}
EXTRA_LATENCY_S |= {11: 7.5, 12: 8.5, 13: 9.0, 14: 9.5}
FASTEST_QUALITY = 0.5  # all four on the edge
BEST_QUALITY = 0.64  # r2, r4, r8 in the cloud (G = 14): the WAN carries three uploads


@pytest.fixture(scope="module")
def curve() -> pd.DataFrame:
    return pareto_curve(read_instance(TRADEOFF), POINTS, time_limit=10.0)


def test_every_point_is_the_hand_derived_optimum(curve):
    assert list(curve["status"]) == ["optimal"] * POINTS
    gains = np.array(GAIN_AT_TARGET)
    extra = np.array([EXTRA_LATENCY_S[g] for g in GAIN_AT_TARGET])
    np.testing.assert_allclose(curve["mean_quality"], 0.5 + 0.01 * gains, atol=1e-9)
    np.testing.assert_allclose(curve["mean_latency_s"], 1.0 + extra / 4, atol=1e-9)


def test_points_are_distinct_and_latency_never_falls_as_the_target_rises(curve):
    pairs = set(zip(curve["mean_quality"].round(9), curve["mean_latency_s"].round(9), strict=True))
    assert len(pairs) == POINTS
    assert (np.diff(curve["mean_latency_s"]) >= 0).all()
    assert (curve["mean_quality"] >= curve["quality_target"] - 1e-9).all()


def test_targets_run_evenly_from_the_fastest_decision_to_the_best_reachable(curve):
    instance = read_instance(TRADEOFF)
    # the fastest decision under the instance's own rules (deferral at 30 s), found on its own
    no_floor = {"mode": "quality_floor", "quality_target": 0.0, "deferral_penalty_s": 30.0}
    fastest = solve(instance.replace(objective=no_floor), "exact")
    assert fastest.status is Status.OPTIMAL
    assert fastest.mean_quality == pytest.approx(FASTEST_QUALITY)
    targets = curve["quality_target"].to_numpy()
    assert targets[0] == pytest.approx(fastest.mean_quality)
    assert targets[-1] == pytest.approx(BEST_QUALITY)
    np.testing.assert_allclose(np.diff(targets), (BEST_QUALITY - FASTEST_QUALITY) / (POINTS - 1))


def test_every_point_keeps_the_deferral_rule_and_defers_only_what_it_must(curve):
    # rq (quality floor 0.95, no node reaches it) is deferred everywhere; nothing else is
    assert list(curve["deferred"]) == [1] * POINTS
    assert (curve["objective_s"] - 4 * curve["mean_latency_s"]).round(9).eq(30.0).all()


def test_a_window_with_no_decision_is_one_infeasible_row_naming_the_request():
    instance = read_instance(TRADEOFF)
    without_deferral = instance.replace(objective={"mode": "weighted"})
    frame = pareto_curve(without_deferral, POINTS, time_limit=5.0)
    assert len(frame) == 1
    assert frame.loc[0, "status"] == "infeasible"
    assert '"rq"' in frame.loc[0, "message"]
    assert frame[["mean_quality", "mean_latency_s", "deferred"]].isna().all(axis=None)


class _StopsAboveTarget(Solver):
    """The exact solver, except that it gives up without a decision above a quality target."""

    name = "exact-stops-early"

    def __init__(self, give_up_above: float):
        self.give_up_above = give_up_above

    def solve(self, problem, *, time_limit=None, seed=0) -> SolverResult:
        target = problem.quality_target
        if target is not None and target > self.give_up_above:
            return SolverResult(Status.TIME_LIMIT, None, message="stopped with no solution")
        return get_solver("exact").solve(problem, time_limit=time_limit, seed=seed)


def test_points_without_a_decision_keep_their_target_status_and_reason(tmp_path):
    frame = pareto_curve(read_instance(TRADEOFF), POINTS, solver=_StopsAboveTarget(0.6))
    stopped = frame["quality_target"] > 0.6
    assert stopped.sum() == 4  # targets 0.6018 .. 0.64
    assert (frame.loc[stopped, "status"] == "time_limit").all()
    assert (frame.loc[stopped, "message"] == "stopped with no solution").all()
    assert frame.loc[stopped, ["mean_quality", "mean_latency_s"]].isna().all(axis=None)
    assert (frame.loc[~stopped, "status"] == "optimal").all()
    np.testing.assert_allclose(np.diff(frame["quality_target"]), 0.14 / 11)
    plot_pareto(frame, tmp_path / "curve.png", title="some targets without a decision")
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_progress_counts_one_step_per_point():
    calls = []
    pareto_curve(
        read_instance(TRADEOFF), 4, progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_window_042_curve_has_distinct_points_from_the_fastest_decision():
    # the greedy solver keeps this fast (about 2 s); `qlmio-opt pareto` uses the exact one
    instance = read_instance(INSTANCES / "window_042.json")
    frame = pareto_curve(instance, POINTS, solver="greedy")
    assert (frame["status"] == "feasible").all()
    pairs = set(zip(frame["mean_quality"].round(9), frame["mean_latency_s"].round(9), strict=True))
    assert len(pairs) == POINTS
    assert (frame["mean_quality"] >= frame["quality_target"] - 1e-9).all()
    no_floor = instance.objective.model_dump(exclude={"mode"}, exclude_unset=True)
    no_floor |= {"mode": "quality_floor", "quality_target": 0.0}
    fastest = solve(instance.replace(objective=no_floor), "greedy")
    assert frame["quality_target"].iloc[0] == pytest.approx(fastest.mean_quality)
    assert frame["quality_target"].iloc[-1] > fastest.mean_quality + 0.02  # a real trade-off


def test_cli_pareto_exits_3_with_the_reason_when_the_window_has_no_decision(tmp_path, capsys):
    code = main(["pareto", str(SMALL / "infeasible.json"), "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == EXIT_INFEASIBLE
    assert 'no decision: memory on node "edge-0"' in captured.err
    assert "no decision" not in captured.out
    frame = pd.read_csv(tmp_path / "infeasible.pareto.csv")
    assert list(frame["status"]) == ["infeasible"]
