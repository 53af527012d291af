"""Output for people: rich consoles, progress bars and a delayed spinner, made on first use.

rich is imported only when a command prints a table or a bar, never for ``--help``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (fast start)
if TYPE_CHECKING:
    from typing import Any


SPINNER_DELAY_S = 1.0
"""A single solve shows a spinner on stderr only once it has run this long: the millisecond
answers stay free of flicker, a solve that makes a person wait says it is working."""


def _width() -> int | None:
    """Let rich size tables to the terminal; when piped or captured, use a wide page."""
    return None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "200"))


@cache
def out() -> Any:
    """The console of the results (stdout)."""
    from rich.console import Console

    return Console(soft_wrap=True, width=_width())


@cache
def err() -> Any:
    """The console of messages and progress (stderr)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def say(text: str) -> None:
    """One plain line on stderr (no markup, no highlighting)."""
    err().print(text, markup=False, highlight=False)


def progress_bar(*, quiet: bool = False) -> Any:
    """A rich progress bar on stderr: description, bar, done/total, elapsed time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err(),
        disable=quiet,
        transient=True,
    )


@contextmanager
def spinner_after(delay_s: float, message: str, *, quiet: bool = False) -> Iterator[None]:
    """A transient rich spinner on stderr that appears if the block runs longer than
    ``delay_s`` seconds (nothing is shown when stderr is not a terminal)."""
    if quiet:
        yield
        return
    status = err().status(message)
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


def step_progress(bar: Any) -> Any:
    """A ``progress(step, done, total)`` callback that shows one bar per step."""
    tasks: dict[str, int] = {}

    def update(step: str, done: int, total: int) -> None:
        if step not in tasks:
            tasks[step] = bar.add_task(step, total=total)
        bar.update(tasks[step], completed=done)

    return update
