"""The solution: one result object per solved window (PyVRP's ``Result``, as JSON)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from qlmio_opt.instance import Frozen
from qlmio_opt.types import Id, Str, Text

SOLUTION_FORMAT = "qlmio-opt/solution"


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
    latency_s: float | None = Field(description="Predicted latency on the chosen node.")


class NodeUsage(Frozen):
    node: Id
    tier: Literal["edge", "cloud"]
    requests: int
    memory_gb: float = Field(description="KV-cache memory the window's requests use.")
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
    bound: float | None = None
    gap: float | None = None
    mean_latency_s: float | None = None
    mean_quality: float | None = None
    times: Times = Times()
    assignment: dict[Str, Str] = Field(default_factory=dict, description="request id -> node id.")
    deferred: tuple[Id, ...] = ()
    requests: tuple[RequestDecision, ...] = ()
    nodes: tuple[NodeUsage, ...] = ()
    links: tuple[LinkUsage, ...] = ()
    binding: tuple[Str, ...] = Field(default=(), description="Constraints at their limit.")
    violations: tuple[Str, ...] = Field(
        default=(), description="Constraints the assignment breaks (rule-based baselines only)."
    )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
