"""instances/bks.csv: one row per committed window, reproducible on the quick ones."""

import pandas as pd
import pytest
from conftest import INSTANCES

from qlmio_opt import Status, read_instance, solve

BKS = pd.read_csv(INSTANCES / "bks.csv")
QUICK = BKS[(BKS.status == "optimal") & (BKS.time_s < 0.3)].instance.tolist()[:8]


def test_every_window_has_a_row():
    windows = sorted(p.stem for p in INSTANCES.glob("window_*.json"))
    assert sorted(BKS.instance) == windows
    assert (BKS.bound <= BKS.objective + 1e-6 * BKS.objective.abs()).all()
    proven = BKS[BKS.status == "optimal"]
    assert (proven.gap <= 1e-4 + 1e-12).all()


@pytest.mark.parametrize("name", QUICK)
def test_quick_windows_reproduce_their_best_known_value(name):
    row = BKS.set_index("instance").loc[name]
    s = solve(read_instance(INSTANCES / f"{name}.json"), "exact")
    assert s.status is Status.OPTIMAL
    assert s.objective == pytest.approx(row.objective, rel=2e-4, abs=1e-6)


@pytest.mark.parametrize("name", QUICK[:4])
def test_no_solver_beats_the_proven_bound(name):
    from qlmio_opt.solvers import SOLVERS

    row = BKS.set_index("instance").loc[name]
    instance = read_instance(INSTANCES / f"{name}.json")
    for solver in SOLVERS:
        if solver.startswith("exact"):
            continue
        s = solve(instance, solver)
        if s.status is Status.FEASIBLE:
            assert s.objective >= row.bound - 1e-6 * abs(row.bound)
