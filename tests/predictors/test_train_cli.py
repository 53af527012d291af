"""`qlmio-opt train` and `--predictors PATH`: train on bench data, solve with the saved model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qlmio_opt.faces.cli import main
from qlmio_opt.simulator.dataset import bench_data, write_bench_data

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    write_bench_data(bench_data(150, seed=3), folder)
    return folder


@pytest.fixture(scope="module")
def model_path(bench_folder):
    folder = bench_folder
    stem = folder / "model" / "quality"
    assert main(["train", "--data", str(folder), "--out", str(stem)]) == 0
    return stem


def test_train_writes_a_json_and_npz(model_path):
    assert model_path.with_suffix(".json").exists()
    assert model_path.with_suffix(".npz").exists()
    latency = model_path.with_name(model_path.name + "-latency")
    assert latency.with_suffix(".json").exists()
    assert latency.with_suffix(".npz").exists()


def test_the_saved_stem_loads_both_models(model_path):
    from qlmio_opt.predictors import get_predictor

    predictor = get_predictor(str(model_path.with_suffix(".json")))
    assert predictor.latency_model_ is not None
    assert predictor.quality_model_.calibration == "tier-logistic"


def test_solve_with_the_shipped_learned_predictors(capsys):
    from qlmio_opt.predictors import DEFAULT_LEARNED

    assert DEFAULT_LEARNED.exists()
    capsys.readouterr()
    window = str(ROOT / "instances" / "window_042.json")
    assert main(["solve", window, "--predictors", "learned", "--format", "json"]) == 0
    solution = json.loads(capsys.readouterr().out)
    assert solution["status"] == "optimal"
    assert solution["predictors"] == "learned"  # the spec given, never a class name


def test_solve_with_the_saved_model(model_path, capsys):
    capsys.readouterr()
    window = str(ROOT / "instances" / "window_042.json")
    code = main(
        [
            "solve",
            window,
            "--solver",
            "greedy",
            "--predictors",
            str(model_path.with_suffix(".json")),
            "--format",
            "json",
        ]
    )
    assert code == 0
    solution = json.loads(capsys.readouterr().out)
    assert solution["status"] in ("feasible", "optimal")
    assert solution["predictors"] == str(model_path.with_suffix(".json"))


def test_a_tampered_model_is_refused_with_exit_2(model_path, tmp_path, capsys):
    bad = tmp_path / model_path.name  # the JSON names its npz by file name
    bad.with_suffix(".json").write_text(model_path.with_suffix(".json").read_text())
    bad.with_suffix(".npz").write_bytes(b"not an npz archive")
    window = str(ROOT / "instances" / "window_042.json")
    code = main(["solve", window, "--predictors", str(bad.with_suffix(".json"))])
    assert code == 2
    assert f"{model_path.name}.npz" in capsys.readouterr().err


def test_train_without_data_exits_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "no bench.csv.gz" in capsys.readouterr().err


def test_a_missing_array_file_is_refused_with_exit_2(model_path, tmp_path, capsys):
    lone = tmp_path / model_path.name
    lone.with_suffix(".json").write_text(model_path.with_suffix(".json").read_text())
    window = str(ROOT / "instances" / "window_042.json")
    assert main(["solve", window, "--predictors", str(lone.with_suffix(".json"))]) == 2
    assert "no such model file" in capsys.readouterr().err


def test_simulate_with_the_saved_model(model_path, capsys):
    capsys.readouterr()
    code = main(
        [
            "simulate",
            "--duration",
            "12",
            "--policies",
            "greedy",
            "--format",
            "json",
            "--predictors",
            str(model_path.with_suffix(".json")),
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["predictors"] == str(model_path.with_suffix(".json"))
    assert 0.0 <= data["policies"]["greedy"]["tcr"] <= 1.0


def test_evaluate_predictors_json(bench_folder, capsys):
    """--data scores the shipped models on every row of a table of another seed, and M4A1."""
    capsys.readouterr()
    args = ["--data", str(bench_folder), "--resamples", "200", "--format", "json"]
    code = main(["evaluate-predictors", *args])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["data"]["rows"] == 150 * 14
    assert result["scored"]["rows_left_out"] == 0  # seed 3: no request of the shipped training
    for part in ("analytic", "learned"):
        assert 0.0 <= result["quality"][part]["auc"] <= 1.0
        assert result["quality"][part]["brier"] >= 0.0
        assert result["latency"][part]["mape"] >= 0.0
        assert result["quality"][part]["requests"] == 150
        assert result["latency"][part]["rows"] == 150 * 14
        lo, hi = result["quality"][part]["auc_ci95"]
        assert lo <= result["quality"][part]["auc"] <= hi
        lo, hi = result["latency"][part]["mape_ci95"]
        assert lo <= result["latency"][part]["mape"] <= hi
    assert 0.0 <= result["latency"]["learned"]["p90_coverage"] <= 1.0
    assert result["m4a1"]["baseline"]["score_mae"] > 0
    assert result["m4a1"]["learned"]["latency_mape"] > 0
    assert {row["model"] for row in result["quality_per_model"]}


def test_evaluate_predictors_scores_a_saved_model(model_path, capsys):
    """--predictors PATH scores that model (trained on seed 3) on a fresh table, not the shipped."""
    from qlmio_opt.predictors import get_predictor
    from qlmio_opt.predictors.learned_quality import quality_metrics

    capsys.readouterr()
    args = ["--predictors", str(model_path.with_suffix(".json")), "--requests", "60"]
    code = main(
        ["evaluate-predictors", *args, "--no-m4a1", "--resamples", "200", "--format", "json"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scored"]["training_prefixes"] == ["mb3"]
    assert result["scored"]["rows_left_out"] == 0
    rows = bench_data(60, seed=result["data"]["seed"]).table.drop_duplicates(["request", "model"])
    model = get_predictor(str(model_path.with_suffix(".json"))).quality_model_
    expected = quality_metrics(rows["completed"], model.predict_proba_table(rows))["auc"]
    assert result["quality"]["learned"]["auc"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.torch
def test_train_the_torch_family_and_solve_with_it(bench_folder, capsys):
    pytest.importorskip("torch", reason="training needs the torch extra")
    from qlmio_opt.predictors import get_predictor
    from qlmio_opt.predictors.learned_torch import TorchQualityModel

    stem = bench_folder / "model" / "torch"
    assert (
        main(["train", "--data", str(bench_folder), "--out", str(stem), "--family", "torch"]) == 0
    )
    predictor = get_predictor(str(stem.with_suffix(".json")))
    assert isinstance(predictor.quality_model_, TorchQualityModel)
    capsys.readouterr()
    window = str(ROOT / "instances" / "window_042.json")
    code = main(["solve", window, "--predictors", str(stem) + ".json", "--format", "json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["status"] == "optimal"


def test_train_with_an_unknown_family_exits_2(bench_folder, tmp_path, capsys):
    code = main(
        ["train", "--data", str(bench_folder), "--out", str(tmp_path / "m"), "--family", "xgb"]
    )
    assert code == 2
    assert "argument --family: invalid choice: 'xgb'" in capsys.readouterr().err


def test_the_model_card_names_the_shipped_files_and_their_hashes():
    import hashlib

    from qlmio_opt.predictors import TRAINED_DIR

    card = (TRAINED_DIR / "MODEL_CARD.md").read_text()
    files = sorted(p for p in TRAINED_DIR.iterdir() if p.suffix in (".json", ".npz"))
    assert [p.name for p in files] == [
        "default-latency.json",
        "default-latency.npz",
        "default-selection.json",
        "default.json",
        "default.npz",
    ]
    for p in files:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        assert f"| `{p.name}` |" in card and digest in card, p.name
    assert sum(p.stat().st_size for p in files) < 3 * 2**20  # "a few MB at most"
