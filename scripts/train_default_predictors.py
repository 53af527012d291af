"""Train the shipped learned predictors and write their model card.

    python scripts/train_default_predictors.py [--requests 6000] [--seed 0]
        [--selection-requests 12000] [--selection-seed 3] [--selection-margin 0.005]
        [--selection-only]

Generates ``bench-data`` (``--requests`` requests, seed ``--seed``) in a temporary folder,
trains the quality and latency models on its ``train`` split (calibrated on ``validation``) and
writes ``predictors/trained/default.json`` / ``.npz``, ``default-latency.json`` / ``.npz`` and
``MODEL_CARD.md`` with the held-out ``test`` split's metrics against the analytic predictor.
It then fits the selection calibration of the quality differences
(:mod:`qlmio_opt.predictors.selection`) on a *fresh* ``bench-data`` table
(``--selection-requests`` requests of ``--selection-seed``, no request of the training table)
and writes ``default-selection.json`` with ``--selection-margin`` (chosen on replays of workload
seeds 1-4 by ``benchmarks/replay_selection.py``, never on the evaluated seed 0).
``--selection-only`` keeps the saved quality and latency models and refits the calibration.
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
from qlmio_opt.faces.report import markdown_table
from qlmio_opt.predictors.learned import latency_model_path
from qlmio_opt.predictors.learned_latency import (
    LearnedLatencyModel,
    analytic_parts,
    latency_metrics,
)
from qlmio_opt.predictors.learned_quality import LearnedQualityModel, quality_metrics
from qlmio_opt.predictors.selection import SelectionCalibration, selection_path
from qlmio_opt.simulator.dataset import bench_data, read_bench_table, write_bench_data

TRAINED = Path(__file__).resolve().parents[1] / "predictors" / "trained"

SELECTION_MARGIN = 0.005
"""The shipped margin of the selection calibration (see ``benchmarks/replay_selection.py``)."""


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


def selection_section(selection: SelectionCalibration, args: argparse.Namespace) -> str:
    info = selection.training_data_
    edge, cloud = selection.coef_
    lines = [
        "- **Selection calibration** (`default-selection.json`, `SelectionCalibration`): the",
        "  quality of every pair other than the request's all-cloud reference node is the",
        "  reference's quality less a calibrated *difference*, `a + b * (analytic difference) +",
        "  c * (learned difference - analytic difference) + margin`, fitted by least squares of",
        "  the observed difference on a fresh table (`bench-data --requests "
        f"{args.selection_requests} --seed {args.selection_seed}`:",
        f"  {info['requests']:,} requests the models above never saw; {info['edge']['rows']:,}"
        f" edge and {info['cloud']['rows']:,} cloud pairs).",
        f"  Edge nodes: a = {edge[0]:.4f}, b = {edge[1]:.3f}, c = {edge[2]:.3f} (mean observed",
        f"  difference {info['edge']['mean_observed']:.4f}, learned"
        f" {info['edge']['mean_learned']:.4f}, analytic {info['edge']['mean_analytic']:.4f});",
        f"  the other cloud node: a = {cloud[0]:.4f}, b = {cloud[1]:.3f}, c = {cloud[2]:.3f}.",
        f"  Margin {selection.margin:g} (quality per request moved off its reference), chosen on",
        "  replays other than the evaluated one (`benchmarks/replay_selection.py`).",
        "  `LearnedPredictor(..., selection=False)` turns it off.",
    ]
    return "\n".join(lines)


def model_card(
    table: pd.DataFrame,
    args: argparse.Namespace,
    q: pd.DataFrame,
    lat: pd.DataFrame,
    selection: SelectionCalibration,
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
{selection_section(selection, args)}

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
JSON and `.npz` arrays only; each JSON records the SHA-256 of its `.npz` (the selection
calibration, JSON only, the SHA-256 of its coefficients). Every format is read by the one reader
of `model_files.py`: JSON above 1 MiB or nested more than 32 levels is refused; the `.npz`'s hash
is checked before the archive is opened; then, before anything is inflated, its zip directory:
flat `.npy` members of the expected fields only, each declaring no more bytes than the shape the
JSON gives it, 64 MiB in all at most, no absurd compression ratio; then each `.npy` header,
then `numpy.load(allow_pickle=False)`, and every field is checked. A 1 GiB zip bomb with a
matching hash is refused in a few milliseconds and about 1 MB of memory
(`benchmarks/model_file_safety.py`; read as the loader read it before, with `numpy.load` and a
copy, it peaked at 2.1 GB and took 1.3-3.6 s).

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
    parser.add_argument("--selection-requests", type=int, default=12000)
    parser.add_argument("--selection-seed", type=int, default=3)
    parser.add_argument("--selection-margin", type=float, default=SELECTION_MARGIN)
    parser.add_argument(
        "--selection-only",
        action="store_true",
        help="keep the saved quality and latency models; refit the selection calibration",
    )
    args = parser.parse_args()
    if args.selection_seed == args.seed:
        raise SystemExit("--selection-seed must differ from --seed (a fresh table)")
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
    stem = TRAINED / "default"
    if args.selection_only:
        quality = LearnedQualityModel.load(stem)
        latency = LearnedLatencyModel.load(latency_model_path(stem))
    else:
        quality = LearnedQualityModel(random_state=args.seed).fit(table)
        latency = LearnedLatencyModel(random_state=args.seed).fit(table)
        quality.save(stem)
        latency.save(latency_model_path(stem))
    fresh = bench_data(args.selection_requests, args.selection_seed).table
    selection = SelectionCalibration(margin=args.selection_margin).fit(fresh, quality)
    selection.save(selection_path(stem))
    q, lat = held_out(table, quality, latency)
    print(markdown_table(q))
    print(markdown_table(lat))
    card = model_card(table, args, q, lat, selection)
    (TRAINED / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    print(f"wrote {TRAINED}")


if __name__ == "__main__":
    main()
