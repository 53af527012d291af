"""Parameter sweeps: parsing, what each parameter changes, the tidy table and the frontier."""

import itertools

import pandas as pd
import pytest
from conftest import INSTANCES, SMALL

from qlmio_opt import InputError, read_instance
from qlmio_opt.app.sweep import PARAMS, apply_setting, combinations, parse_params, run_sweep
from qlmio_opt.faces.cli import EXIT_INPUT, main

MEMORY, FLOOR = SMALL / "memory.json", SMALL / "floor.json"


def test_params_parse_into_value_tuples_and_every_combination():
    params = parse_params(["latency_weight=0.5,1,2", "edge_memory_scale=0.5, 1"])
    assert params == {"latency_weight": (0.5, 1.0, 2.0), "edge_memory_scale": (0.5, 1.0)}
    grid = combinations(params)
    assert len(grid) == 6
    assert grid[0] == {"latency_weight": 0.5, "edge_memory_scale": 0.5}
    assert grid[-1] == {"latency_weight": 2.0, "edge_memory_scale": 1.0}
    assert combinations({}) == [{}]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("speed=1,2", 'unknown parameter "speed"; valid: ' + ", ".join(PARAMS)),
        ("latency_weight", "expected NAME=V1,V2"),
        ("latency_weight=1,fast", '"fast" is not a number'),
        ("bandwidth_scale=0", "bandwidth_scale must be finite and > 0"),
        ("quality_weight=-1", "quality_weight must be finite and >= 0"),
        ("latency_weight=nan", "latency_weight must be finite"),
    ],
)
def test_bad_params_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_params([spec])


def test_a_parameter_given_twice_is_refused():
    with pytest.raises(ValueError, match="latency_weight given twice"):
        parse_params(["latency_weight=1", "latency_weight=2"])


def test_settings_change_the_objective_and_scale_edge_memory_and_bandwidth():
    base = read_instance(INSTANCES / "window_086.json")
    changed = apply_setting(
        base, {"quality_weight": 3.0, "edge_memory_scale": 0.5, "bandwidth_scale": 2.0}
    )
    assert changed.objective.quality_weight == 3.0
    assert changed.objective.latency_weight == base.objective.latency_weight
    edge = [j for j, n in enumerate(base.nodes) if n.tier == "edge"]
    cloud = [j for j, n in enumerate(base.nodes) if n.tier == "cloud"]
    assert changed.node_memory_gb[edge] == pytest.approx(0.5 * base.node_memory_gb[edge])
    assert changed.node_memory_gb[cloud].tolist() == base.node_memory_gb[cloud].tolist()
    for old, new in zip(base.network.links, changed.network.links, strict=True):
        assert new.bandwidth_mbps == pytest.approx(2 * old.bandwidth_mbps)
    assert changed.requests == base.requests
    with pytest.raises(InputError, match='quality_target applies only to mode "quality_floor"'):
        apply_setting(base, {"quality_target": 0.8})


def test_more_latency_weight_never_buys_more_latency_at_the_optimum():
    params = {"latency_weight": (0.25, 1.0, 4.0)}
    frame, _ = run_sweep([INSTANCES / "window_086.json"], params, ["exact"])
    assert (frame["status"] == "optimal").all()
    latency = frame["mean_latency_s"].to_numpy()
    assert latency[0] > latency[-1]
    assert all(a >= b * (1 - 1e-6) for a, b in itertools.pairwise(latency))


def test_sweep_command_writes_every_combination_and_matches_a_serial_run(tmp_path, capsys):
    args = ["sweep", str(MEMORY), str(FLOOR), "--solvers", "exact,greedy"]
    args += ["--param", "latency_weight=1,2", "--param", "edge_memory_scale=1,2"]
    assert main([*args, "--out", str(tmp_path / "serial")]) == 0
    assert main([*args, "--out", str(tmp_path / "pooled"), "--jobs", "2"]) == 0
    assert "frontier" in capsys.readouterr().out
    serial = pd.read_csv(tmp_path / "serial" / "sweep.csv", keep_default_na=False)
    pooled = pd.read_csv(tmp_path / "pooled" / "sweep.csv", keep_default_na=False)
    assert len(serial) == 2 * 4 * 2  # windows x combinations x solvers
    pd.testing.assert_frame_equal(serial.drop(columns="time_s"), pooled.drop(columns="time_s"))
    # the memory window's description: r1 and r2 fit on the edge together only with 2x memory
    exact = serial[(serial.instance == "small_memory") & (serial.solver == "exact")]
    objective = exact.set_index(["latency_weight", "edge_memory_scale"])["objective"]
    assert objective[(1.0, 1.0)] == pytest.approx(-22.3)
    assert objective[(1.0, 2.0)] == pytest.approx(-22.5)
    png = (tmp_path / "serial" / "frontier.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    frontier = pd.read_csv(tmp_path / "serial" / "frontier.csv")
    assert {"latency_weight", "edge_memory_scale", "solver", "frontier"} <= set(frontier.columns)
    assert frontier["frontier"].any()


def test_a_setting_that_breaks_a_window_is_an_error_row_and_the_rest_stand(tmp_path, capsys):
    args = ["sweep", str(MEMORY), str(FLOOR), "--solvers", "exact"]
    code = main([*args, "--param", "quality_target=0.8,0.84", "--out", str(tmp_path)])
    assert code == EXIT_INPUT
    err = capsys.readouterr().err
    assert f"{MEMORY} with quality_target=0.8: objective: quality_target applies only" in err
    frame = pd.read_csv(tmp_path / "sweep.csv")
    assert (frame[frame.file == str(MEMORY)]["status"] == "error").all()
    floor = frame[frame.file == str(FLOOR)].set_index("quality_target")
    # floor.json: a 0.80 target lets r0 and r1 stay on the edge (1.9 s), 0.84 only all-cloud
    assert floor.loc[0.8, "mean_latency_s"] == pytest.approx(1.9 / 3)
    assert floor.loc[0.84, "mean_latency_s"] == pytest.approx(1.2)


def test_unknown_parameter_or_solver_exits_2_with_the_valid_names(capsys, tmp_path):
    out = ["--out", str(tmp_path)]
    assert main(["sweep", str(MEMORY), "--param", "speed=1", *out]) == EXIT_INPUT
    assert "valid: latency_weight, quality_weight" in capsys.readouterr().err
    assert main(["sweep", str(MEMORY), "--solvers", "magic", *out]) == EXIT_INPUT
    assert "magic: unknown solver" in capsys.readouterr().err


def test_the_help_lists_every_parameter(capsys):
    assert main(["sweep", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in PARAMS:
        assert name in text
