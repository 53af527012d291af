"""The solution: one result object per solved window (PyVRP's ``Result``, as JSON)."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field

from qlmio_opt.domain.frozen import FrozenDict
from qlmio_opt.domain.instance import Frozen
from qlmio_opt.domain.types import Id, Str, Text

if TYPE_CHECKING:
    import pandas as pd

SOLUTION_FORMAT: Final = "qlmio-opt/solution"

BOUND_SOURCES = {
    "highs": "HiGHS's MIP dual bound",
    "lagrangian": "Lagrangian dual bound",
    "lp": "LP relaxation bound",
}
"""How each value of ``Solution.bound_source`` reads in tables."""


class Status(StrEnum):
    """How a solve ended. ``optimal`` and ``feasible`` carry a valid assignment."""

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    TIME_LIMIT = "time_limit"
    INFEASIBLE = "infeasible"
    ERROR = "error"

    @property
    def has_assignment(self) -> bool:
        return self in {Status.OPTIMAL, Status.FEASIBLE, Status.TIME_LIMIT}


class RequestDecision(Frozen):
    request: Id
    node: Id | None = Field(description="Chosen node; null when the request is deferred.")
    quality: float | None = Field(description="Predicted quality on the chosen node.")
    latency_s: float | None = Field(
        description="Predicted latency on the chosen node, with its share of the node's congestion."
    )


class NodeUsage(Frozen):
    node: Id
    tier: Literal["edge", "cloud"]
    requests: int
    memory_gb: float = Field(description="KV-cache memory the window's requests use.")
    congestion_s: float = Field(
        default=0.0, description="Total extra latency congestion adds over the node's requests."
    )
    memory_capacity_gb: float | None = Field(description="Free memory; null = unbounded.")
    max_concurrency: int


class LinkUsage(Frozen):
    link: Id
    requests: int
    megabits: float = Field(description="Megabits the window sends across the link.")
    capacity_megabits: float = Field(description="bandwidth_mbps x window_s.")


class Times(Frozen):
    predict_s: float = 0.0
    build_s: float = 0.0
    solve_s: float = 0.0
    total_s: float = 0.0


class Solution(Frozen):
    """A solved (or failed) window, as written by ``qlmio-opt solve --format json``."""

    format: Literal["qlmio-opt/solution"] = SOLUTION_FORMAT
    version: Literal[1] = 1
    instance: Id
    solver: Id
    predictors: Str = "analytic"
    status: Status
    message: Text | None = Field(default=None, description="Why, for infeasible or error.")
    objective: float | None = None
    bound: float | None = Field(
        default=None, description="A proven lower bound on the objective (see bound_source)."
    )
    bound_source: Id | None = Field(
        default=None,
        description="What proved the bound: highs (HiGHS's MIP dual bound), lagrangian (the "
        "greedy's Lagrangian dual) or lp (the LP relaxation).",
    )
    gap: float | None = Field(
        default=None,
        description="|objective - bound| / |objective|: the gap to the best bound this solver "
        "proved (not to the optimum, unless the bound is tight).",
    )
    mean_latency_s: float | None = None
    mean_quality: float | None = None
    times: Times = Times()
    solver_stats: Annotated[dict[Str, float], AfterValidator(FrozenDict)] = Field(
        default_factory=FrozenDict,
        description="Solver-specific timings and counts (e.g. highs_run_s).",
    )
    assignment: Annotated[dict[Str, Str], AfterValidator(FrozenDict)] = Field(
        default_factory=FrozenDict, description="request id -> node id."
    )
    deferred: tuple[Id, ...] = ()
    requests: tuple[RequestDecision, ...] = ()
    nodes: tuple[NodeUsage, ...] = ()
    links: tuple[LinkUsage, ...] = ()
    binding: tuple[Str, ...] = Field(default=(), description="Constraints at their limit.")
    violations: tuple[Str, ...] = Field(
        default=(), description="Constraints the assignment breaks (rule-based baselines only)."
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, as written to a solution file."""
        return self.model_dump(mode="json")

    def node_of(self, request_id: str) -> str | None:
        """The node a request was assigned to (None when deferred or unassigned)."""
        return self.assignment.get(request_id)

    def frame(self) -> pd.DataFrame:
        """The per-request decisions as a pandas DataFrame indexed by request id."""
        import pandas as pd

        rows = [d.model_dump() for d in self.requests]
        return pd.DataFrame(rows, columns=["request", "node", "quality", "latency_s"]).set_index(
            "request"
        )

    def bound_label(self) -> str:
        """``bound``, named by what proved it (e.g. "Lagrangian dual bound")."""
        return BOUND_SOURCES.get(self.bound_source or "", "bound")

    def summary(self) -> str:
        """A few lines for people: status, objective, bound and gap, means, binding limits."""
        lines = [f"{self.instance}: {self.solver} -> {self.status.value}"]
        if self.message:
            lines.append(f"  {self.message}")
        if self.objective is not None:
            bound = f", {self.bound_label()} {self.bound:.6g}" if self.bound is not None else ""
            gap = f", gap {self.gap:.3%} to that bound" if self.gap is not None else ""
            lines.append(f"  objective {self.objective:.6g}{bound}{gap}")
        if self.mean_latency_s is not None:
            lines.append(
                f"  {len(self.assignment)} assigned, {len(self.deferred)} deferred; mean latency "
                f"{self.mean_latency_s:.3f} s, mean quality {self.mean_quality:.4f}"
            )
        if self.binding:
            lines.append("  binding: " + "; ".join(self.binding))
        if self.violations:
            lines.append("  violated: " + "; ".join(self.violations))
        return "\n".join(lines)
