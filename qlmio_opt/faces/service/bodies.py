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


DEFAULT_WAIT_S = 10.0
"""How long ``POST /v1/requests`` waits for the request's window by default: well above a window
(the shipped sites' are 2 s) and its decision (``auto``: 1 s), with a deferral or two."""

MAX_WAIT_S = 60.0
"""The longest wait a call may ask for: the read timeout of the proxies in front of services
(nginx's ``proxy_read_timeout`` defaults to 60 s), beyond which the answer would be lost anyway."""

WaitSeconds = Annotated[float, Strict(), Field(ge=0, le=MAX_WAIT_S)]

WAIT_HELP = (
    "Seconds to wait for the request's window to decide it (0: answer at once); 202 with "
    '"status": "waiting" when it has not; fetch it later at GET /v1/requests/{id}.'
)


class RequestBody(Frozen):
    """``POST /v1/requests``: one request, collected into the window of its arrival."""

    request: dict[str, Any] = Field(
        description="A request object of the instance format without arrival_s: it arrives "
        "at the time of the call (now, or the service's clock)."
    )
    now: Clock | None = Field(default=None, description=NOW_HELP)
    wait_s: WaitSeconds = Field(default=DEFAULT_WAIT_S, description=WAIT_HELP)


class RequestEnvelope(Frozen):
    """:class:`RequestBody` with its request left as data (validated against the site)."""

    request: dict[str, Any]
    now: Clock | None = None
    wait_s: WaitSeconds = DEFAULT_WAIT_S


class RequestAnswer(Frozen):
    """A request posted one at a time: its node once a window dispatched it."""

    id: Id
    status: str = Field(description="dispatched (200), waiting (202) or failed (500).")
    node: str | None = Field(default=None, description="Where to send it (dispatched).")
    tier: str | None = None
    arrival_s: float | None = Field(default=None, description="Its arrival on the clock.")
    decided_s: float | None = Field(default=None, description="Close of the deciding window.")
    closes_s: float | None = Field(
        default=None, description="Close of the window it waits for (waiting)."
    )
    deferrals: int | None = Field(default=None, description="Windows that deferred it.")
    latency_s: float | None = Field(default=None, description="Predicted latency.")
    quality: float | None = Field(default=None, description="Predicted quality.")
    message: str | None = Field(default=None, description="Why it failed (failed).")


class ClockBody(Frozen):
    """``POST /v1/clock``: the gateway's clock (windowing mode on the gateway's clock)."""

    now: Clock = Field(description="The time on the gateway's clock; windows due by then close.")


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
    collected: int = Field(
        description="Requests posted one at a time waiting for their window to close."
    )


class Health(Frozen):
    """``GET /healthz``."""

    status: str
    site: str
    solver: str
    window_s: float
    windows: int
