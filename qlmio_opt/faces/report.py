"""Rich tables for people: the decision per node, link use, and summaries over many windows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.solution import Solution, Status

_STATUS_STYLE = {
    Status.OPTIMAL: "green",
    Status.FEASIBLE: "green",
    Status.TIME_LIMIT: "yellow",
    Status.INFEASIBLE: "red",
    Status.ERROR: "red",
}


def _pct(used: float, cap: float | None) -> str:
    if cap is None or cap <= 0:
        return "-"
    return f"{used / cap:.0%}"


def _num(value: float | None, fmt: str = ".4g") -> str:
    return "-" if value is None else format(value, fmt)


def solution_table(console: Console, instance: Instance, solution: Solution) -> None:
    """Print one window's decision: per node, per link, then the headline figures."""
    style = _STATUS_STYLE[solution.status]
    console.print(
        f"[bold]{instance.name}[/]  solver [bold]{solution.solver}[/]  predictors "
        f"{solution.predictors}  status [{style}]{solution.status.value}[/]"
    )
    if solution.message:
        console.print(f"[{style}]{solution.message}[/]", markup=True, highlight=False)
    if not solution.nodes:
        return
    nodes = Table(title="decision per node", title_justify="left")
    for col in (
        "node",
        "tier",
        "model",
        "device",
        "requests",
        "memory GB",
        "memory",
        "concurrency",
    ):
        nodes.add_column(
            col, justify="right" if col not in {"node", "tier", "model", "device"} else "left"
        )
    by_id = {n.id: n for n in instance.nodes}
    for usage in solution.nodes:
        node = by_id[usage.node]
        cap = usage.memory_capacity_gb
        nodes.add_row(
            usage.node,
            usage.tier,
            node.model,
            node.device,
            str(usage.requests),
            f"{usage.memory_gb:.2f} / {'inf' if cap is None else f'{cap:.2f}'}",
            _pct(usage.memory_gb, cap),
            f"{usage.requests} / {usage.max_concurrency}",
        )
    console.print(nodes)
    links = Table(title="links over the window", title_justify="left")
    for col in ("link", "requests", "megabits", "capacity", "use"):
        links.add_column(col, justify="left" if col == "link" else "right")
    for link in solution.links:
        links.add_row(
            link.link,
            str(link.requests),
            f"{link.megabits:.1f}",
            f"{link.capacity_megabits:.1f}",
            _pct(link.megabits, link.capacity_megabits),
        )
    console.print(links)
    head = Table(show_header=False, title="summary", title_justify="left")
    head.add_column("what")
    head.add_column("value")
    head.add_row("objective", _num(solution.objective, ".6g"))
    if solution.bound is not None:
        head.add_row(solution.bound_label(), _num(solution.bound, ".6g"))
        head.add_row("gap to that bound", _num(solution.gap, ".3%"))
    head.add_row("mean predicted latency (s)", _num(solution.mean_latency_s))
    head.add_row("mean predicted quality", _num(solution.mean_quality))
    head.add_row(
        "requests assigned / deferred", f"{len(solution.assignment)} / {len(solution.deferred)}"
    )
    head.add_row("binding", "; ".join(solution.binding) or "none")
    if solution.violations:
        head.add_row("[red]violated[/]", "; ".join(solution.violations[:5]))
    t = solution.times
    head.add_row(
        "time (s)",
        f"predict {t.predict_s:.3f}  build {t.build_s:.3f}  solve {t.solve_s:.3f}  "
        f"total {t.total_s:.3f}",
    )
    console.print(head)


def summary_table(console: Console, files: Sequence[Path], solutions: Sequence[Solution]) -> None:
    """One row per window."""
    table = Table(title="solved windows", title_justify="left")
    for col in (
        "instance",
        "solver",
        "status",
        "objective",
        "mean latency s",
        "mean quality",
        "deferred",
        "time s",
    ):
        table.add_column(
            col, justify="left" if col in {"instance", "solver", "status"} else "right"
        )
    for path, sol in zip(files, solutions, strict=True):
        style = _STATUS_STYLE[sol.status]
        table.add_row(
            str(path.name),
            sol.solver,
            f"[{style}]{sol.status.value}[/]",
            _num(sol.objective, ".6g"),
            _num(sol.mean_latency_s),
            _num(sol.mean_quality),
            str(len(sol.deferred)),
            f"{sol.times.total_s:.3f}",
        )
    console.print(table)


def frame_table(console: Console, frame: pd.DataFrame, title: str) -> None:
    """A pandas DataFrame as a rich table."""
    table = Table(title=title, title_justify="left")
    frame = frame.reset_index()
    cells = [
        [format(v, ".4g") if isinstance(v, float) else str(v) for v in row]
        for row in frame.itertuples(index=False)
    ]
    widths = []
    for j, col in enumerate(frame.columns):
        numeric = pd.api.types.is_numeric_dtype(frame[col])
        width = max([len(str(col)), *(len(row[j]) for row in cells)])
        widths.append(width)
        table.add_column(str(col), justify="right" if numeric else "left", min_width=width)
    for row in cells:
        table.add_row(*row)
    # never squeeze a catalog table: it is read, not skimmed
    console.print(table, width=max(console.width, sum(widths) + 3 * len(widths) + 1))


def markdown_table(frame: pd.DataFrame, *, index: bool = True, digits: int = 4) -> str:
    """A DataFrame as a GitHub markdown table (floats to ``digits`` significant digits)."""
    if index:
        frame = frame.reset_index()

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if value != value else format(value, f".{digits}g")
        return str(value)

    lines = [
        "| " + " | ".join(str(c) for c in frame.columns) + " |",
        "|" + "---|" * len(frame.columns),
    ]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)
