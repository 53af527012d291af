"""Train the shipped learned predictors and write their model card.

    python scripts/train_default_predictors.py [--requests 6000] [--seed 0]

Generates ``bench-data`` (``--requests`` requests, seed ``--seed``) in a temporary folder,
trains the quality and latency models on its ``train`` split (calibrated on ``validation``) and
writes ``predictors/trained/default.json`` / ``.npz``, ``default-latency.json`` / ``.npz`` and
``MODEL_CARD.md`` with the held-out ``test`` split's metrics against the analytic predictor.
The same command with the same arguments rewrites the same numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import pandas as pd

from qlmio_opt import __version__
from qlmio_opt.predictors.learned import latency_model_path
from qlmio_opt.predictors.learned_latency import (
    LearnedLatencyModel,
    analytic_parts,
    latency_metrics,
)
from qlmio_opt.predictors.learned_quality import LearnedQualityModel, quality_metrics
from qlmio_opt.report import markdown_table
from qlmio_opt.simulator.dataset import bench_data, read_bench_table, write_bench_data

TRAINED = Path(__file__).resolve().parents[1] / "predictors" / "trained"


def held_out(
    table: pd.DataFrame, quality: LearnedQualityModel, latency: LearnedLatencyModel
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Quality and latency metrics of analytic and learned on the ``test`` split."""
    test = table[table["split"] == "test"]
    per_model = test.drop_duplicates(["request", "model"])  # cloud models run on two devices
    names = quality.feature_spec_.names()
    analytic_q = quality.features_table(per_model)[:, names.index("analytic_quality")]
    y = per_model["completed"].to_numpy()
    q = pd.DataFrame(
        {
            "analytic": quality_metrics(y, analytic_q),
            "learned": quality_metrics(y, quality.predict_proba_table(per_model)),
        }
    ).T
    q["rows"] = q["rows"].astype(int)
    actual = test["latency_s"].to_numpy(float)
    pred = latency.predict_table(test)
    lat = pd.DataFrame(
        {
            "analytic": latency_metrics(actual, analytic_parts(test)["latency_s"]),
            "learned": latency_metrics(actual, pred["latency_s"], pred["latency_p90_s"]),
        }
    ).T
    return q, lat


def model_card(
    table: pd.DataFrame, args: argparse.Namespace, q: pd.DataFrame, lat: pd.DataFrame
) -> str:
    files = sorted(p for p in TRAINED.iterdir() if p.suffix in (".json", ".npz"))
    sizes = "\n".join(
        f"| `{p.name}` | {p.stat().st_size / 1024:.0f} KiB | "
        f"`{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}...` |"
        for p in files
    )
    split = table.drop_duplicates("request")["split"].value_counts()
    quality_meta = json.loads((TRAINED / "default.json").read_text())
    return f"""# Model card: the shipped learned predictors (`--predictors learned`)

Written by `python scripts/train_default_predictors.py --requests {args.requests} --seed \
{args.seed}` with qlmio-opt {__version__}; rerunning it rewrites the same models.

## What they predict
- **Quality** (`default.json` / `.npz`, `LearnedQualityModel`): the probability that a node's
  model completes a request's task, from the prompt (hand-made indicators and a learned score of
  the question's words), the task, the images and their tokens for that model, and the model's
  catalog features (size, published accuracies, tier). No model identifier is a feature, so a
  model added to the catalog gets predictions from its catalog entry.
- **Latency** (`default-latency.json` / `.npz`, `LearnedLatencyModel`): the output length, then
  the end-to-end stand-alone latency and a conformally widened 90th percentile, from the same
  request features, the analytic physics of the pair and the node's load. Instances are
  predicted at zero background load: the formulation's congestion curve charges the load.

## Training data
The simulator's benchmark dataset (`qlmio-opt bench-data --requests {args.requests} --seed \
{args.seed}`): {args.requests:,} requests drawn from the default scenario's workload, each run on
all {table["node"].nunique()} device-model pairs of the scenario under a random recorded load
({len(table):,} rows). Requests are split by a hash of their id: {split.get("train", 0):,}
train, {split.get("validation", 0):,} validation (calibration, p90 widening) and
{split.get("test", 0):,} test (the metrics below; never used in training). The outcomes are the
synthetic world's (see `docs/simulator.md`): quality calibrated to published accuracies, speeds
to published throughput. It is *not* real serving data; the M4A1 results in
`docs/predictors.md` are the real-log check.

Training rows: {quality_meta["training_data"]["train_rows"]:,}; models seen:
{", ".join(quality_meta["training_data"]["models"])}.

## Held-out metrics (test split)
Quality (one row per request and model):

{markdown_table(q)}

Latency (every request-node row, under its recorded load):

{markdown_table(lat)}

## Files (loaded without executing code)
JSON and `.npz` arrays only, read with `numpy.load(allow_pickle=False)`; each JSON records the
SHA-256 of its `.npz`, and every field is checked on load.

| file | size | SHA-256 |
|---|---|---|
{sizes}

## Limits
- Trained on simulated outcomes; on a real deployment, retrain with `qlmio-opt train` on logs of
  that deployment (the M4A1 adapter shows the path for real logs).
- The quality floor of `quality_floor` is held on predicted quality; the closed-loop replay in
  `docs/results.md` measures how far the observed completion rate falls from it.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data", type=Path, help="an existing bench-data folder of these --requests and --seed"
    )
    args = parser.parse_args()
    if args.data is not None:
        meta = json.loads((args.data / "meta.json").read_text())
        if (meta.get("n_requests"), meta.get("seed")) != (args.requests, args.seed):
            raise SystemExit(
                f"{args.data}: not bench-data --requests {args.requests} --seed {args.seed}"
            )
        table = read_bench_table(args.data / "bench.csv.gz")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            write_bench_data(bench_data(args.requests, args.seed), Path(tmp))
            table = read_bench_table(Path(tmp) / "bench.csv.gz")
    quality = LearnedQualityModel(random_state=args.seed).fit(table)
    latency = LearnedLatencyModel(random_state=args.seed).fit(table)
    stem = TRAINED / "default"
    quality.save(stem)
    latency.save(latency_model_path(stem))
    q, lat = held_out(table, quality, latency)
    print(markdown_table(q))
    print(markdown_table(lat))
    (TRAINED / "MODEL_CARD.md").write_text(model_card(table, args, q, lat), encoding="utf-8")
    print(f"wrote {TRAINED}")


if __name__ == "__main__":
    main()
