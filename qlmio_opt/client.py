"""A small typed client of the scheduling service (``qlmio-opt serve``; docs/service.md).

    from qlmio_opt.client import ServiceClient

    with ServiceClient("http://127.0.0.1:8000") as service:
        decision = service.decide(requests)
        for request_id, node_id in decision.solution.assignment.items():
            ...  # forward the request to its node
        service.complete("q1", latency_s=2.3)

Needs httpx (the ``serve`` extra). One client holds one keep-alive connection pool; it is safe to
share between threads (httpx's ``Client`` is). :class:`ServiceScheduler` makes the service look
like an in-process :class:`~qlmio_opt.Scheduler` (a replay through HTTP uses it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from qlmio_opt.domain.instance import NodeState, Request
from qlmio_opt.domain.solution import Solution


class ServiceError(Exception):
    """The service refused a call: its HTTP status and the issues it named (each a JSON path and
    a message, as the command line prints them)."""

    def __init__(self, status: int, message: str, issues: Sequence[Mapping[str, str]] = ()):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.issues = [dict(i) for i in issues]


@dataclass(frozen=True)
class WindowDecision:
    """A window as the service decided it."""

    solution: Solution
    fallback: str = ""
    decision_s: float = 0.0
    wait_s: float = 0.0  # the service's wait for its scheduler (other calls held it)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def dispatched(self) -> Mapping[str, str]:
        """Request id -> node id of every request to send now."""
        return self.solution.assignment

    @property
    def deferred(self) -> tuple[str, ...]:
        """Ids the service holds for the next window."""
        return self.solution.deferred

    @property
    def message(self) -> str:
        """The deciding solver's message (the in-process Decision's, unless a fallback
        decided: HTTP carries the fallback's solution only)."""
        return self.solution.message or ""


class ServiceClient:
    """Calls to one scheduling service.

    Parameters
    ----------
    base_url
        The service's address, e.g. ``http://127.0.0.1:8000``.
    token
        The bearer token, when the service has ``--token-file``.
    timeout_s
        Seconds to wait for an answer (a window takes up to the solver's time limit).
    """

    def __init__(self, base_url: str, *, token: str | None = None, timeout_s: float = 30.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)

    def decide(
        self,
        requests: Sequence[Request | Mapping[str, Any]],
        *,
        now: float | None = None,
        allow_deferral: bool = True,
    ) -> WindowDecision:
        """Decide the window closing now (``POST /v1/windows``); arrivals count from the
        window's start, as in an instance file."""
        body: dict[str, Any] = {
            "requests": [_plain(r) for r in requests],
            "allow_deferral": allow_deferral,
        }
        if now is not None:
            body["now"] = now
        answer = self._call("POST", "/v1/windows", body)
        data = answer.json()
        return WindowDecision(
            solution=Solution.model_validate(data),
            fallback=answer.headers.get("X-Qlmio-Fallback", ""),
            decision_s=float(answer.headers.get("X-Qlmio-Decision-Seconds", "0")),
            wait_s=float(answer.headers.get("X-Qlmio-Wait-Seconds", "0")),
            raw=data,
        )

    def complete(
        self,
        request_id: str,
        *,
        completed: bool = True,
        latency_s: float | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """Request ``request_id`` finished (``POST /v1/completions``)."""
        body: dict[str, Any] = {"id": request_id, "completed": completed}
        if latency_s is not None:
            body["latency_s"] = latency_s
        if output_tokens is not None:
            body["output_tokens"] = output_tokens
        self._call("POST", "/v1/completions", body)

    def observe(
        self, node_id: str, state: NodeState | Mapping[str, Any], *, now: float | None = None
    ) -> None:
        """Node ``node_id``'s engine reports its state (``POST /v1/nodes/{id}/state``)."""
        plain = state.model_dump(mode="json") if isinstance(state, NodeState) else dict(state)
        body: dict[str, Any] = {"state": plain}
        if now is not None:
            body["now"] = now
        self._call("POST", f"/v1/nodes/{node_id}/state", body)

    def submit(
        self,
        request: Request | Mapping[str, Any],
        *,
        now: float | None = None,
        wait_s: float | None = None,
    ) -> dict[str, Any]:
        """Windowing mode: post one request (``POST /v1/requests``; its ``arrival_s``, if any, is
        dropped: it arrives now). Its answer: ``"status": "dispatched"`` with its ``node``, or
        ``"waiting"`` when its window has not decided it within ``wait_s`` (then
        :meth:`answer` fetches it later)."""
        single = _plain(request)
        single.pop("arrival_s", None)
        body: dict[str, Any] = {"request": single}
        if now is not None:
            body["now"] = now
        if wait_s is not None:
            body["wait_s"] = wait_s
        return dict(self._call("POST", "/v1/requests", body).json())

    def answer(self, request_id: str, *, wait_s: float = 0.0) -> dict[str, Any]:
        """Windowing mode: a posted request's answer, waiting up to ``wait_s`` for its window
        (``GET /v1/requests/{id}``)."""
        return dict(self._call("GET", f"/v1/requests/{request_id}?wait_s={wait_s:g}").json())

    def tick(self, now: float) -> dict[str, Any]:
        """Windowing mode on the gateway's clock: it reads ``now``; the windows due close
        (``POST /v1/clock``)."""
        return dict(self._call("POST", "/v1/clock", {"now": now}).json())

    def state(self) -> dict[str, Any]:
        """Every node's load and the pending requests (``GET /v1/state``)."""
        return dict(self._call("GET", "/v1/state").json())

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "/healthz").json())

    def metrics(self) -> str:
        """The Prometheus text of ``GET /metrics``."""
        return self._call("GET", "/metrics").text

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        answer = self._http.request(method, path, json=body)
        if answer.status_code >= 400:
            try:
                problem = answer.json()
            except ValueError:
                problem = {"message": answer.text}
            raise ServiceError(
                answer.status_code, problem.get("message", ""), problem.get("issues", ())
            )
        return answer


class ServiceScheduler:
    """A scheduling service behind a :class:`~qlmio_opt.Scheduler`'s calls (``observe``,
    ``decide``, ``pending``, ``window_s``): code written for the in-process scheduler, such as
    the simulator's replay (its ``scheduler_for``), drives the service over HTTP instead.

    Parameters
    ----------
    client
        A client of the service.
    track_state
        Whether the caller reports the nodes' state (as the in-process scheduler's flag).
    """

    def __init__(self, client: ServiceClient, *, track_state: bool = True) -> None:
        self.client = client
        self.track_state = track_state
        self.window_s = float(client.health()["window_s"])
        self._pending: tuple[str, ...] = ()

    @property
    def pending(self) -> tuple[str, ...]:
        """Ids the service deferred in the last window (it holds them for the next)."""
        return self._pending

    def observe(self, node_id: str, state: NodeState | Mapping[str, Any], now: float) -> None:
        self.client.observe(node_id, state, now=now)

    def decide(
        self,
        requests: Iterable[Request | Mapping[str, Any]] = (),
        now: float = 0.0,
        *,
        allow_deferral: bool = True,
    ) -> WindowDecision:
        """Decide the window closing at ``now``; arrivals on the caller's clock, as
        :meth:`~qlmio_opt.Scheduler.decide` takes them (sent from the window's start)."""
        start = now - self.window_s
        window = []
        for request in requests:
            body = _plain(request)
            body["arrival_s"] = float(body["arrival_s"]) - start
            window.append(body)
        decision = self.client.decide(window, now=now, allow_deferral=allow_deferral)
        self._pending = decision.deferred
        return decision


def _plain(request: Request | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(request, Request):
        return request.model_dump(mode="json", exclude_unset=True)
    return dict(request)
