"""Commands on the learned predictors: train and evaluate-predictors."""

from __future__ import annotations

import argparse
import json

from qlmio_opt.faces.cli import options as opt
from qlmio_opt.faces.cli.console import out, progress_bar, step_progress

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (fast start)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from qlmio_opt.faces.cli.options import Commands as Subparsers


FAMILIES = ("sklearn", "torch")
TRAIN_STEPS = ("read", "quality model", "latency model", "save", "held-out scoring")


def register(commands: Subparsers) -> None:
    """Add this module's commands to the ``qlmio-opt`` parser."""
    _train_parser(commands)
    _evaluate_parser(commands)


# -- train --------------------------------------------------------------------------------------


def _train_parser(commands: Subparsers) -> None:
    p = commands.add_parser(
        "train",
        help="Train the learned quality and latency models on a bench-data table and save them.",
        description="Train the learned quality and latency models on a bench-data table and "
        "save them (safe JSON + npz; use the stem as --predictors STEM.json).",
    )
    p.add_argument(
        "--data", type=opt.path, required=True, help="A bench-data folder (or its bench.csv.gz)."
    )
    p.add_argument(
        "--out",
        type=opt.path,
        required=True,
        help="Model path stem: writes STEM.json/.npz (quality) and STEM-latency.json/.npz.",
    )
    p.add_argument(
        "--random-state", type=opt.integer(0, opt.MAX_SEED), default=0, help="Seed of training."
    )
    p.add_argument(
        "--family",
        choices=FAMILIES,
        default="sklearn",
        help="Quality model family: sklearn (gradient boosting) or torch (needs the extra).",
    )
    p.set_defaults(run=train)


def train(args: argparse.Namespace) -> int:
    from qlmio_opt.faces.out_paths import writable_file
    from qlmio_opt.faces.report import frame_table
    from qlmio_opt.predictors.learned import latency_model_path
    from qlmio_opt.simulator.dataset import read_bench_table

    source = args.data / "bench.csv.gz" if args.data.is_dir() else args.data
    if not source.exists():
        raise opt.usage(f"--data {args.data}: no bench.csv.gz there (run bench-data)")
    writable_file(args.out.with_name(args.out.name + ".json"))
    with progress_bar() as bar:
        task = bar.add_task(f"train: {TRAIN_STEPS[0]}", total=len(TRAIN_STEPS))

        def step(done: int) -> None:
            label = TRAIN_STEPS[min(done, len(TRAIN_STEPS) - 1)]
            bar.update(task, completed=done, description=f"train: {label}")

        table = read_bench_table(source)
        step(1)
        model, latency = _fit_predictors(table, args, step)
        paths = (*model.save(args.out), *latency.save(latency_model_path(args.out)))
        step(4)
        tables = _held_out_tables(table, model, latency)
        step(5)
    for frame, title in tables:
        frame_table(out(), frame, title=title)
    out().print("wrote " + ", ".join(str(p) for p in paths))
    return opt.EXIT_OK


def _fit_predictors(table: Any, args: argparse.Namespace, step: Any) -> tuple[Any, Any]:
    """The fitted quality model of ``--family`` and the latency model; ``step(2)``, ``step(3)``
    after each. A missing extra or unusable data is an input error naming the option."""
    from qlmio_opt.predictors.learned_latency import LearnedLatencyModel
    from qlmio_opt.predictors.learned_quality import LearnedQualityModel

    model: Any
    try:
        if args.family == "torch":
            from qlmio_opt.predictors.learned_torch import TorchQualityModel

            model = TorchQualityModel(random_state=args.random_state).fit(table)
        else:
            model = LearnedQualityModel(random_state=args.random_state).fit(table)
        step(2)
        latency = LearnedLatencyModel(random_state=args.random_state).fit(table)
        step(3)
    except ImportError as exc:
        raise opt.usage(f"--family {args.family}: {exc}") from None
    except ValueError as exc:
        raise opt.usage(f"--data {args.data}: {exc}") from None
    return model, latency


def _held_out_tables(table: Any, model: Any, latency: Any) -> list[tuple[Any, str]]:
    """(frame, title) pairs scoring analytic and learned predictors on the test split."""
    import pandas as pd

    from qlmio_opt.predictors.learned_latency import analytic_parts, latency_metrics
    from qlmio_opt.predictors.learned_quality import quality_metrics

    tables = []
    test = table[table["split"] == "test"]
    if len(test):
        actual = test["latency_s"].to_numpy(float)
        learned = latency.predict_table(test)
        rows = {
            "analytic": latency_metrics(actual, analytic_parts(test)["latency_s"]),
            "learned": latency_metrics(actual, learned["latency_s"], learned["latency_p90_s"]),
        }
        title = f"latency, held-out test split ({len(test)} request-node rows)"
        tables.append((pd.DataFrame(rows).T.rename_axis("predictor"), title))
    test = test.drop_duplicates(["request", "model"])
    if len(test) and test["completed"].nunique() == 2:
        features = model.features_table(test)
        analytic = features[:, model.feature_spec_.names().index("analytic_quality")]
        y = test["completed"].to_numpy()
        rows = {
            "analytic": quality_metrics(y, analytic),
            "learned": quality_metrics(y, model.predict_proba_table(test)),
        }
        title = f"quality, held-out test split ({len(test)} request-model rows)"
        tables.append((pd.DataFrame(rows).T.rename_axis("predictor"), title))
    return tables


# -- evaluate-predictors ------------------------------------------------------------------------


def _evaluate_parser(commands: Subparsers) -> None:
    from_defaults = "(default 2000)"
    p = commands.add_parser(
        "evaluate-predictors",
        help="Learned against analytic predictors on held-out data, with 95%% intervals.",
        description="Learned against analytic predictors on held-out data, with sample sizes "
        "and 95%% intervals: quality (AUC, Brier, ...), latency (MAPE, ...), and the M4A1 real "
        "log. By default the shipped learned models are scored on every row of a fresh "
        "bench_data table they never saw; --train trains new ones on the table's train split.",
    )
    p.add_argument(
        "--data",
        type=opt.path,
        help="Score on a bench-data folder (or its bench.csv.gz), not a fresh table.",
    )
    p.add_argument(
        "--requests",
        type=opt.integer(1, 1_000_000),
        help=f"Requests of the fresh table {from_defaults}.",
    )
    p.add_argument(
        "--seed",
        type=opt.integer(0, opt.MAX_SEED),
        help="bench_data seed of the fresh table (default 20: the shipped models were trained "
        "on seed 0, their selection calibration on seed 3).",
    )
    p.add_argument(
        "--predictors",
        help="learned (the shipped models, default) or a model saved by `qlmio-opt train`.",
    )
    p.add_argument(
        "--train",
        action="store_true",
        help="Train new models on the table's train split; score its test split.",
    )
    p.add_argument(
        "--resamples",
        type=opt.integer(100, 100_000),
        default=2000,
        help="Bootstrap resamples of the requests (default 2000).",
    )
    p.add_argument(
        "--random-state",
        type=opt.integer(0, opt.MAX_SEED),
        default=0,
        help="Seed of the training (--train), the bootstrap, M4A1's folds.",
    )
    p.add_argument(
        "--m4a1",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also evaluate the M4A1 real-log models.",
    )
    p.add_argument(
        "--under-load",
        action="store_true",
        help="Also score latency under load (qlmio_opt.app.load_latency_evaluation): a latency "
        "model under load trained on a state table's train split against the engine-aware "
        "analytic latency, by load level and on held-out devices and models.",
    )
    p.add_argument(
        "--state-data",
        type=opt.path,
        help="With --under-load: a bench-data --state folder (or its bench-state.csv.gz); "
        "default a fresh table of 600 requests of the --seed (20).",
    )
    opt.add_format(p)
    p.set_defaults(run=evaluate_predictors)


def evaluate_predictors(args: argparse.Namespace) -> int:
    from qlmio_opt.app.predictor_evaluation import evaluate_predictors as evaluate
    from qlmio_opt.app.predictor_evaluation import report_frames
    from qlmio_opt.faces.report import frame_table

    if args.state_data is not None and not args.under_load:
        raise opt.usage("--state-data is read by --under-load; add it")
    quality_model, latency_model = _evaluation_models(args.predictors, args.train)
    with progress_bar() as bar:
        progress = step_progress(bar)
        table, source = _evaluation_table(args.data, args.requests, args.seed, progress)
        try:
            result = evaluate(
                table,
                quality_model,
                latency_model,
                random_state=args.random_state,
                resamples=args.resamples,
                m4a1=args.m4a1,
                progress=progress,
            )
        except ValueError as exc:
            where = f"--data {args.data}" if args.data is not None else "the fresh table"
            raise opt.usage(f"{where}: {exc}") from None
    result["predictors"] = _scored_models(args)
    result["data"] = source
    if args.under_load:
        _add_under_load(result, args)
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return opt.EXIT_OK
    for line in _evaluation_header(result):
        out().print(line, markup=False, highlight=False)
    for title, frame in report_frames(result):
        frame_table(out(), frame, title=title)
    if args.under_load:
        from qlmio_opt.app.load_latency_evaluation import under_load_frames

        for title, frame in under_load_frames(result):
            frame_table(out(), frame, title=title)
    return opt.EXIT_OK


UNDER_LOAD_REQUESTS = 600
"""Requests of the fresh state table of ``--under-load``: 16,800 rows (both engines on the 14
nodes), about 2,500 test rows; generating, training and scoring take about two minutes."""


def _add_under_load(result: dict[str, Any], args: argparse.Namespace) -> None:
    """``latency.by_load`` and ``latency.held_out_{devices,models}`` of ``--under-load``."""
    from qlmio_opt.app.load_latency_evaluation import evaluate_under_load
    from qlmio_opt.app.predictor_evaluation import FRESH_SEED
    from qlmio_opt.simulator.state_dataset import (
        STATE_TABLE_FILE,
        read_state_table,
        state_bench_data,
    )

    with progress_bar() as bar:
        progress = step_progress(bar)
        if args.state_data is not None:
            path = args.state_data
            source = path / STATE_TABLE_FILE if path.is_dir() else path
            if not source.exists():
                raise opt.usage(f"--state-data {path}: no {STATE_TABLE_FILE} there")
            table = read_state_table(source)
            if "state_json" not in table:
                raise opt.usage(f"--state-data {source}: not a state table; no column state_json")
            data = {"source": str(source), "rows": len(table)}
        else:
            seed = FRESH_SEED if args.seed is None else args.seed
            table = state_bench_data(
                UNDER_LOAD_REQUESTS,
                seed,
                progress=lambda done, total: progress("state data", done, total),
            ).table
            data = {"source": "state_bench_data", "seed": seed, "requests": UNDER_LOAD_REQUESTS}
        try:
            under = evaluate_under_load(
                table,
                random_state=args.random_state,
                resamples=args.resamples,
                progress=progress,
            )
        except ValueError as exc:
            raise opt.usage(f"--under-load: {exc}") from None
    latency = result["latency"]
    latency["by_load"] = under.pop("by_load")
    for key in ("held_out_devices", "held_out_models"):
        latency[key] = under.pop(key)
    result["latency_under_load"] = {**under, "data": data}


def _scored_models(args: argparse.Namespace) -> str:
    if args.train:
        return f"new models trained on the table (random state {args.random_state})"
    if args.predictors is None or args.predictors == "learned":
        return "the shipped learned models (predictors/trained/default.json)"
    return f"the saved models {args.predictors}"


def _evaluation_models(predictors: str | None, train: bool) -> tuple[Any, Any]:
    """The quality and latency models to score (None, None: train them on the table)."""
    if train:
        if predictors is not None:
            raise opt.usage("--train trains new models; drop --predictors")
        return None, None
    name = predictors or "learned"
    predictor = opt.predictor(name)
    if not hasattr(predictor, "quality_model_"):
        raise opt.usage(f"--predictors {name}: give learned or a model saved by qlmio-opt train")
    return predictor.quality_model_, predictor.latency_model_


def _evaluation_table(
    data: Path | None, requests: int | None, seed: int | None, progress: Any
) -> tuple[Any, dict[str, Any]]:
    """The bench table to score and a description of where it came from."""
    from qlmio_opt.simulator.dataset import COLUMNS, bench_data, read_bench_table

    if data is not None:
        if requests is not None or seed is not None:
            raise opt.usage("--requests and --seed make a fresh table; drop them with --data")
        source = data / "bench.csv.gz" if data.is_dir() else data
        if not source.exists():
            raise opt.usage(f"--data {data}: no bench.csv.gz there")
        table = read_bench_table(source)
        missing = [c.name for c in COLUMNS if c.role != "hidden" and c.name not in table]
        if missing:
            raise opt.usage(f"--data {source}: not a bench table; no column {', '.join(missing)}")
        return table, {"source": str(source), "rows": len(table)}
    from qlmio_opt.app.predictor_evaluation import FRESH_REQUESTS, FRESH_SEED

    requests = FRESH_REQUESTS if requests is None else requests
    seed = FRESH_SEED if seed is None else seed
    table = bench_data(
        requests, seed, progress=lambda done, total: progress("bench data", done, total)
    ).table
    return table, {"source": "bench_data", "seed": seed, "requests": requests, "rows": len(table)}


def _evaluation_header(result: dict[str, Any]) -> list[str]:
    """What was scored, on what, and how the intervals were made (for the table output)."""
    data, scored, boot = result["data"], result["scored"], result["bootstrap"]
    if data["source"] == "bench_data":
        table = (
            f"a fresh bench_data table: seed {data['seed']}, {data['requests']:,} requests, "
            f"{data['rows']:,} request-node rows"
        )
    else:
        table = f"{data['source']} ({data['rows']:,} request-node rows)"
    seen = scored["training_prefixes"]
    if scored["rows_left_out"] == 0:
        held = "every row held out"
    else:
        held = f"{scored['rows_left_out']:,} rows left out: only its test split is held out"
    held += (
        " (the models record no training requests)"
        if seen is None
        else f" (the models were trained on request ids {', '.join(p + '-*' for p in seen)})"
    )
    who = result["predictors"]
    return [
        f"{who[0].upper()}{who[1:]} against analytic on {table}; {held}.",
        f"95% intervals: percentile bootstrap over requests ({boot['resamples']:,} resamples, "
        f"seed {boot['seed']}); learned - analytic is paired (same resamples).",
    ]
