"""Commands on the simulated world: simulate (trace replay) and bench-data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qlmio_opt.faces.cli import options as opt
from qlmio_opt.faces.cli.console import out, progress_bar

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (fast start)
if TYPE_CHECKING:
    from typing import Any

    from qlmio_opt.faces.cli.options import Commands as Subparsers


TRACES = ("azure-conv", "azure-code", "mooncake", "servegen")
ENGINES = ("chunked-prefill", "serial-prefill")
DEFAULT_POLICIES = "exact,greedy,cloud-only,all-cloud,per-request,oracle-expected"
BUILT_IN_PREDICTORS = ("analytic", "learned", "oracle")


def register(commands: Subparsers) -> None:
    """Add this module's commands to the ``qlmio-opt`` parser."""
    _simulate_parser(commands)
    _bench_data_parser(commands)


def _simulate_parser(commands: Subparsers) -> None:
    p = commands.add_parser(
        "simulate",
        help="Replay a trace window by window under several policies; measure them in the world.",
        description="Replay a trace window by window under several policies and measure them in "
        "the simulated world. With --jobs, the policies replay in parallel workers (same stream, "
        "same world, same results).",
    )
    p.add_argument("--trace", choices=TRACES, default="azure-conv", help="Arrival trace.")
    p.add_argument(
        "--duration",
        type=opt.number(1.0, 86_400.0),
        default=300.0,
        help="Seconds of the trace to replay.",
    )
    p.add_argument(
        "--start",
        type=opt.number(0.0, 86_400.0),
        default=0.0,
        help="Where in the trace the replayed segment starts (s): --start 1200 --duration 600 "
        "replays seconds 1200-1800, from 0.",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="Serving engine of every node (default: each node's own, chunked prefill with its "
        "device's token budget).",
    )
    p.add_argument("--window", type=opt.number(0.05, 600.0), default=2.0, help="Window length (s).")
    p.add_argument(
        "--policies",
        default=DEFAULT_POLICIES,
        help="Comma-separated solver names, plus oracle-expected (exact with the world's true "
        "completion probabilities and expected latencies), oracle-observable (the same with "
        "each request's hidden difficulty averaged out) and oracle (exact with the drawn "
        "outcomes and true latencies).",
    )
    p.add_argument(
        "--predictors",
        default="analytic",
        help="Predictors of the non-oracle policies: analytic, learned (shipped), oracle, or "
        "the path of a model saved by `train`.",
    )
    p.add_argument(
        "--edge-capacity",
        type=opt.number(0.01, 1.0),
        default=1.0,
        help="Share of each edge box's memory and slots.",
    )
    p.add_argument(
        "--max-deferrals",
        type=opt.integer(0, 1000),
        default=None,
        help="How often one request may be deferred (default 3).",
    )
    p.add_argument(
        "--quality-tolerance",
        type=opt.number(0.0, 1.0),
        default=None,
        help="Quality the placed requests may lose on average against their reference (the "
        "floor's tolerance; default 0.003: the scenario's 0.005 less a 0.002 margin for the "
        "predictors' error).",
    )
    p.add_argument(
        "--no-look-ahead",
        action="store_true",
        help="Do not tell each window the nodes' recent prefill load.",
    )
    opt.add_time_limit(p, 10.0, "Seconds per window and solver.")
    opt.add_seed(p, "Deployment, stream and world seed.")
    p.add_argument("--out", type=opt.path, help="Folder for the CSVs and PNG plots.")
    opt.add_format(p)
    opt.add_parallel(p)
    p.set_defaults(run=simulate)


def replay_config(args: argparse.Namespace) -> Any:
    """The replay's settings from the command line (usage errors exit 2)."""
    from qlmio_opt.simulator import ReplayConfig

    names = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    chosen = args.predictors
    if chosen not in BUILT_IN_PREDICTORS:
        chosen = opt.predictor(chosen)
    extra = {} if args.max_deferrals is None else {"max_deferrals": args.max_deferrals}
    try:
        return ReplayConfig(
            window_s=args.window,
            policies=names,
            predictors=chosen,
            time_limit=args.time_limit,
            seed=args.seed,
            look_ahead=not args.no_look_ahead,
            **extra,
        )
    except ValueError as exc:
        raise opt.usage(str(exc)) from None


def replay_workload(args: argparse.Namespace) -> Any:
    """The trace segment and deployment to replay."""
    from qlmio_opt.simulator import workload

    load = workload(
        args.trace,
        args.duration,
        seed=args.seed,
        edge_capacity=args.edge_capacity,
        engine=args.engine,
        start_s=args.start,
        quality_tolerance=args.quality_tolerance,
    )
    if not load.requests:
        end = args.start + args.duration
        raise opt.usage(f"no request of {args.trace} arrives in [{args.start:g}, {end:g}) s")
    return load


def simulate(args: argparse.Namespace) -> int:
    from qlmio_opt.faces.out_paths import writable_dir
    from qlmio_opt.simulator import World, WorldConfig, replay
    from qlmio_opt.simulator.output import summary_json, write_results

    if args.out is not None:
        writable_dir(args.out)
    config = replay_config(args)
    load = replay_workload(args)
    parallel = opt.parallel(args)
    with progress_bar(quiet=args.format == "json") as bar:
        tasks = {p: bar.add_task(p, total=None) for p in config.policies}

        def progress(policy: str, done: int, total: int) -> None:
            bar.update(tasks[policy], completed=done, total=total)

        world = World(config=WorldConfig(seed=args.seed))
        result = replay(load, world, config, progress=progress, parallel=parallel)
    paths = write_results(result, args.out) if args.out is not None else []
    if args.format == "json":
        print(json.dumps(summary_json(result), indent=2))
    else:
        _replay_tables(args, result, len(load.requests))
        if args.out is not None:
            out().print(f"wrote {len(paths)} files to {args.out}")
    return opt.EXIT_OK


def _replay_tables(args: argparse.Namespace, result: Any, requests: int) -> None:
    from qlmio_opt.faces.report import frame_table
    from qlmio_opt.simulator.metrics import reduction_table

    summary = result.summary()
    engine = args.engine or "each node's own"
    title = (
        f"{args.trace} from {args.start:g} s: {requests} requests in {args.duration:g} s, windows "
        f"of {args.window:g} s, {args.predictors} predictors, engine {engine}"
    )
    frame_table(out(), summary, title=title)
    for baseline in ("cloud-only", "all-cloud"):
        if baseline in summary.index:
            table = reduction_table(summary, baseline=baseline)
            frame_table(out(), table, title=f"against {baseline}")


def _bench_data_parser(commands: Subparsers) -> None:
    p = commands.add_parser(
        "bench-data",
        help="Run every request on every node of the scenario and write the benchmark dataset.",
        description="Run every request on every node of the scenario and write the benchmark "
        "dataset. With --jobs, blocks of requests are simulated in parallel workers; the draws "
        "stay in serial order, so the files are byte-identical to a serial run.",
    )
    p.add_argument(
        "--requests", type=opt.integer(1, 1_000_000), default=1000, help="Requests to measure."
    )
    opt.add_seed(p, "Seed of the requests and loads.")
    p.add_argument(
        "--out",
        type=opt.path,
        default="bench-data",
        help="Folder for bench.csv.gz, meta.json, DATA_CARD.md.",
    )
    p.add_argument(
        "--state",
        action="store_true",
        help="Also write bench-state.csv.gz and meta-state.json: every request on every node in "
        "a sampled live state under both engines (chunked and serial prefill), latency "
        "decomposed (qlmio_opt.simulator.state_dataset). The stand-alone table is unchanged.",
    )
    opt.add_parallel(p)
    p.set_defaults(run=bench_data)


def bench_data(args: argparse.Namespace) -> int:
    import pandas as pd

    from qlmio_opt.faces.out_paths import writable_dir
    from qlmio_opt.faces.report import frame_table
    from qlmio_opt.simulator.dataset import bench_data as make_bench_data
    from qlmio_opt.simulator.dataset import write_bench_data

    writable_dir(args.out)
    parallel = opt.parallel(args)
    with progress_bar() as bar:
        task = bar.add_task("requests", total=args.requests)
        data = make_bench_data(
            args.requests,
            args.seed,
            progress=lambda done, total: bar.update(task, completed=done),
            parallel=parallel,
        )
    paths = write_bench_data(data, args.out)
    if args.state:
        paths += _state_bench_data(args)
    counts = pd.DataFrame(data.split_counts()).T.rename_axis("split")
    title = f"{len(data.table)} rows ({args.requests} requests x nodes)"
    frame_table(out(), counts, title=title)
    out().print(f"wrote {', '.join(str(p) for p in paths)}")
    return opt.EXIT_OK


def _state_bench_data(args: argparse.Namespace) -> list[Path]:
    """The state table of ``bench-data --state``, with its summary by engine and load level."""
    from qlmio_opt.faces.report import frame_table
    from qlmio_opt.simulator.state_dataset import (
        state_bench_data,
        state_summary,
        write_state_bench_data,
    )

    with progress_bar() as bar:
        task = bar.add_task("requests under load", total=args.requests)
        data = state_bench_data(
            args.requests,
            args.seed,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    frame_table(out(), state_summary(data.table), title="under load: median seconds")
    return write_state_bench_data(data, args.out)
