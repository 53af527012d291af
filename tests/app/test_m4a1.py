"""M4A1 real-log predictors: packaged data, episode splits, baseline, learned model, evaluation."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from qlmio_opt.app.m4a1 import (
    COLUMNS,
    METRIC_KEYS,
    NO_LOAD_NOTE,
    GroupMeanBaseline,
    M4A1Regressor,
    conformal_offset,
    counterfactual_rows,
    episode_folds,
    evaluate_m4a1,
    latency_evaluation,
    latency_p90_offset,
    load_m4a1,
    preferred_action,
    split_by_episode,
)
from qlmio_opt.domain.traces import data_bytes

REPO = Path(__file__).resolve().parents[2]
SHARED_M4A1 = REPO.parent / "shared" / "data" / "logs" / "m4a1" / "M4A1.json"


@pytest.fixture(scope="module")
def m4a1() -> pd.DataFrame:
    return load_m4a1()


def test_load_shape_and_columns(m4a1):
    assert len(m4a1) == 352
    assert tuple(m4a1.columns) == COLUMNS
    assert m4a1["episode"].nunique() == 100
    assert set(m4a1["action"]) == {0, 1}
    assert (m4a1.loc[m4a1["action"] == 0, "n_images"] == 0).all()
    assert m4a1["n_images"].between(0, 3).all()
    assert (m4a1["interaction_time"] > 0).all()
    assert (m4a1.groupby("episode")["turn"].apply(lambda t: list(t) == list(range(len(t))))).all()
    assert set(m4a1["task_cat"]) == {
        "Assistive System",
        "Message Editing",
        "Query",
        "Recommendation",
    }


def test_packaged_copy_matches_shared_source():
    if not SHARED_M4A1.exists():
        pytest.skip(f"shared source {SHARED_M4A1} absent")
    episodes = json.loads(SHARED_M4A1.read_text(encoding="utf-8"))
    expected = [
        {
            "episode": e,
            "turn": t,
            "question": it["question"],
            "task_cat": it["task_cat"],
            "action": it["action"],
            "n_images": 0 if it["image_index"] is None else len(it["image_index"]),
            "score": it["score"],
            "interaction_time": it["interaction_time"],
            "usage_cost": it["usage_cost"],
        }
        for e, ep in enumerate(episodes)
        for t, it in enumerate(ep["interactions"])
    ]
    got = load_m4a1().to_dict(orient="records")
    assert got == expected  # exact, floats included
    # and the build script reproduces the packaged bytes (deterministic gzip)
    spec = importlib.util.spec_from_file_location(
        "build_m4a1_data", REPO / "scripts" / "build_m4a1_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build_bytes(SHARED_M4A1) == data_bytes("m4a1.json.gz")


def test_split_by_episode(m4a1):
    train, test = split_by_episode(m4a1, test_size=0.3, random_state=0)
    assert set(train["episode"]).isdisjoint(test["episode"])
    assert len(train) + len(test) == len(m4a1)
    assert sorted([*train.index, *test.index]) == list(m4a1.index)
    assert test["episode"].nunique() == 30
    again = split_by_episode(m4a1.sample(frac=1.0, random_state=1), 0.3, random_state=0)[1]
    assert set(again["episode"]) == set(test["episode"])  # independent of row order
    other = split_by_episode(m4a1, 0.3, random_state=1)[1]
    assert set(other["episode"]) != set(test["episode"])


def test_episode_folds(m4a1):
    folds = episode_folds(m4a1["episode"], folds=5, random_state=0)
    assert len(folds) == 5
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen.tolist()) == list(range(len(m4a1)))
    ep = m4a1["episode"].to_numpy()
    for tr, te in folds:
        assert set(ep[tr]).isdisjoint(ep[te])
        assert len(set(ep[te])) == 20
    again = episode_folds(m4a1["episode"], folds=5, random_state=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))


def test_baseline_equals_hand_group_means():
    train = pd.DataFrame(
        {
            "task_cat": ["A", "A", "A", "B", "B"],
            "action": [0, 0, 1, 0, 1],
            "score": [1.0, 2.0, 4.0, 0.5, 3.0],
        }
    )
    model = GroupMeanBaseline().fit(train, train["score"])
    assert model.group_means_ == {("A", 0): 1.5, ("A", 1): 4.0, ("B", 0): 0.5, ("B", 1): 3.0}
    query = pd.DataFrame({"task_cat": ["A", "B", "C", "C", "A"], "action": [0, 1, 0, 1, 2]})
    # unseen task "C" falls back to the action mean; unseen action 2 to the overall mean
    expected = [1.5, 3.0, (1.0 + 2.0 + 0.5) / 3, (4.0 + 3.0) / 2, 10.5 / 5]
    np.testing.assert_allclose(model.predict(query), expected, rtol=1e-15)


def test_learned_model_deterministic_and_finite(m4a1):
    train, test = split_by_episode(m4a1, 0.3, random_state=0)
    model = M4A1Regressor(log_target=True, random_state=3)
    with pytest.raises(NotFittedError):
        check_is_fitted(model)
    a = clone(model).fit(train, train["interaction_time"]).predict(test)
    fitted = clone(model).fit(train, train["interaction_time"])
    b = fitted.predict(test)
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all() and (a > 0).all()
    assert fitted.alpha_ in fitted.alphas
    assert set(fitted.cv_mae_) == set(fitted.alphas)
    assert fitted.get_params()["random_state"] == 3
    score = M4A1Regressor(random_state=0).fit(train, train["score"])
    for action in (0, 1):
        assert np.isfinite(score.predict(counterfactual_rows(test, action))).all()


def test_counterfactual_rows_and_preferred_action(m4a1):
    local = counterfactual_rows(m4a1, 0)
    cloud = counterfactual_rows(m4a1, 1)
    assert (local["action"] == 0).all() and (local["n_images"] == 0).all()
    was_cloud = m4a1["action"] == 1
    assert (cloud.loc[was_cloud, "n_images"] == m4a1.loc[was_cloud, "n_images"]).all()
    assert (cloud.loc[~was_cloud, "n_images"] == 0).all()
    score = np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    latency = np.array([[5.0, 1.0], [5.0, 1.0], [5.0, 1.0], [1.0, 5.0], [2.0, 2.0]])
    np.testing.assert_array_equal(preferred_action(score, latency), [1, 0, 1, 0, 0])


@pytest.fixture(scope="module")
def evaluated() -> dict:
    return evaluate_m4a1(folds=3, random_state=0, resamples=300)


def test_evaluate_returns_documented_finite_metrics(evaluated):
    result = evaluated
    assert result["n_rows"] == 352 and result["n_episodes"] == 100 and result["folds"] == 3
    for name in ("baseline", "learned"):
        assert tuple(result[name]) == METRIC_KEYS
        assert all(math.isfinite(v) for v in result[name].values()), result[name]
        assert 0.0 <= result[name]["decision_agreement"] <= 1.0
        assert -1.0 <= result[name]["score_spearman"] <= 1.0
    assert all(math.isfinite(v) for v in result["logged"].values())


def test_the_latency_has_the_under_load_measures_with_intervals_and_no_load_split(evaluated):
    latency = evaluated["latency"]
    assert latency["rows"] == 352 and latency["episodes"] == 100
    assert latency["bootstrap"]["unit"] == "episode"
    assert latency["load_field"] is False and latency["note"] == NO_LOAD_NOTE
    assert "by_load" not in latency
    for name in ("baseline", "learned"):
        part = latency[name]
        assert part["mape"] == pytest.approx(evaluated[name]["latency_mape"])
        assert part["mae_s"] == pytest.approx(evaluated[name]["latency_mae"])
        for key in ("mae_s", "mape", "median_ape", "p90_coverage"):
            lo, hi = part[f"{key}_ci95"]
            assert lo <= part[key] <= hi
        # the conformal p90 covers about 90% of the held-out calls (bare predictions ~50%)
        assert 0.85 <= part["p90_coverage"] <= 0.95
    diff = latency["learned"]["mape"] - latency["baseline"]["mape"]
    assert latency["learned_minus_baseline_mape"] == pytest.approx(diff)
    lo, hi = latency["learned_minus_baseline_mape_ci95"]
    assert lo <= diff <= hi


def test_the_conformal_offset_is_the_finite_sample_quantile():
    ratios = np.arange(1.0, 20.0)[::-1]  # 19 values, 1 .. 19
    assert conformal_offset(ratios) == 18.0  # ceil(20 * 0.9) = 18th smallest
    assert conformal_offset(np.arange(1.0, 10.0)) == 9.0  # ceil(10 * 0.9) = 9th of 9
    assert conformal_offset(np.array([3.0, 1.0])) == 3.0  # rank beyond n: the largest
    with pytest.raises(ValueError, match="at least one"):
        conformal_offset(np.array([]))


def test_the_p90_offset_comes_from_out_of_fold_predictions_on_the_training_episodes(m4a1):
    train = m4a1[m4a1["episode"] < 30]
    baseline = GroupMeanBaseline().fit(train, train["interaction_time"])
    target = train["interaction_time"].to_numpy()
    by_hand = np.empty(len(train))
    for tr, te in episode_folds(train["episode"], 5, 0):
        fold = GroupMeanBaseline().fit(train.iloc[tr], target[tr])
        by_hand[te] = np.log(target[te] / fold.predict(train.iloc[te]))
    assert latency_p90_offset(baseline, train, 5, 0) == conformal_offset(by_hand)
    in_sample = np.log(target / baseline.predict(train))
    assert latency_p90_offset(baseline, train, 5, 0) != conformal_offset(in_sample)


def test_the_intervals_resample_whole_dialogues():
    """Two dialogues, one predicted exactly and one 100% off: resampling dialogues gives a MAPE
    of 0, 0.5 or 1 (interval [0, 1]); resampling calls would give a narrow interval."""
    df = pd.DataFrame({"episode": np.repeat([0, 1], 10), "interaction_time": np.full(20, 2.0)})
    off = np.where(df["episode"] == 0, 2.0, 4.0)
    out = latency_evaluation(
        df, {"baseline": off, "learned": off}, {"baseline": off, "learned": off}, 400, 0
    )
    assert out["baseline"]["mape"] == 0.5
    assert out["baseline"]["mape_ci95"] == [0.0, 1.0]
    assert out["learned_minus_baseline_mape_ci95"] == [0.0, 0.0]


def test_the_table_output_prints_the_latency_measures_and_says_there_is_no_load_field(evaluated):
    from qlmio_opt.app.predictor_evaluation import m4a1_latency_frame

    title, frame = m4a1_latency_frame(evaluated["latency"], evaluated["folds"])
    assert NO_LOAD_NOTE in title and "bootstrap over dialogues" in title
    assert list(frame.index) == ["baseline", "learned", "learned - baseline"]
    mape = evaluated["latency"]["learned"]["mape"]
    assert frame.loc["learned", "mape"].startswith(f"{mape:.4f} [")
    assert frame.loc["learned - baseline", "mape"].startswith("-")
    assert frame.loc["learned", "p90_coverage"] != ""
