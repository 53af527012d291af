"""The ``qlmio-opt`` command line (argparse: it starts in a few milliseconds).

Exit codes: 0 done; 1 internal error; 2 invalid input or usage; 3 no feasible decision
(infeasible window, a rule-based policy that breaks a constraint, a solution ``check`` refuses);
4 time limit with no solution; 130 interrupted (Ctrl-C). Errors print one line per problem and
never a traceback (set ``QLMIO_DEBUG=1`` to see one).

Each command lives in the module of its group (:mod:`.solving`, :mod:`.world`,
:mod:`.learning`, :mod:`.data`, :mod:`.serving`); a command's heavy imports happen inside it, so
``--help`` and ``--version`` load none of them.
"""

from __future__ import annotations

import argparse
import os
import sys

from qlmio_opt.domain.errors import InputError, QlmioError
from qlmio_opt.domain.version import VERSION
from qlmio_opt.faces.cli import data, learning, serving, solving, world
from qlmio_opt.faces.cli.options import (
    EXIT_INFEASIBLE,
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIME_LIMIT,
    MAX_SEED,
    Commands,
)

__all__ = [
    "EXIT_INFEASIBLE",
    "EXIT_INPUT",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TIME_LIMIT",
    "MAX_SEED",
    "main",
    "parser",
]

DESCRIPTION = "Assign windows of multimodal LLM requests to edge servers or the cloud."


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``qlmio-opt`` parser: every command with its help line, and the arguments of
    ``command`` (of every command when it is None)."""
    top = argparse.ArgumentParser(prog="qlmio-opt", description=DESCRIPTION)
    top.add_argument("--version", action="version", version=f"qlmio-opt {VERSION}")
    action = top.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    commands = Commands(action, command)
    for group in (solving, world, learning, data, serving):
        group.register(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: run a command, turning errors into exit codes.

    Usage errors are reported by argparse (exit 2); our own errors as one line per problem
    (exit 2); anything else is a bug, reported without a traceback (exit 1).
    """
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    cli = parser(command)
    try:
        args = cli.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse printed
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    if args.command is None:
        cli.print_help(sys.stderr)
        return EXIT_INPUT
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from qlmio_opt.faces.cli.console import say

    try:
        return int(args.run(args))
    except InputError as exc:
        say(exc.render())
        return EXIT_INPUT
    except QlmioError as exc:
        say(f"error: {exc}")
        return EXIT_INPUT
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("QLMIO_DEBUG") == "1":
            raise
        say(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "(this is a bug in qlmio-opt; rerun with QLMIO_DEBUG=1 for the traceback)"
        )
        return EXIT_INTERNAL
