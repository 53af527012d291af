"""Parallel runs (loky processes, a real Dask LocalCluster on loopback) give the serial answers;
a failing window is reported with its file name and the others keep their results."""

import json
import sys
import time

import pandas as pd
import pytest
from conftest import DATA, INSTANCES, SMALL

from qlmio_opt.app.parallel import ParallelConfig, run_tasks, worst_error_kind
from qlmio_opt.domain.errors import InputError, Issue
from qlmio_opt.faces.cli import EXIT_INPUT, main
from qlmio_opt.simulator import ReplayConfig, World, replay, workload

WINDOWS = [INSTANCES / f"window_{k:03d}.json" for k in (86, 34, 41, 22)] + [
    SMALL / "memory.json",
    SMALL / "floor.json",
]
BAD = DATA / "invalid" / "absurd_bandwidth.json"
LOKY2 = ["--jobs", "2"]


# -- helpers run inside workers (module level, so workers import them by name) ------------------
def _slow_square(x: int) -> int:
    time.sleep(0.05 * (4 - x))  # later items finish first
    return x * x


def _fails_on_two(x: int) -> int:
    if x == 2:
        raise InputError(Issue("requests[2]", "broken on purpose"), "two.json")
    if x == 3:
        raise ZeroDivisionError("a bug")
    return x


def _exact_threads(_: int) -> int:
    from qlmio_opt.solvers import get_solver

    return get_solver("exact").threads


def _solve_json(capsys, files, *extra) -> tuple[int, list]:
    code = main(["solve", *map(str, files), "--format", "json", *extra])
    data = json.loads(capsys.readouterr().out)
    return code, data if isinstance(data, list) else [data]


def _answers(payload: list) -> list:
    """What must match between runs: everything but the wall times."""
    keep = ("instance", "status", "objective", "bound", "assignment", "requests", "nodes")
    return [{k: s.get(k) for k in keep} if "error" not in s else s for s in payload]


@pytest.fixture(scope="module")
def serial_payload() -> list:
    from qlmio_opt.app.batch import solve_files

    return [r.value.solution.to_dict() for r in solve_files(WINDOWS, "exact")]


@pytest.fixture(scope="module")
def dask_address():
    distributed = pytest.importorskip("dask.distributed")
    import logging

    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster.scheduler_address


# -- the engine -------------------------------------------------------------------------------
def test_results_come_back_in_input_order():
    labels = ["a", "b", "c", "d"]
    seen = []
    results = run_tasks(
        _slow_square,
        [0, 1, 2, 3],
        labels=labels,
        config=ParallelConfig(jobs=2),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert [r.value for r in results] == [0, 1, 4, 9]
    assert [r.label for r in results] == labels
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    costly_first = run_tasks(
        _slow_square, [0, 1, 2, 3], labels=labels, config=ParallelConfig(2), cost=[0, 3, 1, 2]
    )
    assert [r.value for r in costly_first] == [0, 1, 4, 9]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_task_is_captured_and_the_others_stand(jobs):
    results = run_tasks(
        _fails_on_two, [0, 1, 2, 3], labels=list("wxyz"), config=ParallelConfig(jobs=jobs)
    )
    assert [r.value for r in results[:2]] == [0, 1]
    assert results[2].error == "two.json: requests[2]: broken on purpose"
    assert results[2].error_kind == "input"
    assert results[3].error_kind == "internal" and "ZeroDivisionError" in results[3].error
    assert worst_error_kind(results) == "internal"
    assert worst_error_kind(results[:3]) == "input"


def test_highs_runs_one_thread_serially_as_in_workers():
    # one thread count everywhere: HiGHS's answer depends on it (docs/scaling.md, "Threads")
    serial = run_tasks(_exact_threads, [0], labels=["s"])
    pooled = run_tasks(_exact_threads, [0, 1, 2], labels=list("abc"), config=ParallelConfig(2))
    assert serial[0].value == 1
    assert [r.value for r in pooled] == [1, 1, 1]


@pytest.mark.slow
def test_window_001_gets_one_answer_serially_and_in_parallel(capsys):
    """window_001 has two "optimal" assignments 4e-4 apart: HiGHS with 2 threads (serial runs,
    before) stopped at one, with 1 (workers) at the other. Two workers solve it at once."""
    window = INSTANCES / "window_001.json"
    code_1, serial = _solve_json(capsys, [window, SMALL / "memory.json"])
    code_2, pooled = _solve_json(capsys, [window, SMALL / "memory.json"], *LOKY2)
    assert code_1 == code_2 == 0
    assert serial[0]["status"] == "optimal"
    assert _answers(pooled) == _answers(serial)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"jobs": 0}, "jobs must be an integer >= 1"),
        ({"backend": "spark"}, 'unknown backend "spark"'),
        ({"scheduler": "tcp://127.0.0.1:8786"}, "--scheduler applies to --backend dask"),
    ],
)
def test_bad_parallel_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ParallelConfig(**kwargs)


# -- solve and compare ---------------------------------------------------------------------------
def test_parallel_solve_gives_the_serial_answers_in_input_order(capsys, serial_payload):
    code_1, serial = _solve_json(capsys, WINDOWS)
    code_2, pooled = _solve_json(capsys, WINDOWS, *LOKY2)
    assert code_1 == code_2 == 0
    assert _answers(serial) == _answers(json.loads(json.dumps(serial_payload)))
    assert [s["instance"] for s in pooled] == [s["instance"] for s in serial]
    assert _answers(pooled) == _answers(serial)
    assert {s["status"] for s in pooled} == {"optimal"}


def test_a_bad_file_in_a_batch_is_named_and_the_others_are_kept(capsys, tmp_path):
    files = [SMALL / "memory.json", BAD, tmp_path / "missing.json", SMALL / "bandwidth.json"]
    code = main(["solve", *map(str, files), *LOKY2, "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == EXIT_INPUT
    assert f"{BAD}: network.links[0]" in captured.err
    assert f"{tmp_path / 'missing.json'}: file not found" in captured.err
    assert "2 of 4 window(s) failed" in captured.err
    assert "memory.json" in captured.out and "bandwidth.json" in captured.out
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["bandwidth.solution.json", "memory.solution.json"]
    code, payload = _solve_json(capsys, files, *LOKY2)
    assert code == EXIT_INPUT
    assert [p.get("instance", p.get("file")) for p in payload] == [
        "small_memory",
        str(BAD),
        str(tmp_path / "missing.json"),
        "small_bandwidth",
    ]
    assert payload[1]["error"].startswith(f"{BAD}: ")


def test_parallel_compare_gives_the_serial_table(tmp_path, capsys):
    files = [*map(str, WINDOWS[:4]), str(BAD)]
    args = ["compare", *files, "--solvers", "exact,greedy,all-cloud"]
    assert main([*args, "--out", str(tmp_path / "serial.csv")]) == EXIT_INPUT
    assert main([*args, *LOKY2, "--out", str(tmp_path / "pooled.csv")]) == EXIT_INPUT
    assert f"{BAD}: " in capsys.readouterr().err
    serial = pd.read_csv(tmp_path / "serial.csv").drop(columns="time_s")
    pooled = pd.read_csv(tmp_path / "pooled.csv").drop(columns="time_s")
    assert len(serial) == 4 * 3
    pd.testing.assert_frame_equal(serial, pooled)


# -- replay and dataset --------------------------------------------------------------------------
def test_parallel_replay_equals_the_serial_replay():
    load = workload("azure-conv", 16.0, seed=2, edge_capacity=0.5)
    config = ReplayConfig(window_s=2.0, policies=("greedy", "all-cloud", "oracle"), time_limit=5)
    serial = replay(load, World(), config)
    pooled = replay(load, World(), config, parallel=ParallelConfig(jobs=2))
    assert list(pooled.runs) == list(config.policies)
    for name in config.policies:
        pd.testing.assert_frame_equal(serial.runs[name].requests, pooled.runs[name].requests)
        timing = ["decision_s"]
        pd.testing.assert_frame_equal(
            serial.runs[name].windows.drop(columns=timing),
            pooled.runs[name].windows.drop(columns=timing),
        )
        assert serial.runs[name].edge_busy_s == pooled.runs[name].edge_busy_s


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_parallel_bench_data_writes_byte_identical_files(tmp_path):
    base = ["bench-data", "--requests", "30", "--seed", "4"]
    assert main([*base, "--out", str(tmp_path / "serial")]) == 0
    assert main([*base, "--out", str(tmp_path / "pooled"), *LOKY2]) == 0
    serial, pooled = _files(tmp_path / "serial"), _files(tmp_path / "pooled")
    assert set(serial) == {"bench.csv.gz", "meta.json", "DATA_CARD.md"}
    assert serial == pooled


# -- Dask --------------------------------------------------------------------------------------
def _transitions(address: str) -> int:
    """Task state changes the scheduler has seen: proof that work went through the cluster."""
    from dask.distributed import Client

    with Client(address) as client:
        return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)


def test_dask_cluster_solves_like_the_serial_run(dask_address, capsys, serial_payload):
    serial = json.loads(json.dumps(serial_payload))
    before = _transitions(dask_address)
    code, remote = _solve_json(
        capsys, [*WINDOWS, BAD], "--backend", "dask", "--scheduler", dask_address
    )
    assert _transitions(dask_address) >= before + len(WINDOWS)
    assert code == EXIT_INPUT
    assert _answers(remote[:-1]) == _answers(serial)
    assert remote[-1]["file"] == str(BAD)
    assert remote[-1]["error"].startswith(f"{BAD}: network.links[0]")


def test_dask_tasks_carry_the_file_so_workers_need_not_see_it(tmp_path):
    from qlmio_opt.app.batch import WindowFile

    dask = ParallelConfig(jobs=2, backend="dask")
    shipped = WindowFile.of(SMALL / "memory.json", dask)
    moved = WindowFile(tmp_path / "elsewhere" / "memory.json", shipped.content)
    assert moved.read(None).name == "small_memory"
    assert WindowFile.of(SMALL / "memory.json", ParallelConfig(jobs=2)).content is None
    broken = WindowFile(tmp_path / "elsewhere" / "bad.json", BAD.read_bytes())
    with pytest.raises(InputError) as err:
        broken.read(None)
    assert err.value.render().startswith(f"{tmp_path / 'elsewhere' / 'bad.json'}: network.links")


def test_dask_without_an_address_starts_its_own_local_cluster(tmp_path):
    pytest.importorskip("dask.distributed")
    args = ["compare", str(SMALL / "memory.json"), str(SMALL / "bandwidth.json")]
    args += ["--solvers", "exact,greedy"]
    assert main([*args, "--out", str(tmp_path / "serial.csv")]) == 0
    dask = ["--backend", "dask", "--jobs", "2", "--out", str(tmp_path / "dask.csv")]
    assert main([*args, *dask]) == 0
    serial = pd.read_csv(tmp_path / "serial.csv").drop(columns="time_s")
    pd.testing.assert_frame_equal(serial, pd.read_csv(tmp_path / "dask.csv").drop(columns="time_s"))


def test_dask_backend_without_dask_installed_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # makes the import fail
    code = main(["solve", str(SMALL / "memory.json"), "--backend", "dask"])
    assert code == EXIT_INPUT
    assert "pip install 'qlmio-opt[dask]'" in capsys.readouterr().err


def test_scheduler_without_dask_backend_is_a_usage_error(capsys):
    code = main(["solve", str(SMALL / "memory.json"), "--scheduler", "tcp://127.0.0.1:1"])
    assert code == EXIT_INPUT
    assert "--scheduler applies to --backend dask only" in capsys.readouterr().err
