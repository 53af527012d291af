"""Bad arguments are refused with exit 2 before any work, naming the option."""

import os
import stat

import pytest
from conftest import SMALL

from qlmio_opt.faces.cli import EXIT_INPUT, main

MEMORY = str(SMALL / "memory.json")


@pytest.fixture
def never_solve(monkeypatch):
    """Fail the test if a window is solved: refusals must come before any work."""

    def boom(*args, **kwargs):
        raise AssertionError("a window was solved before the arguments were checked")

    monkeypatch.setattr("qlmio_opt.app.batch.solve_files", boom)
    monkeypatch.setattr("qlmio_opt.app.batch.compare_files", boom)


def test_out_that_is_a_file_where_a_folder_is_needed(tmp_path, capsys, never_solve):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    two = [MEMORY, MEMORY.replace("memory", "bandwidth")]
    assert main(["solve", *two, "--out", str(blocker)]) == EXIT_INPUT
    assert "is a file; give a folder" in capsys.readouterr().err
    nested = blocker / "below"
    assert main(["solve", MEMORY, "--out", str(nested / "s.json")]) == EXIT_INPUT
    assert "is a file, so no folder can be made under it" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder(tmp_path, capsys, never_solve):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert main(["solve", MEMORY, "--out", str(locked / "s.json")]) == EXIT_INPUT
        assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(stat.S_IRWXU)


def test_out_in_a_read_only_folder_by_permission_check(tmp_path, capsys, never_solve, monkeypatch):
    # as root (CI) permissions do not bind, so check the refusal through os.access itself
    monkeypatch.setattr("qlmio_opt.faces.out_paths._can_write", lambda path: False)
    assert main(["solve", MEMORY, "--out", str(tmp_path / "s.json")]) == EXIT_INPUT
    assert "not writable" in capsys.readouterr().err


def test_two_inputs_that_would_write_the_same_file(tmp_path, capsys, never_solve):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "w.json").write_text((SMALL / "memory.json").read_text())
    code = main(["solve", str(a / "w.json"), str(b / "w.json"), "--out", str(tmp_path / "out")])
    assert code == EXIT_INPUT
    assert "would both write w.solution.json" in capsys.readouterr().err


def test_one_input_into_a_folder(tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    assert main(["solve", MEMORY, "--solver", "greedy", "--out", str(folder)]) == 0
    assert (folder / "memory.solution.json").is_file()
    assert main(["solve", MEMORY, "--solver", "greedy", "--out", f"{tmp_path}/new/"]) == 0
    assert (tmp_path / "new" / "memory.solution.json").is_file()


def test_compare_sweep_and_simulate_check_their_out_first(tmp_path, capsys, never_solve):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["compare", MEMORY, "--out", str(tmp_path)]) == EXIT_INPUT
    assert "is a folder; give a file name" in capsys.readouterr().err
    assert main(["sweep", MEMORY, "--out", str(blocker)]) == EXIT_INPUT
    assert main(["simulate", "--duration", "5", "--out", str(blocker)]) == EXIT_INPUT
    assert main(["bench-data", "--requests", "2", "--out", str(blocker)]) == EXIT_INPUT
    assert capsys.readouterr().err.count("is a file; give a folder") == 3


def test_unknown_solver_is_reported_as_a_solver_error(capsys):
    assert main(["solve", MEMORY, "--solver", "nope"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "--solver nope" in err and "predictors" not in err


def test_generate_does_not_overwrite_without_force(tmp_path, capsys):
    assert main(["generate", "--count", "1", "--out", str(tmp_path)]) == 0
    before = (tmp_path / "window_000.json").stat().st_mtime_ns
    assert main(["generate", "--count", "1", "--out", str(tmp_path)]) == EXIT_INPUT
    assert "pass --force" in capsys.readouterr().err
    assert (tmp_path / "window_000.json").stat().st_mtime_ns == before
    assert main(["generate", "--count", "1", "--out", str(tmp_path), "--force"]) == 0


def test_version(capsys):
    assert main(["--version"]) == 0
    from qlmio_opt import __version__

    assert capsys.readouterr().out.strip() == f"qlmio-opt {__version__}"


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_out_of_range_is_a_usage_error(seed, capsys):
    assert main(["solve", MEMORY, "--seed", seed]) == EXIT_INPUT


@pytest.mark.parametrize("solver", ["exact", "exact-pyomo", "greedy"])
def test_an_infinite_time_limit_means_no_limit(solver, capsys):
    assert main(["solve", MEMORY, "--solver", solver, "--time-limit", "inf"]) == 0
