"""Commands on windows: solve, validate, check, compare, sweep, pareto, solvers."""

from __future__ import annotations

import argparse
import json
import os

from qlmio_opt.domain.errors import InputError
from qlmio_opt.faces.cli import options as opt
from qlmio_opt.faces.cli.console import out, progress_bar, say, spinner_after

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (fast start)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from qlmio_opt.faces.cli.options import Commands as Subparsers


def register(commands: Subparsers) -> None:
    """Add this module's commands to the ``qlmio-opt`` parser."""
    _solve_parser(commands)
    _validate_parser(commands)
    _check_parser(commands)
    _compare_parser(commands)
    _sweep_parser(commands)
    _pareto_parser(commands)
    solvers = commands.add_parser("solvers", help="List the registered solvers.")
    solvers.set_defaults(run=list_solvers)


# -- solve --------------------------------------------------------------------------------------


def _solve_parser(commands: Subparsers) -> None:
    p = commands.add_parser(
        "solve",
        help="Solve windows and show the decision per node, the link use and the means.",
        description="Solve windows and show the decision per node, the link use and the "
        "predicted means. With several files, a file that cannot be read or solved is reported "
        "with its name (exit 2, or 1 for a bug) and the other windows keep their results.",
    )
    p.add_argument("files", nargs="+", type=opt.path, help="Instance JSON files.")
    p.add_argument("--solver", "-s", default="exact", help="Solver name (see `qlmio-opt solvers`).")
    opt.add_time_limit(p, None, "Seconds per window (exact: default 60).")
    opt.add_seed(p)
    p.add_argument(
        "--predictors",
        default="analytic",
        help="Predictors: analytic, learned (shipped), or a model saved by `train`.",
    )
    p.add_argument(
        "--out",
        help="Write the solution JSON here: a file, or a folder (several files, an existing "
        "folder or a name ending in /) that gets NAME.solution.json per input.",
    )
    opt.add_format(p)
    opt.add_catalog(p)
    opt.add_parallel(p)
    p.set_defaults(run=solve)


def solve(args: argparse.Namespace) -> int:
    from qlmio_opt.app.batch import solve_files
    from qlmio_opt.faces.out_paths import solution_targets
    from qlmio_opt.faces.report import solution_table, summary_table

    files: list[Path] = args.files
    opt.solver_names(args.solver, "--solver")
    predictor = opt.predictor(args.predictors)
    targets = solution_targets(files, args.out)  # checked before any work
    cat = opt.catalog(args.catalog)
    parallel = opt.parallel(args)
    writer = _SolutionWriter(targets)
    single = len(files) == 1
    quiet = args.format == "json" or single
    try:
        with (
            spinner_after(1.0, f"solving {files[0]} with {args.solver}", quiet=not single),
            progress_bar(quiet=quiet) as bar,
        ):
            task = bar.add_task("windows", total=len(files))
            results = solve_files(
                files,
                args.solver,
                predictors=predictor,
                time_limit=args.time_limit,
                seed=args.seed,
                catalog=cat,
                parallel=parallel,
                progress=lambda done, total: bar.update(task, completed=done),
                on_result=writer,
            )
    except KeyboardInterrupt:
        say(writer.interrupted_summary(len(files)))
        return opt.EXIT_INTERRUPTED
    failed = report_failures(results)
    solved = [r.unwrap() for r in results if r.ok]
    solutions = [s.solution for s in solved]
    if args.format == "json":
        payload = [
            r.unwrap().solution.to_dict() if r.ok else {"file": r.label, "error": r.error}
            for r in results
        ]
        if len(files) > 1 or solved:
            print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=1))
    elif single and solved and solved[0].instance is not None:
        solution_table(out(), solved[0].instance, solved[0].solution)
    elif solved:
        summary_table(out(), [s.path for s in solved], solutions)
    return failed if failed is not None else exit_code_for(solutions)


class _SolutionWriter:
    """``on_result`` of ``solve``: writes each window's solution to its ``--out`` file as soon as
    the window is solved (so a Ctrl-C keeps it), and counts what it solved and wrote."""

    def __init__(self, targets: dict[Path, Path] | None):
        self.targets = targets
        self.solved = 0
        self.written = 0

    def __call__(self, result: Any) -> None:
        if not result.ok:
            return
        self.solved += 1
        if self.targets is not None:
            write_whole(result.value.solution, self.targets[result.value.path])
            self.written += 1

    def interrupted_summary(self, total: int) -> str:
        """The line printed on Ctrl-C."""
        kept = f"{self.written} written" if self.targets is not None else "none written (no --out)"
        return f"interrupted: {self.solved} of {total} window(s) solved, {kept}"


def write_whole(solution: Any, target: Path) -> None:
    """Write ``solution`` to a temporary file renamed into place: a Ctrl-C in the middle of the
    write leaves no half-written solution file."""
    from qlmio_opt.domain.io import write_solution

    partial = target.with_name(target.name + ".partial")
    try:
        write_solution(solution, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def report_failures(results: list[Any], what: str = "window(s)") -> int | None:
    """Print each failed task's error on stderr; the exit code they call for, or None."""
    from qlmio_opt.app.parallel import worst_error_kind

    failed = [r for r in results if not r.ok]
    for r in failed:
        say(r.error)
        if r.traceback and os.environ.get("QLMIO_DEBUG") == "1":
            say(r.traceback)
    if failed and len(results) > 1:
        say(f"{len(failed)} of {len(results)} {what} failed; the others' results stand")
    kind = worst_error_kind(results)
    return {"input": opt.EXIT_INPUT, "internal": opt.EXIT_INTERNAL}.get(kind) if kind else None


def exit_code_for(solutions: list[Any]) -> int:
    """3 when a window has no feasible decision, 4 when a time limit left one without any
    (no decision at all: a window answered with every request deferred has one)."""
    from qlmio_opt.domain.solution import Status

    statuses = {s.status for s in solutions}
    if Status.INFEASIBLE in statuses or Status.ERROR in statuses:
        return opt.EXIT_INFEASIBLE
    if any(s.status is Status.TIME_LIMIT and not s.requests for s in solutions):
        return opt.EXIT_TIME_LIMIT
    return opt.EXIT_OK


# -- validate and check -------------------------------------------------------------------------


def _validate_parser(commands: Subparsers) -> None:
    p = commands.add_parser(
        "validate", help="Check files against the format; print every problem with its JSON path."
    )
    p.add_argument("files", nargs="+", type=opt.path, help="Instance or solution JSON files.")
    opt.add_catalog(p)
    p.set_defaults(run=validate)


def validate(args: argparse.Namespace) -> int:
    from qlmio_opt.domain.io import read_instance, read_json, read_solution

    cat = opt.catalog(args.catalog)
    failed = 0
    for path in args.files:
        try:
            data = read_json(path)
            if isinstance(data, dict) and data.get("format") == "qlmio-opt/solution":
                read_solution(path)
                out().print(f"[green]ok[/]  {path}  (solution)")
                continue
            inst = read_instance(path, catalog=cat)
        except InputError as exc:
            failed += 1
            say(exc.render())
            continue
        out().print(
            f"[green]ok[/]  {path}  ({len(inst.requests)} requests, {len(inst.nodes)} nodes, "
            f"{len(inst.network.links)} links)"
        )
    if failed:
        say(f"{failed} of {len(args.files)} file(s) invalid")
        return opt.EXIT_INPUT
    return opt.EXIT_OK


def _check_parser(commands: Subparsers) -> None:
    p = commands.add_parser(
        "check",
        help="Recompute a solution's objective, feasibility and every figure it claims.",
        description="Recompute a solution's objective, feasibility and every figure it claims, "
        "independently of the solvers (exit 3 when it is infeasible or any figure is false).",
    )
    p.add_argument("instance_file", type=opt.path, help="Instance JSON file.")
    p.add_argument("solution_file", type=opt.path, help="Solution JSON file.")
    p.add_argument(
        "--predictors",
        help="Predictors to judge with: analytic, learned, or a model saved by `train`; "
        "default: what the solution names (a model path must be given here).",
    )
    opt.add_catalog(p)
    p.set_defaults(run=check)


def check(args: argparse.Namespace) -> int:
    from qlmio_opt.app.check import check as run_check
    from qlmio_opt.domain.io import read_instance, read_solution

    instance = read_instance(args.instance_file, catalog=opt.catalog(args.catalog))
    solution = read_solution(args.solution_file)
    judge = opt.predictor(args.predictors) if args.predictors is not None else None
    try:
        report = run_check(instance, solution, predictors=judge)
    except InputError as exc:
        raise exc.with_source(str(args.solution_file)) from None
    out().print(report.summary(), markup=False, highlight=False)
    return opt.EXIT_OK if report.accepted else opt.EXIT_INFEASIBLE


# -- compare and sweep --------------------------------------------------------------------------


def _compare_parser(commands: Subparsers) -> None:
    p = commands.add_parser(
        "compare",
        help="Solve windows with several solvers: objective, gaps, means and time per solver.",
    )
    p.add_argument("files", nargs="+", type=opt.path, help="Instance JSON files.")
    p.add_argument("--solvers", help="Comma-separated solver names (default: all registered).")
    opt.add_time_limit(p, None)
    opt.add_seed(p)
    p.add_argument("--out", type=opt.path, help="Write the table as CSV.")
    opt.add_format(p)
    opt.add_catalog(p)
    opt.add_parallel(p)
    p.set_defaults(run=compare)


def compare(args: argparse.Namespace) -> int:
    from qlmio_opt.app.batch import compare_files
    from qlmio_opt.app.compare import summarise
    from qlmio_opt.faces.out_paths import writable_file
    from qlmio_opt.faces.report import frame_table

    names = opt.solver_names(args.solvers)
    if args.out is not None:
        writable_file(args.out)
    cat = opt.catalog(args.catalog)
    parallel = opt.parallel(args)
    with progress_bar(quiet=args.format == "json") as bar:
        task = bar.add_task("windows", total=len(args.files))
        frame, results = compare_files(
            args.files,
            names,
            time_limit=args.time_limit,
            seed=args.seed,
            catalog=cat,
            parallel=parallel,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    failed = report_failures(results)
    if frame.empty:
        return failed or opt.EXIT_INPUT
    windows = sum(r.ok for r in results)
    if args.out is not None:
        frame.to_csv(args.out, index=False)
    summary = summarise(frame)
    if args.format == "json":
        runs = json.loads(frame.to_json(orient="records"))
        print(
            json.dumps(
                {"runs": runs, "summary": json.loads(summary.to_json(orient="index"))}, indent=1
            )
        )
        return failed or opt.EXIT_OK
    if windows <= 10:
        frame_table(out(), frame.set_index(["instance", "solver"]), title="per window")
    frame_table(out(), summary, title=f"summary over {windows} window(s)")
    return failed or opt.EXIT_OK


def _sweep_parser(commands: Subparsers) -> None:
    p = commands.add_parser(
        "sweep",
        help="Solve every window under every combination of parameter values with every solver.",
    )
    p.add_argument("files", nargs="+", type=opt.path, help="Instance JSON files.")
    p.add_argument(
        "--param",
        action="append",
        metavar="NAME=V1,V2,...",
        help="Repeatable: latency_weight, quality_weight, latency_scale_s, quality_tolerance, "
        "quality_target, deferral_penalty_s, edge_memory_scale, bandwidth_scale.",
    )
    p.add_argument("--solvers", default="exact,greedy", help="Comma-separated solver names.")
    opt.add_time_limit(p, None)
    opt.add_seed(p)
    p.add_argument(
        "--out",
        type=opt.path,
        default="sweep",
        help="Folder for sweep.csv, frontier.csv and frontier.png.",
    )
    opt.add_catalog(p)
    opt.add_parallel(p)
    p.set_defaults(run=sweep)


def sweep(args: argparse.Namespace) -> int:
    from qlmio_opt.app.sweep import combinations, parse_params, run_sweep, summarise, write_sweep
    from qlmio_opt.faces.out_paths import writable_dir
    from qlmio_opt.faces.report import frame_table

    try:
        params = parse_params(args.param or [])
    except ValueError as exc:
        raise opt.usage(str(exc)) from None
    names = opt.solver_names(args.solvers)
    writable_dir(args.out)
    cat = opt.catalog(args.catalog)
    parallel = opt.parallel(args)
    with progress_bar() as bar:
        total = len(args.files) * len(combinations(params))
        task = bar.add_task("windows x settings", total=total)
        frame, results = run_sweep(
            args.files,
            params,
            names,
            time_limit=args.time_limit,
            seed=args.seed,
            catalog=cat,
            parallel=parallel,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    failed = report_failures(results, "window-setting pair(s)")
    summary = summarise(frame, list(params))
    paths = write_sweep(frame, summary, args.out)
    title = f"sweep over {len(args.files)} window(s), mean per setting"
    frame_table(out(), summary, title=title)
    out().print(f"wrote {', '.join(str(p) for p in paths)}")
    return failed or opt.EXIT_OK


# -- pareto and solvers -------------------------------------------------------------------------


def _pareto_parser(commands: Subparsers) -> None:
    p = commands.add_parser(
        "pareto",
        help="The quality-latency trade-off curve of a window, as CSV and PNG.",
        description="Each point minimises latency under the window's own constraints and "
        "deferral rule for one mean-quality target; the targets run evenly from the fastest "
        "decision's mean quality to the highest one found that serves as many requests. Exit 3 "
        "(or 4 at the time limit) when the window has no decision at all.",
    )
    p.add_argument("file", type=opt.path, help="Instance JSON file.")
    p.add_argument(
        "--points", type=opt.integer(2, 200), default=10, help="Quality targets on the curve."
    )
    opt.add_time_limit(
        p,
        10.0,
        "Seconds per solve: each point, and each of the (at most two) solves that find the "
        "curve's high end.",
    )
    p.add_argument("--out", type=opt.path, default=".", help="Folder for the CSV and PNG.")
    opt.add_catalog(p)
    p.set_defaults(run=pareto)


def pareto(args: argparse.Namespace) -> int:
    from qlmio_opt.app.pareto import pareto_curve, plot_pareto
    from qlmio_opt.domain.io import read_instance
    from qlmio_opt.faces.out_paths import writable_dir
    from qlmio_opt.faces.report import frame_table

    writable_dir(args.out)
    instance = read_instance(args.file, catalog=opt.catalog(args.catalog))
    with progress_bar() as bar:
        task = bar.add_task("pareto points", total=args.points)
        frame = pareto_curve(
            instance,
            args.points,
            time_limit=args.time_limit,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / f"{args.file.stem}.pareto.csv"
    png_path = args.out / f"{args.file.stem}.pareto.png"
    frame.to_csv(csv_path, index=False)
    title = f"{instance.name}: minimum mean latency per mean-quality target"
    plot_pareto(frame, png_path, title=title)
    frame_table(
        out(),
        frame.drop(columns=["message"]),
        title="trade-off curve (minimum latency per mean-quality target)",
    )
    out().print(f"wrote {csv_path} and {png_path}")
    return _pareto_exit_code(frame)


def _pareto_exit_code(frame: Any) -> int:
    """0 when some point has a decision; else 3 (infeasible) or 4 (time limit), reason on stderr."""
    if frame["deferred"].notna().any():  # set exactly when the point has a decision
        return opt.EXIT_OK
    for message in frame["message"].drop_duplicates():
        say(f"no decision: {message}")
    return opt.EXIT_TIME_LIMIT if (frame["status"] == "time_limit").all() else opt.EXIT_INFEASIBLE


def list_solvers(args: argparse.Namespace) -> int:
    from rich.table import Table

    from qlmio_opt.solvers import SOLVERS

    table = Table(title="solvers", title_justify="left")
    table.add_column("name")
    table.add_column("what it does")
    for name, cls in SOLVERS.items():
        table.add_row(name, cls.description)
    out().print(table)
    return opt.EXIT_OK
