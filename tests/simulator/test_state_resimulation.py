"""Re-simulating state-table rows (``qlmio_opt.simulator.state_resimulation``): with nothing
redrawn a row comes back exactly, every redraw keeps the row's observed state, each hidden part
moves the latency only as it should, and the draws are reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from qlmio_opt.domain.instance import NodeState
from qlmio_opt.simulator.state_dataset import StateConfig, state_bench_data
from qlmio_opt.simulator.state_resimulation import StateResimulator, utilisation_posterior

N, SEED = 10, 3


@pytest.fixture(scope="module")
def table():
    return state_bench_data(N, seed=SEED).table


@pytest.fixture(scope="module")
def resim():
    return StateResimulator(N, seed=SEED)


def _loaded_rows(table, count=6):
    rows = table[(table["load_level"] != "idle") & (table["n_running"] > 0)]
    return rows.iloc[:: max(len(rows) // count, 1)].head(count)


def test_with_nothing_redrawn_every_row_comes_back_exactly(table, resim):
    for row in table.itertuples():
        state, latency = resim.original(row.request, row.node, row.engine)
        assert latency == row.latency_s
        assert state == NodeState.model_validate_json(row.state_json)
    row = table.iloc[5]
    again = resim.resimulate(row["request"], row["node"], row["engine"], draws=2, seed=0, hidden=())
    assert (again.latency_s == row["latency_s"]).all()


def test_every_redraw_keeps_the_observed_state_and_moves_the_latency(table, resim):
    spread = []
    for row in _loaded_rows(table).itertuples():
        out = resim.resimulate(row.request, row.node, row.engine, draws=6, seed=1)
        assert out.state_matches.all()
        assert out.kept_lengths == 0
        spread.append(np.ptp(out.latency_s))
    assert max(spread) > 0.1


def test_only_the_wait_moves_the_latency_by_the_wait(table, resim):
    window = StateConfig().window_s
    row = _loaded_rows(table).iloc[0]
    out = resim.resimulate(
        row["request"], row["node"], row["engine"], draws=8, seed=2, hidden=("wait",)
    )
    waits = out.latency_s - (row["latency_s"] - row["wait_s"])
    assert ((waits >= -1e-9) & (waits <= window + 1e-9)).all()
    assert np.ptp(waits) > 0


def test_the_same_seed_gives_the_same_draws_and_another_seed_others(table, resim):
    row = _loaded_rows(table).iloc[1]
    args = (row["request"], row["node"], row["engine"])
    first = resim.resimulate(*args, draws=4, seed=7)
    np.testing.assert_array_equal(
        first.latency_s, resim.resimulate(*args, draws=4, seed=7).latency_s
    )
    assert not np.array_equal(first.latency_s, resim.resimulate(*args, draws=4, seed=8).latency_s)


def test_an_unknown_hidden_part_is_refused(table, resim):
    row = table.iloc[0]
    with pytest.raises(ValueError, match="hidden must be some of"):
        resim.resimulate(row["request"], row["node"], row["engine"], draws=2, seed=0, hidden=("x",))


def test_the_rate_posterior_follows_the_arrivals_before():
    cfg = StateConfig()
    values, probs = utilisation_posterior(0, 2.0, cfg)
    assert probs.sum() == pytest.approx(1.0)
    assert probs[0] > cfg.idle_share  # no arrival makes an idle node likelier than its prior
    mean = [float(values @ utilisation_posterior(k, 2.0, cfg)[1]) for k in (2, 10, 20)]
    assert mean[0] < mean[1] < mean[2]
    assert utilisation_posterior(5, 2.0, cfg)[1][0] == 0.0  # arrivals rule the idle node out
    capped = utilisation_posterior(cfg.max_background, 2.0, cfg)
    assert float(capped[0] @ capped[1]) > 1.0  # a capped count says the rate was high
