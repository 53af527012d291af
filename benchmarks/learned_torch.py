"""Two learned quality families side by side: scikit-learn (default) and torch (issue MGQP).

Run ``python benchmarks/learned_torch.py [--requests 3000] [--test-requests 1000] [--seeds 3]``
(needs the ``torch`` extra). It

1. generates the training table (``bench_data(requests, seed=0)``) and trains, on its ``train``
   split with calibration on ``validation``, the scikit-learn
   :class:`~qlmio_opt.predictors.learned_quality.LearnedQualityModel` and the torch
   :class:`~qlmio_opt.predictors.learned_torch.TorchQualityModel` (``--seeds`` seeds, to show
   how much the network moves with its seed), both with their default settings, one thread;
2. scores them and the analytic predictor on the seed-0 ``test`` split and on a fresh seed-1
   table (every row), through the predictors' ``predict(instance)`` path (the learned models
   wrapped in :class:`~qlmio_opt.predictors.learned.LearnedPredictor`), one row per
   (request, model) as in ``benchmarks/learned_quality.py`` (whose helpers it reuses): AUC,
   Brier score, 10-bin ECE;
3. the held-out-model experiment for both families (trained without any row of the model);
4. times fitting, and the quality prediction of a 500-request x 6-node window (median of 30
   runs), end to end (features included) and from precomputed dense features.

Timings are wall-clock on whatever machine runs it (the reference numbers come from a shared
2-core machine: noisy, compare orders of magnitude). Nothing is tuned on the test data.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from learned_quality import HELD_OUT, bench_instance, markdown, metric_rows

from qlmio_opt.predictors import AnalyticPredictor
from qlmio_opt.predictors.learned import LearnedPredictor
from qlmio_opt.predictors.learned_features import window_quality_features
from qlmio_opt.predictors.learned_quality import LearnedQualityModel
from qlmio_opt.predictors.learned_torch import TorchQualityModel
from qlmio_opt.simulator.dataset import BenchData, bench_data


def as_predictor(model) -> LearnedPredictor:
    """A learned predictor around an already fitted quality model of either family."""
    pred = LearnedPredictor()
    pred.quality_model_ = model
    pred.latency_model_ = None  # quality only: latency stays analytic
    pred.analytic_ = AnalyticPredictor().fit()
    return pred


def timed_fit(model, table: pd.DataFrame):
    t0 = time.perf_counter()
    model.fit(table)
    return model, time.perf_counter() - t0


def scored(data: BenchData, split: str | None, predictors: dict) -> pd.DataFrame:
    """One row per (request, model) of ``split`` (or all) with every predictor's quality."""
    t = data.table
    rows = t if split is None else t[t["split"] == split]
    instance = bench_instance(data, set(rows["request"]))
    out = rows[["request", "model", "completed"]].copy()
    for name, pred in predictors.items():
        out[name] = pred.predict(instance).quality.ravel()
    return out.drop_duplicates(["request", "model"]).reset_index(drop=True)


def window(data: BenchData):
    """A 500-request x 6-node window of six different models, edge and cloud."""
    ids = data.table["request"].drop_duplicates().iloc[:500]
    picked, seen = [], set()
    for node in data.nodes:
        if node.model not in seen and len(picked) < 6:
            picked.append(node)
            seen.add(node.model)
    if not any(n.tier == "cloud" for n in picked):
        picked[-1] = next(n for n in data.nodes if n.tier == "cloud")
    return bench_instance(data, set(ids), picked)


def median_ms(fn, runs: int = 30) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def model_only_ms(model, instance) -> float:
    """Median ms of the model's own part of the prediction, from precomputed features."""
    coef = getattr(model, "text_coef_", None)
    X, key = window_quality_features(instance, model.feature_spec_, text_coef=coef)
    n_req, n_node = len(instance.requests), len(instance.nodes)
    X = X[(key[None, :] * n_req + np.arange(n_req)[:, None]).ravel()]  # every pair a row
    if isinstance(model, TorchQualityModel):
        prompts = np.repeat(np.array([r.prompt or "" for r in instance.requests]), n_node)
        return median_ms(lambda: model.predict_proba_features(X, prompts=prompts))
    return median_ms(lambda: model.predict_proba_features(X))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--test-requests", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=3, help="torch seeds (random_state 0..n-1)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    train = bench_data(args.requests, seed=0)
    fresh = bench_data(args.test_requests, seed=1)
    print(
        f"data: {args.requests} requests (seed 0, {len(train.table):,} rows) + "
        f"{args.test_requests} (seed 1) in {time.perf_counter() - t0:.1f} s\n"
    )
    sk, sk_s = timed_fit(LearnedQualityModel(random_state=0), train.table)
    fits = {"sklearn": (sk, sk_s)}
    for seed in range(args.seeds):
        fits[f"torch (seed {seed})"] = timed_fit(TorchQualityModel(random_state=seed), train.table)
    th = fits["torch (seed 0)"][0]
    hist = th.metrics_["training"]
    print(
        f"torch: {hist['parameters']:,} parameters, hidden {th.hidden_sizes}, text "
        f"{th.text_buckets} x {th.text_dim}; best epoch {hist['best_epoch']} of "
        f"{hist['epochs_run']} run, temperature {hist['temperature']:.3f}"
    )

    predictors = {"analytic": AnalyticPredictor().fit()}
    predictors |= {name: as_predictor(model) for name, (model, _) in fits.items()}
    sets = {
        "seed-0 test split": scored(train, "test", predictors),
        "seed-1 (all rows)": scored(fresh, None, predictors),
    }
    instance = window(fresh)
    shape = (len(instance.requests), len(instance.nodes))
    analytic_ms = median_ms(lambda: predictors["analytic"].predict(instance))
    predict_ms = {
        name: median_ms(lambda m=model: m.predict_proba_instance(instance))
        for name, (model, _) in fits.items()
    }
    model_ms = {name: model_only_ms(model, instance) for name, (model, _) in fits.items()}

    for set_name, df in sets.items():
        m = metric_rows(df, list(predictors))
        records = []
        for name in predictors:
            fit_s = fits[name][1] if name in fits else float("nan")
            records.append(
                {
                    "predictor": name,
                    "AUC": m[f"AUC {name}"][0],
                    "Brier": m[f"Brier {name}"][0],
                    "ECE": m[f"ECE {name}"][0],
                    "fit s": fit_s,
                    "predict ms": predict_ms.get(name, analytic_ms),
                    "model ms": model_ms.get(name, float("nan")),
                }
            )
        table = pd.DataFrame(records)
        print(f"\n## {set_name}: {int(m['rows'][0]):,} request-model pairs\n")
        print(markdown(table, 4))
    print(
        f"\npredict ms: median of 30, quality of a {shape[0]} x {shape[1]} window, instance -> "
        "(R, N) with features (analytic: its whole predict(), latency and memory included); "
        "model ms: the same from precomputed dense features (sklearn: the trees and the "
        "calibration; torch: the text bag, the network and the calibration); "
        "fit s: one fit on the train split, calibration included, one thread. Shared 2-core "
        "machine: timings are noisy."
    )

    print("\n## Held-out model: trained without any row of the model, scored on its rows\n")
    records = []
    for held in HELD_OUT:
        t = train.table[train.table["model"] != held]
        without = {
            "sklearn": LearnedQualityModel(random_state=0).fit(t),
            "torch": TorchQualityModel(random_state=0).fit(t),
        }
        for set_name, df in sets.items():
            mine = df[df["model"] == held].copy()
            data = train if set_name.startswith("seed-0") else fresh
            rows = set(mine["request"])
            inst = bench_instance(data, rows, [n for n in data.nodes if n.model == held][:1])
            assert [r.id for r in inst.requests] == list(mine["request"])
            for name, model in without.items():
                mine[f"{name} (held out)"] = model.predict_proba_instance(inst).ravel()
            cols = ["analytic", "sklearn (held out)", "torch (held out)"]
            rec = metric_rows(mine, cols).drop(columns="set")
            records.append(rec.assign(set=f"{held}, {set_name}"))
    held_df = pd.concat(records, ignore_index=True)
    held_df = held_df[["set", *[c for c in held_df.columns if c != "set"]]]
    print(markdown(held_df[[c for c in held_df.columns if not c.startswith("ECE")]]))


if __name__ == "__main__":
    main()
