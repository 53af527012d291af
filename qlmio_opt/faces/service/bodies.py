"""The JSON bodies of the service's calls, as models: they validate what a gateway sends (with the
command line's messages, through :func:`~qlmio_opt.domain.validation.validate_model`) and make the
OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, Strict

from qlmio_opt.domain.instance import Frozen, NodeState, Request
from qlmio_opt.domain.types import Id, NonNegSeconds, Text, Tokens

Clock = Annotated[float, Strict(), Field(ge=0)]
"""Seconds on the service's clock (unbounded above: a service runs for more than a day)."""

NOW_HELP = (
    "The time of the call in seconds on the scheduler's clock; default: the service's own clock "
    "(seconds since its first start). Give it on every call or on none."
)


class WindowBody(Frozen):
    """``POST /v1/windows``: the requests that arrived in the window closing now."""

    requests: tuple[Request, ...] = Field(
        default=(),
        description="Request objects of the instance format; arrival_s counts from the window's "
        "start (now - window_s), as in an instance file.",
    )
    now: Clock | None = Field(default=None, description=NOW_HELP)
    allow_deferral: bool = Field(
        default=True, description="False to place every request (to drain at shutdown)."
    )


class WindowEnvelope(Frozen):
    """:class:`WindowBody` with its requests left as data: they are validated against the site
    (as the instance they make), where their cross-field rules are known."""

    requests: tuple[dict[str, Any], ...] = ()
    now: Clock | None = None
    allow_deferral: bool = True


class CompletionBody(Frozen):
    """``POST /v1/completions``: a dispatched request finished."""

    id: Id
    completed: bool = Field(default=True, description="False when it failed or was cancelled.")
    latency_s: NonNegSeconds | None = Field(
        default=None, description="Its latency as the gateway saw it (a metric only)."
    )
    output_tokens: Tokens | None = Field(
        default=None, description="Output tokens it generated (informational)."
    )


class NodeStateBody(Frozen):
    """``POST /v1/nodes/{id}/state``: a node's state as its engine reports it."""

    state: NodeState
    now: Clock | None = Field(default=None, description=NOW_HELP)


class Problem(Frozen):
    """A refused call: what is wrong, one issue per problem (as the command line prints them)."""

    error: Text = Field(description="What kind of refusal.")
    message: Text = Field(description="Every issue on its own line.")
    issues: tuple[dict[str, str], ...] = Field(
        default=(), description="Each problem: path (JSON path) and message."
    )


class NodeView(Frozen):
    """A node as the next window would see it."""

    tier: str
    running: int
    waiting: int
    memory_gb: float = Field(description="KV memory its running and waiting requests hold.")
    kv_used_gb: float | None = Field(description="Observed KV memory in use; null = estimated.")
    prefill_load: float | None
    state: NodeState


class PendingView(Frozen):
    id: Id
    deferrals: int


class StateView(Frozen):
    """``GET /v1/state``."""

    time_s: float
    windows: int
    nodes: dict[str, NodeView]
    pending: tuple[PendingView, ...]


class Health(Frozen):
    """``GET /healthz``."""

    status: str
    site: str
    solver: str
    windows: int
