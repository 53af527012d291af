"""The README's tour: ``solve --format json`` then ``check`` accepts what every solver wrote,
with the analytic and the shipped learned predictors, on committed windows."""

import json

import pytest
from conftest import INSTANCES

from qlmio_opt.faces.cli import EXIT_INFEASIBLE, EXIT_INPUT, main
from qlmio_opt.solvers import SOLVERS

# two small committed windows (20 and 23 requests), so every solver runs in well under a second
WINDOWS = [INSTANCES / "window_086.json", INSTANCES / "window_041.json"]


@pytest.mark.parametrize("predictors", ["analytic", "learned"])
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_solve_then_check_accepts_every_solver(solver, predictors, tmp_path, capsys):
    for window in WINDOWS:
        args = ["--solver", solver, "--predictors", predictors, "--format", "json"]
        code = main(["solve", str(window), *args])
        text = capsys.readouterr().out
        data = json.loads(text)
        assert data["predictors"] == predictors
        solution = tmp_path / f"{window.stem}.{solver}.json"
        solution.write_text(text)
        checked = main(["check", str(window), str(solution)])
        report = capsys.readouterr().out
        if code == 0:
            assert checked == 0, report
            assert "matches" in report and "FALSE" not in report
        else:  # a rule that breaks a capacity: both say so
            assert code == checked == EXIT_INFEASIBLE, report


def test_check_refuses_a_model_path_named_only_in_the_solution(tmp_path, capsys):
    window = WINDOWS[0]
    assert main(["solve", str(window), "--predictors", "learned", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    data["predictors"] = "/tmp/untrusted/model.json"
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    assert main(["check", str(window), str(path)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "--predictors /tmp/untrusted/model.json" in err and str(path) in err
    # the user may name the model on the command line (here: the shipped one under its path)
    from qlmio_opt.predictors import DEFAULT_LEARNED

    assert main(["check", str(window), str(path), "--predictors", str(DEFAULT_LEARNED)]) == 0
