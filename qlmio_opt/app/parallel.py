"""Run independent tasks in parallel: joblib's loky processes, or a Dask cluster through joblib.

:func:`run_tasks` calls ``fn(item)`` for every item and returns one :class:`TaskResult` per item,
in input order, whatever order the workers finish in. A task that raises does not stop the others:
its error is captured with its label (usually a file name) and the caller decides what to do.

- ``jobs=1`` with the ``loky`` backend runs the tasks here, one after the other (no processes).
- ``loky`` (default): ``jobs`` worker processes on this machine (joblib's default backend).
- ``dask``: joblib's Dask backend on a ``dask.distributed`` cluster; ``scheduler`` is the address of
  a running scheduler (``tcp://host:8786``), or none to start a ``LocalCluster`` of ``jobs``
  single-threaded worker processes on the loopback interface for the duration of the call.

Inside workers every task runs under :func:`qlmio_opt.solvers.exact.highs_threads` ``(1)``: HiGHS
uses one thread per worker, so ``jobs`` workers use ``jobs`` cores and never oversubscribe them
(loky and Dask's nanny also limit the BLAS/OpenMP threads of their workers).

Ctrl-C (KeyboardInterrupt in the calling process) stops the run: loky's workers are killed and
a ``LocalCluster`` is shut down with its worker processes, the results already handed to
``on_result`` stay with the caller, and KeyboardInterrupt is raised again. Workers ignore SIGINT
themselves (a terminal sends it to every process of the command): the calling process decides.
"""

from __future__ import annotations

import asyncio
import copyreg
import logging
import os
import signal
import threading
import traceback
import types
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from qlmio_opt.domain.errors import InputError, Issue, QlmioError

T = TypeVar("T")
BACKENDS = ("loky", "dask")
DASK_HINT = "pip install 'qlmio-opt[dask]'"
CONNECT_TIMEOUT_S = 10.0
# On Ctrl-C a nanny gives its worker process 0.8 x this to close, then kills it. Idle workers of a
# 2-worker LocalCluster closed in 0.13-0.54 s on the 2-core development machine; one running
# HiGHS in its task thread cannot close before HiGHS returns (Dask's own timeout is 5 s).
WORKER_STOP_TIMEOUT_S = 0.5


def _mappingproxy(data: dict) -> types.MappingProxyType:
    return types.MappingProxyType(data)


def _reduce_mappingproxy(proxy: types.MappingProxyType) -> tuple:
    return _mappingproxy, (dict(proxy),)


# Catalogs keep their tables in read-only mapping proxies, which pickle cannot ship to a worker
# process by default; rebuild them from a plain dict on the other side.
copyreg.pickle(types.MappingProxyType, _reduce_mappingproxy)


@dataclass(frozen=True)
class ParallelConfig:
    """Where tasks run.

    Attributes
    ----------
    jobs
        Worker processes (``loky``), or workers of the ``LocalCluster`` (``dask`` without
        ``scheduler``); 1 with ``loky`` runs in this process.
    backend
        ``"loky"`` or ``"dask"``.
    scheduler
        Address of a running Dask scheduler (``dask`` only); none starts a ``LocalCluster``.
    """

    jobs: int = 1
    backend: Literal["loky", "dask"] = "loky"
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(f"jobs must be an integer >= 1; got {self.jobs!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f'unknown backend "{self.backend}"; choose from {", ".join(BACKENDS)}')
        if self.scheduler is not None and self.backend != "dask":
            raise ValueError("--scheduler applies to --backend dask only")

    @property
    def serial(self) -> bool:
        """Whether tasks run in this process, one after the other."""
        return self.backend == "loky" and self.jobs == 1


SERIAL = ParallelConfig()


@dataclass(frozen=True)
class TaskResult(Generic[T]):
    """One task's outcome: its value, or the error it raised (as text, with its kind)."""

    label: str
    value: T | None = None
    error: str | None = None
    error_kind: Literal["input", "internal"] | None = None
    traceback: str | None = None  # of an internal error, for QLMIO_DEBUG=1

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> T:
        """The value of a task that succeeded (a ValueError naming the task otherwise)."""
        if self.error is not None or self.value is None:
            raise ValueError(f"{self.label}: the task failed ({self.error})")
        return self.value


def run_tasks(
    fn: Callable[[Any], T],
    items: Iterable[Any],
    *,
    labels: Sequence[str],
    config: ParallelConfig = SERIAL,
    progress: Callable[[int, int], None] | None = None,
    on_result: Callable[[TaskResult[T]], None] | None = None,
    cost: Sequence[float] | None = None,
) -> list[TaskResult[T]]:
    """Call ``fn(item)`` for every item; results in input order, errors captured per task.

    Parameters
    ----------
    fn
        A module-level function (workers import it by name).
    items
        One argument per task; may be a lazy iterable (dispatched as workers free up).
    labels
        One name per task, used in error messages (a file name, a policy, a block).
    config
        Where to run (:class:`ParallelConfig`).
    progress
        Called as ``progress(done, total)`` each time a task finishes.
    on_result
        Called with each task's result as it finishes (in completion order).
    cost
        Expected cost of each task (for example the file size): workers take the costliest
        first, so that one long task started last does not keep the others waiting. Results
        are still returned in input order.

    Raises
    ------
    InputError
        The Dask backend is not installed, or its scheduler cannot be reached.
    KeyboardInterrupt
        Ctrl-C: raised once the workers are stopped (see the module's docstring); the results
        finished before it have been passed to ``on_result``.
    """
    total = len(labels)
    results: list[TaskResult[T] | None] = [None] * total
    with _first_sigint_only(enabled=not config.serial):
        stream = _stream(fn, _by_cost(items, cost, config), labels, config)
        try:
            for done, (index, result) in enumerate(stream, start=1):
                results[index] = result
                if on_result is not None:
                    on_result(result)
                if progress is not None:
                    progress(done, total)
        finally:
            # after KeyboardInterrupt or a failing callback: stop the workers now (the stream's
            # own clean-up), not when the traceback holding the generator is dropped
            with warnings.catch_warnings():
                # joblib warns that closing its generator cancelled running tasks: we mean it
                warnings.filterwarnings("ignore", "[0-9]+ tasks which were still being processed")
                stream.close()
    missing = [labels[i] for i, r in enumerate(results) if r is None]
    if missing:
        raise QlmioError(f"{len(missing)} task(s) returned no result: {', '.join(missing[:5])}")
    return results  # type: ignore[return-value]


@contextmanager
def _first_sigint_only(*, enabled: bool) -> Iterator[None]:
    """Within the block the first SIGINT raises KeyboardInterrupt as usual and later ones are
    ignored, so that pressing Ctrl-C again cannot cut short the shutdown of the workers.

    Only in the main thread with Python's default handler, and only when ``enabled`` (a serial
    run keeps the default handler, which :mod:`qlmio_opt.solvers.highs_direct` takes over
    while HiGHS runs).
    """
    if not (
        enabled
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        yield
        return

    def raise_once(signum, frame) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, raise_once)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _by_cost(
    items: Iterable[Any], cost: Sequence[float] | None, config: ParallelConfig
) -> Iterable[tuple[int, Any]]:
    """``(index, item)`` pairs in the order to dispatch them: input order, or costliest first."""
    if cost is None or config.serial:
        return enumerate(items)
    indexed = list(enumerate(items))
    return [indexed[i] for i in sorted(range(len(indexed)), key=lambda i: -cost[i])]


def _stream(
    fn: Callable[[Any], T],
    items: Iterable[tuple[int, Any]],
    labels: Sequence[str],
    config: ParallelConfig,
) -> Generator[tuple[int, TaskResult[T]], None, None]:
    """``(index, result)`` pairs as tasks finish."""
    if config.serial:
        for index, item in items:
            yield index, _guarded(fn, item, labels[index])
        return
    from joblib import Parallel, delayed, parallel_config

    here = os.getpid()
    tasks = (delayed(_in_worker)(index, fn, item, labels[index], here) for index, item in items)
    if config.backend == "loky":
        runner = Parallel(n_jobs=config.jobs, backend="loky", return_as="generator_unordered")
        yield from runner(tasks)
        return
    with dask_client(config), parallel_config(backend="dask"):
        runner = Parallel(n_jobs=-1, return_as="generator_unordered")
        yield from runner(tasks)


def _in_worker(index: int, fn: Callable[[Any], T], item: Any, label: str, parent_pid: int):
    from qlmio_opt.solvers.exact import highs_threads

    if os.getpid() == parent_pid:
        # joblib runs here when the cluster has a single worker thread; HiGHS's thread pool is
        # per process and set at its first run, so keep this process's setting
        return index, _guarded(fn, item, label)
    _ignore_sigint()
    with highs_threads(1):
        return index, _guarded(fn, item, label)


def _ignore_sigint() -> None:
    """In a worker process, ignore SIGINT: the calling process stops the workers on Ctrl-C.

    A terminal sends SIGINT to every process of the command; a loky worker would otherwise
    raise KeyboardInterrupt and print its traceback. Only the main thread can set it: loky runs
    tasks there; Dask runs them in threads of its own (:func:`_sigint_ignored` covers a
    ``LocalCluster``'s workers).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _guarded(fn: Callable[[Any], T], item: Any, label: str) -> TaskResult[T]:
    try:
        return TaskResult(label, value=fn(item))
    except InputError as exc:
        return TaskResult(label, error=exc.render(), error_kind="input")
    except QlmioError as exc:
        return TaskResult(label, error=f"{label}: {exc}", error_kind="input")
    except Exception as exc:  # a bug in one task must not lose the others' results
        return TaskResult(
            label,
            error=f"{label}: {type(exc).__name__}: {exc}",
            error_kind="internal",
            traceback=traceback.format_exc(),
        )


@contextmanager
def dask_client(config: ParallelConfig) -> Iterator[Any]:
    """A ``dask.distributed.Client`` for ``config``: connected to its scheduler, or to a new
    ``LocalCluster`` on the loopback interface that is closed on exit."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError(
            Issue("--backend dask", f"needs dask.distributed, which is not installed; {DASK_HINT}")
        ) from None
    if config.scheduler is not None:
        try:
            client = Client(config.scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(
                Issue(f"--scheduler {config.scheduler}", f"cannot connect ({exc})")
            ) from None
        with client:
            yield client
        return
    with _sigint_ignored():
        cluster = LocalCluster(
            n_workers=config.jobs,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # loopback only, any free port
            silence_logs=logging.ERROR,
        )
    with cluster, Client(cluster) as client:
        try:
            yield client
        except BaseException:
            # Ctrl-C, or results no longer wanted: a worker running a task would hold the
            # cluster's graceful close for Dask's 5 s
            _stop_workers_now(cluster)
            raise


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT within the block (main thread only): processes started meanwhile inherit
    it, so the workers of a ``LocalCluster`` started here ignore a terminal's Ctrl-C and leave
    it to this process, which closes them.

    Without it, each Dask worker prints a traceback on Ctrl-C, and a Ctrl-C while the cluster
    starts leaves it half built (Dask's exit hook then fails with a traceback). The price: a
    Ctrl-C during the start (about 1-4 s on the 2-core development machine) is lost.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_workers_now(cluster: Any) -> None:
    """Stop the worker processes of ``cluster`` (a ``LocalCluster`` with nannies) within
    :data:`WORKER_STOP_TIMEOUT_S`: each nanny asks its worker to close, then kills it."""
    nannies = [n for n in cluster.workers.values() if hasattr(n, "close")]

    async def close_all() -> None:
        closing = (n.close(timeout=WORKER_STOP_TIMEOUT_S) for n in nannies)
        await asyncio.gather(*closing, return_exceptions=True)

    # best effort: if this fails, the cluster's own close (on leaving its block) still stops
    # the workers, only more slowly, and the KeyboardInterrupt being handled is not replaced
    with suppress(Exception):
        cluster.sync(close_all)


def worst_error_kind(results: Sequence[TaskResult]) -> Literal["input", "internal"] | None:
    """``"internal"`` if any task hit a bug, else ``"input"`` if any had bad input, else None."""
    kinds = {r.error_kind for r in results if not r.ok}
    if "internal" in kinds:
        return "internal"
    return "input" if kinds else None
