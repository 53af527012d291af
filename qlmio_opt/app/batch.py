"""Solve and compare many window files, in parallel through :mod:`qlmio_opt.app.parallel`.

Each task reads its own file, so a file that fails to read or solve is reported with its name
and the other windows keep their results. Results come back in input order. Dask workers may
not share this machine's file system, so on the Dask backend a task carries the file's bytes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from qlmio_opt.app.parallel import SERIAL, ParallelConfig, TaskResult, run_tasks
from qlmio_opt.domain.best_known import BKS_PREDICTORS, KnownValues
from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.solution import Solution


def file_sizes(files: Sequence[Path]) -> list[float]:
    """Bytes per file (0 if unreadable): the cost estimate that orders parallel dispatch."""
    sizes = []
    for f in files:
        try:
            sizes.append(float(Path(f).stat().st_size))
        except OSError:
            sizes.append(0.0)
    return sizes


@dataclass(frozen=True)
class WindowFile:
    """A window file, with its bytes when the worker may not see the file itself."""

    path: Path
    content: bytes | None = None

    @staticmethod
    def of(path: Path | str, parallel: ParallelConfig) -> WindowFile:
        path = Path(path)
        if parallel.backend != "dask":
            return WindowFile(path)
        try:
            return WindowFile(path, path.read_bytes())
        except OSError:
            return WindowFile(path)  # the worker's read_instance names the problem

    def read(self, catalog: Catalog | None) -> Instance:
        """The validated instance; errors name :attr:`path`."""
        from qlmio_opt.domain.errors import InputError
        from qlmio_opt.domain.io import read_instance

        if self.content is None:
            return read_instance(self.path, catalog=catalog)
        with tempfile.TemporaryDirectory(prefix="qlmio-") as tmp:
            copy = Path(tmp) / self.path.name
            copy.write_bytes(self.content)
            try:
                return read_instance(copy, catalog=catalog)
            except InputError as exc:
                raise exc.with_source(str(self.path)) from None


@dataclass(frozen=True)
class SolveTask:
    """One window file to solve (and what to solve it with)."""

    window: WindowFile
    solver: str
    predictors: Any = "analytic"
    time_limit: float | None = None
    seed: int = 0
    catalog: Catalog | None = None
    keep_instance: bool = False


@dataclass(frozen=True)
class Solved:
    """A solved window; ``instance`` only when the task asked to keep it (for display)."""

    path: Path
    solution: Solution
    instance: Instance | None = None


def solve_window(task: SolveTask) -> Solved:
    """Read and solve one window file (runs in a worker)."""
    from qlmio_opt.app.solve import solve
    from qlmio_opt.domain.errors import InputError

    instance = task.window.read(task.catalog)
    try:
        solution = solve(
            instance,
            task.solver,
            predictors=task.predictors,
            time_limit=task.time_limit,
            seed=task.seed,
        )
    except InputError as exc:  # e.g. predictions too large for the model: name the file
        raise exc.with_source(str(task.window.path)) from None
    return Solved(task.window.path, solution, instance if task.keep_instance else None)


def solve_files(
    files: Sequence[Path],
    solver: str,
    *,
    predictors: Any = "analytic",
    time_limit: float | None = None,
    seed: int = 0,
    catalog: Catalog | None = None,
    parallel: ParallelConfig = SERIAL,
    progress: Callable[[int, int], None] | None = None,
    on_result: Callable[[TaskResult[Solved]], None] | None = None,
) -> list[TaskResult[Solved]]:
    """Solve every file; one result per file, in order, each a solution or an error.

    ``on_result`` gets each file's result as soon as it is solved (in completion order), so
    that a caller can write it before the others finish: on Ctrl-C, :func:`run_tasks` raises
    KeyboardInterrupt and only what ``on_result`` got is kept.
    """
    keep = len(files) == 1
    tasks = [
        SolveTask(WindowFile.of(f, parallel), solver, predictors, time_limit, seed, catalog, keep)
        for f in files
    ]
    labels = [str(f) for f in files]
    return run_tasks(
        solve_window,
        tasks,
        labels=labels,
        config=parallel,
        progress=progress,
        on_result=on_result,
        cost=file_sizes(files),
    )


@dataclass(frozen=True)
class CompareTask:
    """One window file to solve with several solvers."""

    window: WindowFile
    solvers: tuple[str, ...]
    predictors: Any = "analytic"
    time_limit: float | None = None
    seed: int = 0
    catalog: Catalog | None = None
    known: KnownValues | None = None  # best-known values beside the file (analytic predictors)

    def with_known(self) -> CompareTask:
        """The task with the best-known values beside its file (for the analytic predictors,
        which they were computed with)."""
        if self.predictors != BKS_PREDICTORS:
            return self
        return replace(self, known=KnownValues.beside(self.window.path))

    def rows(self, instance: Instance, as_given: bool = True) -> list[dict[str, Any]]:
        """:func:`qlmio_opt.app.compare.compare`'s rows for ``instance``; its best-known value
        only when ``as_given`` (a changed window is not the file the value is for)."""
        from qlmio_opt.app.compare import compare

        known = self.known if as_given else None
        best = known.objective(instance.name) if known is not None else None
        frame = compare(
            [instance],
            list(self.solvers),
            time_limit=self.time_limit,
            seed=self.seed,
            predictors=self.predictors,
            best_known=None if best is None else {instance.name: best},
        )
        return frame.to_dict(orient="records")


def compare_window(task: CompareTask) -> list[dict[str, Any]]:
    """The rows of :func:`qlmio_opt.app.compare.compare` for one window file (runs in a worker)."""
    return task.rows(task.window.read(task.catalog))


def compare_files(
    files: Sequence[Path],
    solvers: Sequence[str],
    *,
    predictors: Any = "analytic",
    time_limit: float | None = None,
    seed: int = 0,
    catalog: Catalog | None = None,
    parallel: ParallelConfig = SERIAL,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, list[TaskResult]]:
    """The compare table over every file that could be solved, and the per-file results.

    The table equals :func:`qlmio_opt.app.compare.compare` over the good files, whatever
    ``parallel``.
    """
    tasks = [
        CompareTask(
            WindowFile.of(f, parallel), tuple(solvers), predictors, time_limit, seed, catalog
        ).with_known()
        for f in files
    ]
    results = run_tasks(
        compare_window,
        tasks,
        labels=[str(f) for f in files],
        config=parallel,
        progress=progress,
        cost=file_sizes(files),
    )
    rows = [row for r in results if r.ok for row in r.unwrap()]
    return pd.DataFrame(rows), results
