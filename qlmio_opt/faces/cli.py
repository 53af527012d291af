"""The ``qlmio-opt`` command line.

Exit codes: 0 done; 1 internal error; 2 invalid input or usage; 3 no feasible decision
(infeasible window, or a rule-based policy that breaks a constraint); 4 time limit with no solution;
130 interrupted (Ctrl-C).
Errors print one line per problem and never a traceback (set ``QLMIO_DEBUG=1`` to see one).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from qlmio_opt.domain.errors import InputError, QlmioError

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_INFEASIBLE, EXIT_TIME_LIMIT = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # the shell's code for a command ended by SIGINT (128 + 2)
MAX_SEED = 2**32 - 1
"""Seeds feed numpy's ``SeedSequence`` and HiGHS's ``random_seed``; both take 0 .. 2**32 - 1
here (HiGHS's option is a C int, numpy's entropy is unbounded but non-negative)."""

app = typer.Typer(
    name="qlmio-opt",
    help="Assign windows of multimodal LLM requests to edge servers or the cloud.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        from qlmio_opt.domain.version import VERSION

        print(f"qlmio-opt {VERSION}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Assign windows of multimodal LLM requests to edge servers or the cloud."""


def _width() -> int | None:
    """Let rich size tables to the terminal; when piped or captured, use a wide page."""
    return None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "200"))


out = Console(soft_wrap=True, width=_width())
err = Console(stderr=True, soft_wrap=True)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


CatalogOption = Annotated[
    list[Path] | None,
    typer.Option("--catalog", help="TOML file adding or overriding catalog entries (repeatable)."),
]


def _catalog(paths: list[Path] | None):
    from qlmio_opt.domain.catalog import default_catalog, load_catalog

    return load_catalog(*paths) if paths else default_catalog()


class BackendName(StrEnum):
    loky = "loky"
    dask = "dask"


JobsOption = Annotated[
    int,
    typer.Option(
        "--jobs", "-j", min=1, max=1024, help="Parallel workers (1: one after the other, here)."
    ),
]
BackendOption = Annotated[
    BackendName,
    typer.Option(
        help="loky: worker processes on this machine; dask: a Dask cluster (the dask extra)."
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        help="Address of a running Dask scheduler (with --backend dask); without it, "
        "--backend dask starts a LocalCluster of --jobs workers."
    ),
]


def _parallel(jobs: int, backend: BackendName, scheduler: str | None):
    """The parallel set-up the options ask for; usage errors exit 2 before any work."""
    from qlmio_opt.app.parallel import DASK_HINT, ParallelConfig

    try:
        config = ParallelConfig(jobs=jobs, backend=backend.value, scheduler=scheduler)
    except ValueError as exc:
        raise InputError([_usage_issue(str(exc))]) from None
    if config.backend == "dask":
        try:
            import dask.distributed  # noqa: F401
        except ImportError:
            raise InputError(
                [_usage_issue(f"--backend dask needs the dask extra: {DASK_HINT}")]
            ) from None
    return config


def _report_failures(results, what: str = "window(s)") -> int | None:
    """Print each failed task's error on stderr; the exit code they call for, or None."""
    from qlmio_opt.app.parallel import worst_error_kind

    failed = [r for r in results if not r.ok]
    for r in failed:
        err.print(r.error, markup=False, highlight=False)
        if r.traceback and os.environ.get("QLMIO_DEBUG") == "1":
            err.print(r.traceback, markup=False, highlight=False)
    if failed and len(results) > 1:
        err.print(f"{len(failed)} of {len(results)} {what} failed; the others' results stand")
    kind = worst_error_kind(results)
    return {"input": EXIT_INPUT, "internal": EXIT_INTERNAL}.get(kind) if kind else None


@app.command()
def solve(
    files: Annotated[list[Path], typer.Argument(help="Instance JSON files.")],
    solver: Annotated[
        str, typer.Option("--solver", "-s", help="Solver name (see `qlmio-opt solvers`).")
    ] = "exact",
    time_limit: Annotated[
        float | None,
        typer.Option("--time-limit", min=0.0, help="Seconds per window (exact: default 60)."),
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seed for randomised solvers.")
    ] = 0,
    predictors: Annotated[
        str,
        typer.Option(help="Predictors: analytic, learned (shipped), or a model saved by `train`."),
    ] = "analytic",
    out_path: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="Write the solution JSON here: a file, or a folder (several files, an existing "
            "folder or a name ending in /) that gets NAME.solution.json per input.",
        ),
    ] = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="table or json.")
    ] = OutputFormat.table,
    catalog: CatalogOption = None,
    jobs: JobsOption = 1,
    backend: BackendOption = BackendName.loky,
    scheduler: SchedulerOption = None,
) -> None:
    """Solve windows and show the decision per node, the link use and the predicted means.

    With several files, a file that cannot be read or solved is reported with its name (exit 2,
    or 1 for a bug) and the other windows keep their results.
    """
    from qlmio_opt.app.batch import solve_files
    from qlmio_opt.faces.out_paths import solution_targets
    from qlmio_opt.faces.report import solution_table, summary_table

    _solver_option(solver)
    predictor = _predictor_option(predictors)
    targets = solution_targets(files, out_path)  # checked before any work
    cat = _catalog(catalog)
    parallel = _parallel(jobs, backend, scheduler)
    writer = _SolutionWriter(targets)
    single = len(files) == 1
    try:
        with (
            _spinner_after(SPINNER_DELAY_S, f"solving {files[0]} with {solver}", quiet=not single),
            _progress_bar(quiet=fmt is OutputFormat.json or single) as bar,
        ):
            task = bar.add_task("windows", total=len(files))
            results = solve_files(
                files,
                solver,
                predictors=predictor,
                time_limit=time_limit,
                seed=seed,
                catalog=cat,
                parallel=parallel,
                progress=lambda done, total: bar.update(task, completed=done),
                on_result=writer,
            )
    except KeyboardInterrupt:
        err.print(writer.interrupted_summary(len(files)), markup=False, highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    failed = _report_failures(results)
    solved = [r.value for r in results if r.ok]
    solutions = [s.solution for s in solved]
    if fmt is OutputFormat.json:
        payload = [
            r.value.solution.to_dict() if r.ok else {"file": r.label, "error": r.error}
            for r in results
        ]
        if len(files) > 1 or solved:
            print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=1))
    elif len(files) == 1 and solved:
        solution_table(out, solved[0].instance, solved[0].solution)
    elif solved:
        summary_table(out, [s.path for s in solved], solutions)
    raise typer.Exit(failed if failed is not None else _exit_code_for(solutions))


class _SolutionWriter:
    """``on_result`` of ``solve``: writes each window's solution to its ``--out`` file as soon as
    the window is solved (so a Ctrl-C keeps it), and counts what it solved and wrote."""

    def __init__(self, targets: dict[Path, Path] | None):
        self.targets = targets
        self.solved = 0
        self.written = 0

    def __call__(self, result) -> None:
        if not result.ok:
            return
        self.solved += 1
        if self.targets is not None:
            _write_whole(result.value.solution, self.targets[result.value.path])
            self.written += 1

    def interrupted_summary(self, total: int) -> str:
        """The line printed on Ctrl-C."""
        kept = f"{self.written} written" if self.targets is not None else "none written (no --out)"
        return f"interrupted: {self.solved} of {total} window(s) solved, {kept}"


def _write_whole(solution, target: Path) -> None:
    """Write ``solution`` to a temporary file renamed into place: a Ctrl-C in the middle of the
    write leaves no half-written solution file."""
    from qlmio_opt.domain.io import write_solution

    partial = target.with_name(target.name + ".partial")
    try:
        write_solution(solution, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _exit_code_for(solutions) -> int:
    from qlmio_opt.domain.solution import Status

    statuses = {s.status for s in solutions}
    if Status.INFEASIBLE in statuses or Status.ERROR in statuses:
        return EXIT_INFEASIBLE
    if any(s.status is Status.TIME_LIMIT and not s.assignment for s in solutions):
        return EXIT_TIME_LIMIT
    return EXIT_OK


def _usage_issue(message: str):
    from qlmio_opt.domain.errors import Issue

    return Issue("command line", message)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Instance or solution JSON files.")],
    catalog: CatalogOption = None,
) -> None:
    """Check files against the format; print every problem with its JSON path."""
    from qlmio_opt.domain.io import read_instance, read_json, read_solution

    cat = _catalog(catalog)
    failed = 0
    for path in files:
        try:
            data = read_json(path)
            if isinstance(data, dict) and data.get("format") == "qlmio-opt/solution":
                read_solution(path)
                out.print(f"[green]ok[/]  {path}  (solution)")
                continue
            inst = read_instance(path, catalog=cat)
        except InputError as exc:
            failed += 1
            err.print(exc.render(), markup=False, highlight=False)
            continue
        out.print(
            f"[green]ok[/]  {path}  ({len(inst.requests)} requests, {len(inst.nodes)} nodes, "
            f"{len(inst.network.links)} links)"
        )
    if failed:
        err.print(f"{failed} of {len(files)} file(s) invalid")
        raise typer.Exit(EXIT_INPUT)


@app.command()
def compare(
    files: Annotated[list[Path], typer.Argument(help="Instance JSON files.")],
    solvers: Annotated[
        str | None, typer.Option(help="Comma-separated solver names (default: all registered).")
    ] = None,
    time_limit: Annotated[
        float | None, typer.Option("--time-limit", min=0.0, help="Seconds per solve.")
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seed for randomised solvers.")
    ] = 0,
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the table as CSV.")] = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="table or json.")
    ] = OutputFormat.table,
    catalog: CatalogOption = None,
    jobs: JobsOption = 1,
    backend: BackendOption = BackendName.loky,
    scheduler: SchedulerOption = None,
) -> None:
    """Solve windows with several solvers: objective, gap to exact, means and time per solver."""
    from qlmio_opt.app.batch import compare_files
    from qlmio_opt.app.compare import summarise
    from qlmio_opt.faces.out_paths import writable_file
    from qlmio_opt.faces.report import frame_table
    from qlmio_opt.solvers import SOLVERS

    names = [s.strip() for s in solvers.split(",")] if solvers else list(SOLVERS)
    unknown = [n for n in names if n not in SOLVERS]
    if unknown:
        raise InputError(
            [_usage_issue(f'unknown solver "{unknown[0]}"; choose from {", ".join(SOLVERS)}')]
        )
    if out_path is not None:
        writable_file(out_path)
    cat = _catalog(catalog)
    parallel = _parallel(jobs, backend, scheduler)
    with _progress_bar(quiet=fmt is OutputFormat.json) as bar:
        task = bar.add_task("windows", total=len(files))
        frame, results = compare_files(
            files,
            names,
            time_limit=time_limit,
            seed=seed,
            catalog=cat,
            parallel=parallel,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    failed = _report_failures(results)
    if frame.empty:
        raise typer.Exit(failed or EXIT_INPUT)
    windows = sum(r.ok for r in results)
    if out_path is not None:
        frame.to_csv(out_path, index=False)
    summary = summarise(frame)
    if fmt is OutputFormat.json:
        print(
            json.dumps(
                {
                    "runs": json.loads(frame.to_json(orient="records")),
                    "summary": json.loads(summary.to_json(orient="index")),
                },
                indent=1,
            )
        )
        raise typer.Exit(failed or EXIT_OK)
    if windows <= 10:
        frame_table(out, frame.set_index(["instance", "solver"]), title="per window")
    frame_table(out, summary, title=f"summary over {windows} window(s)")
    raise typer.Exit(failed or EXIT_OK)


@app.command()
def sweep(
    files: Annotated[list[Path], typer.Argument(help="Instance JSON files.")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="NAME=V1,V2,... (repeatable): latency_weight, quality_weight, latency_scale_s, "
            "quality_tolerance, quality_target, deferral_penalty_s, edge_memory_scale, "
            "bandwidth_scale.",
        ),
    ] = None,
    solvers: Annotated[str, typer.Option(help="Comma-separated solver names.")] = "exact,greedy",
    time_limit: Annotated[
        float | None, typer.Option("--time-limit", min=0.0, help="Seconds per solve.")
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seed for randomised solvers.")
    ] = 0,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for sweep.csv, frontier.csv and frontier.png.")
    ] = Path("sweep"),
    catalog: CatalogOption = None,
    jobs: JobsOption = 1,
    backend: BackendOption = BackendName.loky,
    scheduler: SchedulerOption = None,
) -> None:
    """Solve every window under every combination of parameter values with every solver."""
    from qlmio_opt.app.sweep import combinations, parse_params, run_sweep, summarise, write_sweep
    from qlmio_opt.faces.out_paths import writable_dir
    from qlmio_opt.faces.report import frame_table
    from qlmio_opt.solvers import SOLVERS

    try:
        params = parse_params(param or [])
    except ValueError as exc:
        raise InputError([_usage_issue(str(exc))]) from None
    names = [s.strip() for s in solvers.split(",") if s.strip()]
    unknown = [n for n in names if n not in SOLVERS]
    if unknown or not names:
        raise InputError(
            [
                _usage_issue(
                    f'unknown solver "{unknown[0] if unknown else solvers}"; choose from '
                    f"{', '.join(SOLVERS)}"
                )
            ]
        )
    writable_dir(out_dir)
    cat = _catalog(catalog)
    parallel = _parallel(jobs, backend, scheduler)
    with _progress_bar() as bar:
        task = bar.add_task("windows x settings", total=len(files) * len(combinations(params)))
        frame, results = run_sweep(
            files,
            params,
            names,
            time_limit=time_limit,
            seed=seed,
            catalog=cat,
            parallel=parallel,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    failed = _report_failures(results, "window-setting pair(s)")
    summary = summarise(frame, list(params))
    paths = write_sweep(frame, summary, out_dir)
    frame_table(out, summary, title=f"sweep over {len(files)} window(s), mean per setting")
    out.print(f"wrote {', '.join(str(p) for p in paths)}")
    raise typer.Exit(failed or EXIT_OK)


@app.command()
def check(
    instance_file: Annotated[Path, typer.Argument(help="Instance JSON file.")],
    solution_file: Annotated[Path, typer.Argument(help="Solution JSON file.")],
    predictors: Annotated[
        str | None,
        typer.Option(
            help="Predictors to judge with: analytic, learned, or a model saved by `train`; "
            "default: what the solution names (a model path must be given here)."
        ),
    ] = None,
    catalog: CatalogOption = None,
) -> None:
    """Recompute a solution's objective, feasibility and every figure it claims, independently
    of the solvers (exit 3 when it is infeasible or any figure is false)."""
    from qlmio_opt.app.check import check as run_check
    from qlmio_opt.domain.io import read_instance, read_solution

    instance = read_instance(instance_file, catalog=_catalog(catalog))
    solution = read_solution(solution_file)
    judge = _predictor_option(predictors) if predictors is not None else None
    try:
        report = run_check(instance, solution, predictors=judge)
    except InputError as exc:
        raise exc.with_source(str(solution_file)) from None
    out.print(report.summary(), markup=False, highlight=False)
    if not report.accepted:
        raise typer.Exit(EXIT_INFEASIBLE)


def _predictor_option(spec: str):
    """The predictor ``--predictors`` names, or a usage error (exit 2) saying why not."""
    from qlmio_opt.predictors import get_predictor

    try:
        return get_predictor(spec)
    except ValueError as exc:
        raise InputError([_usage_issue(f"--predictors {spec}: {exc}")]) from None


def _solver_option(name: str) -> None:
    """Refuse an unknown ``--solver`` (exit 2) before any work."""
    from qlmio_opt.solvers import get_solver

    try:
        get_solver(name)
    except ValueError as exc:
        raise InputError([_usage_issue(f"--solver {name}: {exc}")]) from None


@app.command()
def pareto(
    file: Annotated[Path, typer.Argument(help="Instance JSON file.")],
    points: Annotated[int, typer.Option(min=2, max=200, help="Quality targets on the curve.")] = 10,
    time_limit: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds per solve: each point, and each of the (at most two) solves that find "
            "the curve's high end.",
        ),
    ] = 10.0,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the CSV and PNG.")] = Path("."),
    catalog: CatalogOption = None,
) -> None:
    """The quality-latency trade-off curve of a window, as CSV and PNG.

    Each point minimises latency under the window's own constraints and deferral rule for one
    mean-quality target; the targets run evenly from the fastest decision's mean quality to the
    highest one found that serves as many requests. Exit 3 (or 4 at the time limit) when the
    window has no decision at all.
    """
    from qlmio_opt.app.pareto import pareto_curve, plot_pareto
    from qlmio_opt.domain.io import read_instance
    from qlmio_opt.faces.report import frame_table

    instance = read_instance(file, catalog=_catalog(catalog))
    with _progress_bar() as bar:
        task = bar.add_task("pareto points", total=points)
        frame = pareto_curve(
            instance,
            points,
            time_limit=time_limit,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{file.stem}.pareto.csv"
    png_path = out_dir / f"{file.stem}.pareto.png"
    frame.to_csv(csv_path, index=False)
    plot_pareto(
        frame, png_path, title=f"{instance.name}: minimum mean latency per mean-quality target"
    )
    frame_table(
        out,
        frame.drop(columns=["message"]),
        title="trade-off curve (minimum latency per mean-quality target)",
    )
    out.print(f"wrote {csv_path} and {png_path}")
    raise typer.Exit(_pareto_exit_code(frame))


def _pareto_exit_code(frame) -> int:
    """0 when some point has a decision; else 3 (infeasible) or 4 (time limit), reason on stderr."""
    if frame["deferred"].notna().any():  # set exactly when the point has a decision
        return EXIT_OK
    for message in frame["message"].drop_duplicates():
        err.print(f"no decision: {message}", markup=False, highlight=False)
    return EXIT_TIME_LIMIT if (frame["status"] == "time_limit").all() else EXIT_INFEASIBLE


@app.command("solvers")
def list_solvers() -> None:
    """List the registered solvers."""
    from rich.table import Table

    from qlmio_opt.solvers import SOLVERS

    table = Table(title="solvers", title_justify="left")
    table.add_column("name")
    table.add_column("what it does")
    for name, cls in SOLVERS.items():
        table.add_row(name, cls.description)
    out.print(table)


class SchemaKind(StrEnum):
    instance = "instance"
    solution = "solution"


@app.command()
def schema(
    kind: Annotated[SchemaKind, typer.Argument(help="instance or solution.")] = SchemaKind.instance,
) -> None:
    """Print the JSON Schema of the instance (or solution) format."""
    from qlmio_opt.domain.schema import schema_text

    print(schema_text(kind.value))


@app.command()
def generate(
    scenario: Annotated[str, typer.Option(help="Scenario name.")] = "default",
    count: Annotated[int, typer.Option(min=1, max=100_000, help="Number of windows.")] = 100,
    seed: Annotated[
        int,
        typer.Option(
            min=0, max=MAX_SEED, help="Seed; window k depends only on (scenario, k, seed)."
        ),
    ] = 0,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to write window_NNN.json into.")
    ] = Path("instances"),
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite window files that already exist.")
    ] = False,
) -> None:
    """Generate benchmark windows from the public traces and prompts."""
    from qlmio_opt.domain.scenarios import SCENARIOS
    from qlmio_opt.domain.scenarios.generate import window_name, write_windows
    from qlmio_opt.faces.out_paths import writable_dir

    if scenario not in SCENARIOS:
        raise InputError(
            [_usage_issue(f'unknown scenario "{scenario}"; choose from {", ".join(SCENARIOS)}')]
        )
    writable_dir(out_dir)
    existing = [p for k in range(count) if (p := out_dir / f"{window_name(k)}.json").exists()]
    if existing and not force:
        shown = ", ".join(p.name for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise InputError(
            [
                _usage_issue(
                    f"--out {out_dir}: {len(existing)} of the {count} window file(s) exist "
                    f"({shown}); pass --force to overwrite them or choose another folder"
                )
            ]
        )
    paths = write_windows(out_dir, scenario, count, seed)
    out.print(f"wrote {len(paths)} window(s) to {out_dir}")


SPINNER_DELAY_S = 1.0
"""A single solve shows a spinner on stderr only once it has run this long: the millisecond
answers stay free of flicker, a solve that makes a person wait says it is working."""


@contextmanager
def _spinner_after(delay_s: float, message: str, *, quiet: bool = False) -> Iterator[None]:
    """A transient rich spinner on stderr that appears if the block runs longer than
    ``delay_s`` seconds (nothing is shown when stderr is not a terminal)."""
    if quiet:
        yield
        return
    status = err.status(message)
    lock = threading.Lock()
    state = {"shown": False, "done": False}

    def show() -> None:
        with lock:
            if not state["done"]:
                status.start()
                state["shown"] = True

    timer = threading.Timer(delay_s, show)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["shown"]:
                status.stop()


def _progress_bar(*, quiet: bool = False):
    """A rich progress bar on stderr: description, bar, done/total, elapsed time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=True,
    )


class Trace(StrEnum):
    azure_conv = "azure-conv"
    azure_code = "azure-code"
    mooncake = "mooncake"
    servegen = "servegen"


@app.command()
def simulate(
    trace: Annotated[Trace, typer.Option(help="Arrival trace.")] = Trace.azure_conv,
    duration: Annotated[
        float, typer.Option(min=1.0, max=86_400.0, help="Seconds of the trace to replay.")
    ] = 300.0,
    window: Annotated[float, typer.Option(min=0.05, max=600.0, help="Window length (s).")] = 2.0,
    policies: Annotated[
        str,
        typer.Option(help="Comma-separated solver names, plus oracle (exact with the truth)."),
    ] = "exact,greedy,all-cloud,per-request,oracle",
    predictors: Annotated[
        str,
        typer.Option(
            help="Predictors of the non-oracle policies: analytic, learned (shipped), oracle, "
            "or the path of a model saved by `train`."
        ),
    ] = "analytic",
    edge_capacity: Annotated[
        float,
        typer.Option(min=0.01, max=1.0, help="Share of each edge box's memory and slots."),
    ] = 1.0,
    time_limit: Annotated[
        float, typer.Option("--time-limit", min=0.0, help="Seconds per window and solver.")
    ] = 10.0,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Deployment, stream and world seed.")
    ] = 0,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for the CSVs and PNG plots.")
    ] = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="table or json.")
    ] = OutputFormat.table,
    jobs: JobsOption = 1,
    backend: BackendOption = BackendName.loky,
    scheduler: SchedulerOption = None,
) -> None:
    """Replay a trace window by window under several policies; measure them in the world.

    With --jobs, the policies replay in parallel workers (same stream, same world, same results).
    """
    from qlmio_opt.faces.out_paths import writable_dir
    from qlmio_opt.faces.report import frame_table
    from qlmio_opt.simulator import ReplayConfig, World, WorldConfig, workload
    from qlmio_opt.simulator.metrics import reduction_table
    from qlmio_opt.simulator.output import summary_json, write_results

    if out_dir is not None:
        writable_dir(out_dir)
    names = tuple(p.strip() for p in policies.split(",") if p.strip())
    chosen = predictors
    if predictors not in ("analytic", "learned", "oracle"):
        from qlmio_opt.predictors import get_predictor

        try:
            chosen = get_predictor(predictors)
        except ValueError as exc:
            raise InputError([_usage_issue(f"--predictors {predictors}: {exc}")]) from None
    try:
        config = ReplayConfig(
            window_s=window,
            policies=names,
            predictors=chosen,
            time_limit=time_limit,
            seed=seed,
        )
    except ValueError as exc:
        raise InputError([_usage_issue(str(exc))]) from None
    load = workload(trace.value, duration, seed=seed, edge_capacity=edge_capacity)
    if not load.requests:
        raise InputError([_usage_issue(f"no request arrives in the first {duration:g} s")])
    world = World(config=WorldConfig(seed=seed))
    parallel = _parallel(jobs, backend, scheduler)
    result = _replay_with_progress(
        load, world, config, quiet=fmt is OutputFormat.json, parallel=parallel
    )
    if out_dir is not None:
        paths = write_results(result, out_dir)
    if fmt is OutputFormat.json:
        print(json.dumps(summary_json(result), indent=2))
        return
    summary = result.summary()
    frame_table(
        out,
        summary,
        title=(
            f"{trace.value}: {len(load.requests)} requests in {duration:g} s, windows of "
            f"{window:g} s, {predictors} predictors"
        ),
    )
    if "all-cloud" in summary.index:
        frame_table(out, reduction_table(summary), title="against all-cloud")
    if out_dir is not None:
        out.print(f"wrote {len(paths)} files to {out_dir}")


def _replay_with_progress(load, world, config, *, quiet: bool, parallel=None):
    from qlmio_opt.simulator import replay

    with _progress_bar(quiet=quiet) as bar:
        tasks = {p: bar.add_task(p, total=None) for p in config.policies}

        def progress(policy: str, done: int, total: int) -> None:
            bar.update(tasks[policy], completed=done, total=total)

        return replay(load, world, config, progress=progress, parallel=parallel)


@app.command("bench-data")
def bench_data_command(
    requests: Annotated[
        int, typer.Option("--requests", min=1, max=1_000_000, help="Requests to measure.")
    ] = 1000,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seed of the requests and loads.")
    ] = 0,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for bench.csv.gz, meta.json, DATA_CARD.md.")
    ] = Path("bench-data"),
    jobs: JobsOption = 1,
    backend: BackendOption = BackendName.loky,
    scheduler: SchedulerOption = None,
) -> None:
    """Run every request on every node of the scenario and write the benchmark dataset.

    With --jobs, blocks of requests are simulated in parallel workers; the draws stay in serial
    order, so the files are byte-identical to a serial run.
    """
    from qlmio_opt.faces.out_paths import writable_dir
    from qlmio_opt.faces.report import frame_table
    from qlmio_opt.simulator.dataset import bench_data, write_bench_data

    writable_dir(out_dir)
    parallel = _parallel(jobs, backend, scheduler)
    with _progress_bar() as bar:
        task = bar.add_task("requests", total=requests)
        data = bench_data(
            requests,
            seed,
            progress=lambda done, total: bar.update(task, completed=done),
            parallel=parallel,
        )
    paths = write_bench_data(data, out_dir)
    import pandas as pd

    counts = pd.DataFrame(data.split_counts()).T.rename_axis("split")
    frame_table(out, counts, title=f"{len(data.table)} rows ({requests} requests x nodes)")
    out.print(f"wrote {', '.join(str(p) for p in paths)}")


@app.command()
def train(
    data: Annotated[
        Path, typer.Option("--data", help="A bench-data folder (or its bench.csv.gz).")
    ],
    out_path: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Model path stem: writes STEM.json/.npz (quality) and STEM-latency.json/.npz.",
        ),
    ],
    random_state: Annotated[int, typer.Option(help="Seed of the training.")] = 0,
    family: Annotated[
        str,
        typer.Option(
            help="Quality model family: sklearn (gradient boosting) or torch (needs the extra)."
        ),
    ] = "sklearn",
) -> None:
    """Train the learned quality and latency models on a bench-data table and save them (safe
    JSON + npz; use the stem as --predictors STEM.json)."""
    from qlmio_opt.faces.report import frame_table
    from qlmio_opt.predictors.learned import latency_model_path
    from qlmio_opt.simulator.dataset import read_bench_table

    if family not in ("sklearn", "torch"):
        raise InputError([_usage_issue(f"--family {family}: choose sklearn or torch")])
    source = data / "bench.csv.gz" if data.is_dir() else data
    if not source.exists():
        raise InputError([_usage_issue(f"--data {data}: no bench.csv.gz there (run bench-data)")])
    steps = ("read", "quality model", "latency model", "save", "held-out scoring")
    with _progress_bar() as bar:
        task = bar.add_task(f"train: {steps[0]}", total=len(steps))

        def step(done: int) -> None:
            bar.update(task, completed=done, description=f"train: {steps[min(done, 4)]}")

        table = read_bench_table(source)
        step(1)
        model, latency = _fit_predictors(table, family, random_state, data, step)
        paths = (*model.save(out_path), *latency.save(latency_model_path(out_path)))
        step(4)
        tables = _held_out_tables(table, model, latency)
        step(5)
    for frame, title in tables:
        frame_table(out, frame, title=title)
    out.print("wrote " + ", ".join(str(p) for p in paths))


def _fit_predictors(table, family: str, random_state: int, data: Path, step):
    """The fitted quality model of ``family`` and latency model; ``step(2)``, ``step(3)`` after
    each. A missing extra or unusable data is an input error naming the option."""
    from qlmio_opt.predictors.learned_latency import LearnedLatencyModel
    from qlmio_opt.predictors.learned_quality import LearnedQualityModel

    try:
        if family == "torch":
            from qlmio_opt.predictors.learned_torch import TorchQualityModel

            model = TorchQualityModel(random_state=random_state).fit(table)
        else:
            model = LearnedQualityModel(random_state=random_state).fit(table)
        step(2)
        latency = LearnedLatencyModel(random_state=random_state).fit(table)
        step(3)
    except ImportError as exc:
        raise InputError([_usage_issue(f"--family {family}: {exc}")]) from None
    except ValueError as exc:
        raise InputError([_usage_issue(f"--data {data}: {exc}")]) from None
    return model, latency


def _held_out_tables(table, model, latency) -> list:
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
        tables.append(
            (
                pd.DataFrame(rows).T.rename_axis("predictor"),
                f"latency, held-out test split ({len(test)} request-node rows)",
            )
        )
    test = test.drop_duplicates(["request", "model"])
    if len(test) and test["completed"].nunique() == 2:
        features = model.features_table(test)
        analytic = features[:, model.feature_spec_.names().index("analytic_quality")]
        y = test["completed"].to_numpy()
        rows = {
            "analytic": quality_metrics(y, analytic),
            "learned": quality_metrics(y, model.predict_proba_table(test)),
        }
        tables.append(
            (
                pd.DataFrame(rows).T.rename_axis("predictor"),
                f"quality, held-out test split ({len(test)} request-model rows)",
            )
        )
    return tables


def _step_progress(bar):
    """A ``progress(step, done, total)`` callback that shows one bar per step."""
    tasks: dict[str, int] = {}

    def update(step: str, done: int, total: int) -> None:
        if step not in tasks:
            tasks[step] = bar.add_task(step, total=total)
        bar.update(tasks[step], completed=done)

    return update


def _evaluation_models(predictors: str | None, train: bool):
    """The quality and latency models to score (None, None: train them on the table)."""
    if train:
        if predictors is not None:
            raise InputError([_usage_issue("--train trains new models; drop --predictors")])
        return None, None
    from qlmio_opt.predictors import get_predictor

    name = predictors or "learned"
    try:
        predictor = get_predictor(name)
    except ValueError as exc:
        raise InputError([_usage_issue(f"--predictors {name}: {exc}")]) from None
    if not hasattr(predictor, "quality_model_"):
        raise InputError(
            [_usage_issue(f"--predictors {name}: give learned or a model saved by qlmio-opt train")]
        )
    return predictor.quality_model_, predictor.latency_model_


def _evaluation_table(data: Path | None, requests: int | None, seed: int | None, progress):
    """The bench table to score and a description of where it came from."""
    from qlmio_opt.simulator.dataset import COLUMNS, bench_data, read_bench_table

    if data is not None:
        if requests is not None or seed is not None:
            raise InputError(
                [_usage_issue("--requests and --seed make a fresh table; drop them with --data")]
            )
        source = data / "bench.csv.gz" if data.is_dir() else data
        if not source.exists():
            raise InputError([_usage_issue(f"--data {data}: no bench.csv.gz there")])
        table = read_bench_table(source)
        missing = [c.name for c in COLUMNS if c.role != "hidden" and c.name not in table]
        if missing:
            problem = f"not a bench table; no column {', '.join(missing)}"
            raise InputError([_usage_issue(f"--data {source}: {problem}")])
        return table, {"source": str(source), "rows": len(table)}
    from qlmio_opt.app.predictor_evaluation import FRESH_REQUESTS, FRESH_SEED

    requests = FRESH_REQUESTS if requests is None else requests
    seed = FRESH_SEED if seed is None else seed
    table = bench_data(
        requests, seed, progress=lambda done, total: progress("bench data", done, total)
    ).table
    return table, {"source": "bench_data", "seed": seed, "requests": requests, "rows": len(table)}


def _evaluation_header(result: dict) -> list[str]:
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


@app.command("evaluate-predictors")
def evaluate_predictors_command(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Score on a bench-data folder (or its bench.csv.gz), not a fresh table."
        ),
    ] = None,
    requests: Annotated[
        int | None,
        typer.Option(
            "--requests", min=1, max=1_000_000, help="Requests of the fresh table (default 2000)."
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=MAX_SEED,
            help="bench_data seed of the fresh table (default 20: the shipped models were "
            "trained on seed 0, their selection calibration on seed 3).",
        ),
    ] = None,
    predictors: Annotated[
        str | None,
        typer.Option(
            help="learned (the shipped models, default) or a model saved by `qlmio-opt train`."
        ),
    ] = None,
    train: Annotated[
        bool,
        typer.Option(
            "--train", help="Train new models on the table's train split; score its test split."
        ),
    ] = False,
    resamples: Annotated[
        int,
        typer.Option(min=100, max=100_000, help="Bootstrap resamples of the requests."),
    ] = 2000,
    random_state: Annotated[
        int,
        typer.Option(
            min=0, max=MAX_SEED, help="Seed of the training (--train), the bootstrap, M4A1's folds."
        ),
    ] = 0,
    m4a1: Annotated[
        bool, typer.Option("--m4a1/--no-m4a1", help="Also evaluate the M4A1 real-log models.")
    ] = True,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """Learned against analytic predictors on held-out data, with sample sizes and 95%
    intervals: quality (AUC, Brier, ...), latency (MAPE, ...), and the M4A1 real log.

    By default the shipped learned models are scored on every row of a fresh bench_data table
    they never saw; --train trains new ones on the table's train split instead.
    """
    from qlmio_opt.app.predictor_evaluation import evaluate_predictors, report_frames
    from qlmio_opt.faces.report import frame_table

    quality_model, latency_model = _evaluation_models(predictors, train)
    with _progress_bar() as bar:
        progress = _step_progress(bar)
        table, source = _evaluation_table(data, requests, seed, progress)
        try:
            result = evaluate_predictors(
                table,
                quality_model,
                latency_model,
                random_state=random_state,
                resamples=resamples,
                m4a1=m4a1,
                progress=progress,
            )
        except ValueError as exc:
            where = f"--data {data}" if data is not None else "the fresh table"
            raise InputError([_usage_issue(f"{where}: {exc}")]) from None
    if train:
        result["predictors"] = f"new models trained on the table (random state {random_state})"
    elif predictors is None or predictors == "learned":
        result["predictors"] = "the shipped learned models (predictors/trained/default.json)"
    else:
        result["predictors"] = f"the saved models {predictors}"
    result["data"] = source
    if fmt is OutputFormat.json:
        print(json.dumps(result, indent=2))
        return
    for line in _evaluation_header(result):
        out.print(line, markup=False, highlight=False)
    for title, frame in report_frames(result):
        frame_table(out, frame, title=title)


class CatalogKind(StrEnum):
    models = "models"
    devices = "devices"
    tasks = "tasks"


@app.command("catalog")
def show_catalog(
    kind: Annotated[
        CatalogKind, typer.Argument(help="models, devices or tasks.")
    ] = CatalogKind.models,
    catalog: CatalogOption = None,
) -> None:
    """Show the catalog (with user TOML files merged) as a table."""
    from qlmio_opt.faces.report import frame_table

    cat = _catalog(catalog)
    frame = {
        CatalogKind.models: cat.models_frame,
        CatalogKind.devices: cat.devices_frame,
        CatalogKind.tasks: cat.tasks_frame,
    }[kind]()
    frame = frame.drop(columns=["display_name"], errors="ignore")
    frame_table(
        out,
        frame,
        title=f"{kind.value} catalog (values and sources: qlmio_opt/domain/catalog/data)",
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: run the app, turning errors into exit codes.

    Usage errors are reported by the CLI library itself (exit code 2); our own errors are
    printed as one line per problem; anything else is a bug, reported without a traceback.
    """
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_INTERNAL)
    except InputError as exc:
        err.print(exc.render(), markup=False, highlight=False)
        return EXIT_INPUT
    except QlmioError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return EXIT_INPUT
    except KeyboardInterrupt:  # not an Exception; Typer turns one inside a command into exit 130
        err.print("interrupted", markup=False, highlight=False)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("QLMIO_DEBUG") == "1":
            raise
        err.print(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "(this is a bug in qlmio-opt; rerun with QLMIO_DEBUG=1 for the traceback)",
            markup=False,
            highlight=False,
        )
        return EXIT_INTERNAL
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
