"""What every command shares: exit codes, argument types with ranges, common options.

Argument types refuse a bad value with the range in the message, and argparse turns that into a
usage error (exit 2) before any work. Only the standard library is imported here, so that
``qlmio-opt --help`` starts at once.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from qlmio_opt.domain.errors import InputError, Issue

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (fast start)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_INFEASIBLE, EXIT_TIME_LIMIT = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # the shell's code for a command ended by SIGINT (128 + 2)

MAX_SEED = 2**32 - 1
"""Seeds feed numpy's ``SeedSequence`` and HiGHS's ``random_seed``; both take 0 .. 2**32 - 1
here (HiGHS's option is a C int, numpy's entropy is unbounded but non-negative)."""

FORMATS = ("table", "json")
BACKENDS = ("loky", "dask")


class Commands:
    """The subcommands, building a command's arguments only when it is the one asked for (or
    every command's, when none is): a start-up builds one parser, not fifteen."""

    def __init__(self, action: argparse._SubParsersAction, wanted: str | None) -> None:
        self._action = action
        self._wanted = wanted

    def add_parser(
        self, name: str, *, help: str, description: str | None = None
    ) -> argparse.ArgumentParser | HelpOnly:
        parser = self._action.add_parser(name, help=help, description=description or help)
        if self._wanted in (None, name):
            return parser
        return HelpOnly(parser)


class HelpOnly:  # the subset of ArgumentParser the commands use
    """A command that is not being run: listed with its help line, its arguments skipped."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._parser = parser

    def add_argument(self, *args: object, **kwargs: object) -> None:
        """Skipped: this command's arguments are not parsed in this run."""

    def set_defaults(self, **kwargs: object) -> None:
        self._parser.set_defaults(**kwargs)


CommandParser = argparse.ArgumentParser | HelpOnly
"""What a command's argument builder fills: its parser, or a stand-in that skips."""


def path(text: str) -> Path:
    """An argparse type: a filesystem path (pathlib is imported only when one is parsed)."""
    from pathlib import Path

    return Path(text)


def usage(message: str) -> InputError:
    """A usage error about the command line (printed as one line, exit 2)."""
    return InputError([Issue("command line", message)])


def integer(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}]; got {value}")
        return value

    return parse


def number(low: float, high: float = math.inf) -> Callable[[str], float]:
    """An argparse type: a number in ``[low, high]`` (``inf`` allowed when ``high`` is)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
        if not low <= value <= high:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be a number in [{low:g}, {high:g}]; got {text}")
        return value

    return parse


def add_seed(parser: CommandParser, help: str = "Seed for randomised solvers.") -> None:
    parser.add_argument("--seed", type=integer(0, MAX_SEED), default=0, help=help)


def add_time_limit(
    parser: CommandParser, default: float | None, help: str = "Seconds per solve."
) -> None:
    parser.add_argument(
        "--time-limit", type=number(0.0), default=default, help=f"{help} (inf: none)"
    )


def add_format(parser: CommandParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table", help="table or json.")


def add_catalog(parser: CommandParser) -> None:
    parser.add_argument(
        "--catalog",
        type=path,
        action="append",
        metavar="TOML",
        help="TOML file adding or overriding catalog entries (repeatable).",
    )


def add_parallel(parser: CommandParser) -> None:
    parser.add_argument(
        "--jobs",
        "-j",
        type=integer(1, 1024),
        default=1,
        help="Parallel workers (1: one after the other, here).",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="loky",
        help="loky: worker processes on this machine; dask: a Dask cluster (the dask extra).",
    )
    parser.add_argument(
        "--scheduler",
        help="Address of a running Dask scheduler (with --backend dask); without it, "
        "--backend dask starts a LocalCluster of --jobs workers.",
    )


def catalog(paths: list[Path] | None) -> Any:
    """The catalog the ``--catalog`` files make (the shipped one without them)."""
    from qlmio_opt.domain.catalog import default_catalog, load_catalog

    return load_catalog(*paths) if paths else default_catalog()


def parallel(args: argparse.Namespace) -> Any:
    """The parallel set-up ``--jobs``, ``--backend`` and ``--scheduler`` ask for; usage errors
    exit 2 before any work."""
    from qlmio_opt.app.parallel import DASK_HINT, ParallelConfig

    try:
        config = ParallelConfig(jobs=args.jobs, backend=args.backend, scheduler=args.scheduler)
    except ValueError as exc:
        raise usage(str(exc)) from None
    if config.backend == "dask":
        try:
            import dask.distributed  # noqa: F401
        except ImportError:
            raise usage(f"--backend dask needs the dask extra: {DASK_HINT}") from None
    return config


def predictor(spec: str) -> Any:
    """The predictor ``--predictors`` names, or a usage error (exit 2) saying why not."""
    from qlmio_opt.predictors import get_predictor

    try:
        return get_predictor(spec)
    except ValueError as exc:
        raise usage(f"--predictors {spec}: {exc}") from None


def solver_names(text: str | None, option: str = "--solvers") -> list[str]:
    """Registered solver names from a comma-separated list (all of them when ``text`` is None);
    an unknown one is a usage error naming it."""
    from qlmio_opt.solvers import SOLVERS

    if text is None:
        return list(SOLVERS)
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in SOLVERS]
    if unknown or not names:
        name = unknown[0] if unknown else text
        raise usage(f"{option} {name}: unknown solver; choose from {', '.join(SOLVERS)}")
    return names
