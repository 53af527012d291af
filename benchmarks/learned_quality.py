"""Learned vs analytic quality on held-out benchmark data (issue MGQP).

Run ``python benchmarks/learned_quality.py [--requests 3000] [--test-requests 1000]``. It

1. generates the training table (``bench_data(requests, seed=0)``) and trains
   :class:`~qlmio_opt.predictors.learned_quality.LearnedQualityModel` with its a-priori
   settings on the ``train`` split, calibrated on ``validation``; and, for comparison, the same
   model without the learned text score (``text_buckets=0``: the features of version 1);
2. scores the learned and the analytic quality on two held-out sets: the seed-0 ``test`` split
   and a fresh table from seed 1 (every row; other requests, other loads). Both predictors
   predict through their ``predict(instance)`` path, on instances holding the same requests
   (bodies re-drawn exactly as the dataset drew them, since the table has no per-image sizes)
   and the bench nodes. Pairs are reduced to one row per (request, model): nodes running the same
   model share one drawn outcome. Metrics: AUC, Brier score, expected calibration error (10
   equal-width bins), overall and per model; the hidden ``true_completion_prob`` is shown as
   the ceiling no predictor can reach (it knows each request's hidden difficulty), and the
   *observable ceiling*, the world's probability averaged over that hidden draw: the best any
   predictor can do from the prompt, images, model and task (evaluation only: it reads the
   world's parameters);
3. the held-out-model experiment: trains again without any row of one model and scores that
   model's held-out rows;
4. times the quality prediction of a 500-request x 6-node window (features included);
5. writes the reliability diagram ``docs/predictors_reliability.png``.

Nothing is tuned on the test data: the settings were fixed on the validation split beforehand
(see :class:`LearnedQualityModel`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.scenarios.generate import get_scenario
from qlmio_opt.predictors import AnalyticPredictor
from qlmio_opt.predictors.learned import LearnedPredictor
from qlmio_opt.predictors.learned_features import clear_caches, window_quality_features
from qlmio_opt.predictors.learned_quality import LearnedQualityModel, quality_metrics
from qlmio_opt.simulator.dataset import BenchData, bench_data, draw_bench_requests
from qlmio_opt.simulator.world import World, discrimination

ROOT = Path(__file__).resolve().parent.parent
PNG = ROOT / "docs" / "predictors_reliability.png"
HELD_OUT = ("qwen2.5-vl-7b", "internvl2-2b")


def bench_instance(data: BenchData, requests: set[str] | None = None, nodes=None) -> Instance:
    """The bench requests (all or ``requests``) on the bench nodes (or ``nodes``), one window."""
    reqs = draw_bench_requests(get_scenario(data.scenario), data.n_requests, data.seed)
    ids = data.table["request"].to_numpy()[:: len(data.nodes)]
    if [r.id for r in reqs] != list(ids):
        raise RuntimeError("re-drawn requests differ from the table's")
    if requests is not None:
        reqs = [r for r in reqs if r.id in requests]
    nodes = list(nodes if nodes is not None else data.nodes)
    links = [
        {"id": f"l{j}", "from": "s0", "to": n.id, "bandwidth_mbps": 100.0, "rtt_ms": 10.0}
        for j, n in enumerate(nodes)
    ]
    return Instance.from_dict(
        {
            "format": "qlmio-opt/instance",
            "version": 1,
            "name": "bench",
            "window_s": 1.0,
            "nodes": [n.model_dump(mode="json", exclude_unset=True) for n in nodes],
            "network": {"sites": ["s0"], "links": links},
            "requests": [r.model_dump(mode="json", exclude_unset=True) for r in reqs],
        }
    )


def observable_ceiling(instance: Instance, models: list[str]) -> np.ndarray:
    """``(R, M)``: the world's completion probability averaged over the hidden difficulty draw.

    The best any predictor can do from what it observes (prompt, images, model, task): it knows
    the world's exact parameters but not the request's standard-normal ``z``. Evaluation only.
    """
    world = World()
    reqs = list(instance.requests)
    z, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    p = np.array([world.prompt_difficulty(r.prompt) for r in reqs])
    out = np.empty((len(reqs), len(models)))
    for j, key in enumerate(models):
        spec = world.catalog.model(key)
        s = discrimination(spec)
        a = np.array([world.ability(key, r.task) for r in reqs])
        shift = world.resolution_shift(spec, reqs)
        logits = (a - s * p + shift)[:, None] - s * world.config.difficulty_sd * z[None, :]
        out[:, j] = expit(logits) @ w
    return out


def scored_rows(data: BenchData, split: str | None, predictors: dict) -> pd.DataFrame:
    """One row per (request, model) of ``split`` (or all) with every predictor's quality."""
    t = data.table
    rows = t if split is None else t[t["split"] == split]
    instance = bench_instance(data, set(rows["request"]))
    out = rows[["request", "node", "model", "task", "completed", "true_completion_prob"]].copy()
    for name, pred in predictors.items():
        if name != "learned (no text)":
            out[name] = pred.predict(instance).quality.ravel()
    model = predictors["learned"].quality_model_
    out["learned (uncalibrated)"] = model.predict_proba_instance(instance, calibrated=False).ravel()
    plain = predictors["learned (no text)"].quality_model_
    predictors = {k: v for k, v in predictors.items() if k != "learned (no text)"}
    out["learned (no text)"] = plain.predict_proba_instance(instance).ravel()
    models = [n.model for n in instance.nodes]
    out["observable ceiling"] = observable_ceiling(instance, models).ravel()
    return out.drop_duplicates(["request", "model"]).reset_index(drop=True)


def metric_rows(df: pd.DataFrame, columns: list[str], by: str | None = None) -> pd.DataFrame:
    groups = [("all", df)] if by is None else list(df.groupby(by))
    records = []
    for key, g in groups:
        rec = {"rows": len(g), "observed": g["completed"].mean()}
        for col in columns:
            m = quality_metrics(g["completed"].to_numpy(), g[col].to_numpy())
            rec |= {f"AUC {col}": m["auc"], f"Brier {col}": m["brier"], f"ECE {col}": m["ece"]}
        records.append({by or "set": key, **rec})
    return pd.DataFrame(records)


def markdown(df: pd.DataFrame, digits: int = 3) -> str:
    def fmt(v):
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def reliability_png(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
    edges = np.linspace(0, 1, 11)
    for col, marker in (("analytic", "s"), ("learned (no text)", "^"), ("learned", "o")):
        p, y = df[col].to_numpy(), df["completed"].to_numpy()
        idx = np.minimum((p * 10).astype(int), 9)
        full = [b for b in range(10) if (idx == b).sum() >= 20]  # bins of >= 20 pairs
        mp = [p[idx == b].mean() for b in full]
        my = [y[idx == b].mean() for b in full]
        ax.plot(mp, my, marker=marker, label=col)
    ax.set_xticks(edges)
    ax.set_xlabel("predicted completion probability (10 bins, those of >= 20 pairs)")
    ax.set_ylabel("observed completion rate")
    ax.set_title(f"Quality reliability on held-out data\n({len(df):,} request-model pairs)")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def timing(model: LearnedQualityModel, data: BenchData) -> dict[str, float]:
    """Median milliseconds to predict a 500-request x 6-node window's quality."""
    ids = data.table["request"].drop_duplicates().iloc[:500]
    picked, seen = [], set()
    for node in data.nodes:  # six nodes of six different models, edge and cloud
        if node.model not in seen and len(picked) < 6:
            picked.append(node)
            seen.add(node.model)
    if not any(n.tier == "cloud" for n in picked):
        picked[-1] = next(n for n in data.nodes if n.tier == "cloud")
    instance = bench_instance(data, set(ids), picked)
    spec = model.feature_spec_
    coef = model.text_coef_
    X, _ = window_quality_features(instance, spec, text_coef=coef)  # one row per distinct row

    def features() -> None:  # a window of new requests: no parse kept from an earlier call
        clear_caches()
        window_quality_features(instance, spec, text_coef=coef)

    def median_ms(fn, runs: int = 30) -> float:
        fn()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 1000 * float(np.median(times))

    return {
        "pairs": len(instance.requests) * len(instance.nodes),
        "features_ms": median_ms(features),
        "trees_ms": median_ms(lambda: model.predict_proba_features(X)),
        "quality_ms": median_ms(lambda: model.predict_proba_instance(instance)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--test-requests", type=int, default=1000)
    ap.add_argument("--png", type=Path, default=PNG)
    args = ap.parse_args()

    t0 = time.perf_counter()
    train = bench_data(args.requests, seed=0)
    fresh = bench_data(args.test_requests, seed=1)
    print(
        f"data: {args.requests} requests (seed 0, {len(train.table):,} rows) + "
        f"{args.test_requests} (seed 1) in {time.perf_counter() - t0:.1f} s"
    )
    t0 = time.perf_counter()
    model = LearnedQualityModel(random_state=0).fit(train.table)
    print(
        f"fit: {time.perf_counter() - t0:.1f} s, {model.forest_.n_trees} trees, depth "
        f"{model.forest_.depth}, {len(model.feature_names_)} features; settings "
        f"{ {k: v for k, v in model.get_params().items() if k != 'catalog'} }"
    )
    val = model.metrics_["validation_uncalibrated"]
    txt = model.metrics_["validation_text"]
    print(
        f"validation (uncalibrated): AUC {val['auc']:.3f}, Brier {val['brier']:.4f}; text score "
        f"alone: AUC of the analytic logit {txt['auc_analytic']:.3f}, plus the text score "
        f"{txt['auc_analytic_plus_text']:.3f}; {int((model.text_coef_ != 0).sum())} non-zero "
        "text coefficients"
    )
    plain = LearnedQualityModel(random_state=0, text_buckets=0).fit(train.table)
    val = plain.metrics_["validation_uncalibrated"]
    print(f"no-text model, validation: AUC {val['auc']:.3f}, Brier {val['brier']:.4f}\n")

    def as_predictor(quality_model: LearnedQualityModel) -> LearnedPredictor:
        pred = LearnedPredictor()
        pred.quality_model_ = quality_model
        pred.analytic_ = AnalyticPredictor().fit()
        return pred

    predictors = {
        "analytic": AnalyticPredictor().fit(),
        "learned": as_predictor(model),
        "learned (no text)": as_predictor(plain),
    }

    sets = {
        "seed-0 test split": scored_rows(train, "test", predictors),
        "seed-1 (all rows)": scored_rows(fresh, None, predictors),
    }
    # the instance path and the table path of the learned model agree
    rows = train.table[train.table["split"] == "test"].drop_duplicates(["request", "model"])
    gap = np.abs(model.predict_proba_table(rows) - sets["seed-0 test split"]["learned"]).max()
    print(f"instance path vs table path, max |difference|: {gap:.1e}\n")

    cols = [
        "analytic",
        "learned (no text)",
        "learned",
        "learned (uncalibrated)",
        "observable ceiling",
        "true_completion_prob",
    ]
    print("## Overall (one row per request and model)\n")
    for metric in ("AUC", "Brier", "ECE"):
        table = []
        for name, df in sets.items():
            m = metric_rows(df, cols)
            keep = {"set": name, "rows": int(m["rows"][0]), "observed": m["observed"][0]}
            table.append(keep | {c: m[f"{metric} {c}"][0] for c in cols})
        renamed = pd.DataFrame(table).rename(columns={"true_completion_prob": "hidden truth"})
        print(f"**{metric}**\n\n{markdown(renamed, 4 if metric == 'Brier' else 3)}\n")
    print(
        "observable ceiling: the world's probability averaged over the hidden difficulty draw "
        "(the best possible from observable inputs); hidden truth: true_completion_prob (knows "
        "each request's hidden difficulty; unreachable)."
    )
    for name, df in sets.items():
        print(f"\n## Per model, {name}\n")
        per = metric_rows(df, cols[:3], by="model")
        print(markdown(per))
        better = (per["AUC learned"] > per["AUC analytic"]).sum()
        brier = (per["Brier learned"] < per["Brier analytic"]).sum()
        print(
            f"\nlearned vs analytic: higher AUC on {better} of {len(per)} models, lower Brier on "
            f"{brier}; Brier difference {(per['Brier learned'] - per['Brier analytic']).min():+.4f}"
            f" to {(per['Brier learned'] - per['Brier analytic']).max():+.4f}"
        )

    print("\n## Held-out model: trained without any row of the model, scored on its rows\n")
    records = []
    for held in HELD_OUT:
        t = train.table
        without = LearnedQualityModel(random_state=0).fit(t[t["model"] != held])
        plain_without = LearnedQualityModel(random_state=0, text_buckets=0).fit(
            t[t["model"] != held]
        )
        assert held not in without.training_data_["models"]
        for name, df in sets.items():
            mine = df[df["model"] == held].copy()
            tab = train.table if name.startswith("seed-0") else fresh.table
            if name.startswith("seed-0"):
                tab = tab[tab["split"] == "test"]
            tab = tab[tab["model"] == held].drop_duplicates(["request", "model"])
            assert list(tab["request"]) == list(mine["request"])
            mine["learned (held out)"] = without.predict_proba_table(tab)
            mine["learned no text (held out)"] = plain_without.predict_proba_table(tab)
            rec = metric_rows(
                mine, ["analytic", "learned no text (held out)", "learned (held out)", "learned"]
            )
            records.append(rec.assign(set=f"{held}, {name}"))
    held_df = pd.concat(records, ignore_index=True)
    keep = [c for c in held_df.columns if not c.startswith("ECE")]
    print(markdown(held_df[keep].rename(columns=lambda c: c.replace("learned", "L"))))
    print("\n(L = learned with the model in training; L (held out) = learned without it)")

    tm = timing(model, fresh)
    print(
        f"\n## Prediction time, 500 requests x 6 nodes ({tm['pairs']:,} pairs), median of 30\n\n"
        f"features {tm['features_ms']:.2f} ms, trees + calibration {tm['trees_ms']:.2f} ms, "
        f"quality end to end (instance -> (R, N)) {tm['quality_ms']:.2f} ms"
    )

    both = pd.concat(sets.values(), ignore_index=True)
    reliability_png(both, args.png)
    print(f"\nreliability diagram: {args.png}")
    names = model.feature_names_
    print(f"features ({len(names)}): {', '.join(names)}")


if __name__ == "__main__":
    main()
