"""Windowing mode: requests posted one at a time, collected into the windows ``[k w, (k + 1) w)``
of their arrival on the scheduler's clock, each window decided at its close, and each request
answered with its node once a window dispatches it (docs/service.md).

:class:`Collector` is the bookkeeping only (which window a request waits in, which window is due,
the answers); :class:`~.core.Service` holds it under its lock and decides the windows.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

KEPT_ANSWERS = 10_000
"""Answers kept for ``GET /v1/requests/{id}``, the most recent first to stay: a gateway fetches an
answer within seconds of its window's close, and at a window of 100 requests every 2 s (the shipped
sites' scale, docs/results.md) this keeps the last ~3 minutes, in a few MB."""

Watcher = Callable[[], None]


class Collector:
    """The windows being collected and the answers of the requests posted one at a time.

    Parameters
    ----------
    window_s
        The window length; window ``k`` holds arrivals in ``[k window_s, (k + 1) window_s)``
        and closes at ``(k + 1) window_s``.
    tiers
        Node id -> tier (the answers name both).
    """

    def __init__(self, window_s: float, tiers: Mapping[str, str]) -> None:
        self.window_s = window_s
        self._tiers = dict(tiers)
        self._open: dict[int, list[dict[str, Any]]] = {}  # window -> requests, arrival order
        self._arrival: dict[str, float] = {}  # posted, not yet dispatched: id -> arrival
        self._deferrals: dict[str, int] = {}
        self._answers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._watchers: dict[str, list[Watcher]] = {}
        self.last_closed = -1  # the last window closed (decided or skipped as empty)

    # -- windows --------------------------------------------------------------------------------
    def window_of(self, time_s: float) -> int:
        return math.floor(time_s / self.window_s)

    def close_s(self, window: int) -> float:
        return (window + 1) * self.window_s

    def add(self, request: Mapping[str, Any], arrival_s: float) -> int:
        """Collect ``request`` (without ``arrival_s``) arriving at ``arrival_s``; its window."""
        window = max(self.window_of(arrival_s), self.last_closed + 1)
        self._open.setdefault(window, []).append({**request, "arrival_s": arrival_s})
        rid = str(request["id"])
        self._arrival[rid] = arrival_s
        self._answers.pop(rid, None)  # an id used again, after its earlier request completed
        return window

    def due(self, now: float, pending: bool) -> int | None:
        """The next window to close by ``now``, or None. With requests ``pending`` (deferred)
        every window closes in turn; otherwise empty windows are skipped."""
        if pending:
            window = self.last_closed + 1
        elif self._open:
            window = min(self._open)
        else:
            return None
        return window if self.close_s(window) <= now else None

    def take(self, window: int) -> list[dict[str, Any]]:
        """Close ``window``: its requests, arrivals on the scheduler's clock."""
        self.last_closed = window
        return self._open.pop(window, [])

    def next_close_s(self, now: float) -> float:
        """When the window collecting arrivals at ``now`` closes."""
        return self.close_s(max(self.window_of(now), self.last_closed + 1))

    @property
    def collected(self) -> int:
        """Requests waiting for their window to close."""
        return sum(len(w) for w in self._open.values())

    # -- the state file -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What waits for a window, as JSON-ready data (the inverse of :meth:`load_state`): the
        requests collected for windows not yet closed, and the arrival and deferrals of every
        request posted and not yet dispatched. The answers are left out: a decided request's
        answer is kept to be fetched, not to be decided again, and rewriting up to
        ``KEPT_ANSWERS`` of them at every call would cost more than the call."""
        return {
            "last_closed": self.last_closed,
            "open": [[window, requests] for window, requests in self._open.items()],
            "arrival": dict(self._arrival),
            "deferrals": dict(self._deferrals),
        }

    def load_state(self, data: Mapping[str, Any], waiting_ids: set[str]) -> None:
        """Carry on from :meth:`state_dict`'s data; of the requests it says are waiting, only
        those collected in it or in ``waiting_ids`` (the scheduler's deferred ones) are kept.

        Raises
        ------
        KeyError, TypeError, ValueError
            When the data is malformed (nothing is changed then).
        """
        last_closed = int(data["last_closed"])
        open_windows = {int(w): [dict(r) for r in requests] for w, requests in data["open"]}
        collected = {str(r["id"]) for requests in open_windows.values() for r in requests}
        kept = collected | waiting_ids
        arrival = {str(k): float(v) for k, v in data["arrival"].items() if k in kept}
        deferrals = {str(k): int(v) for k, v in data["deferrals"].items() if k in kept}
        self.last_closed = last_closed
        self._open = open_windows
        self._arrival = arrival
        self._deferrals = deferrals

    # -- answers --------------------------------------------------------------------------------
    def waiting(self, request_id: str) -> bool:
        """Posted and not yet dispatched (collected, or deferred by a window)."""
        return request_id in self._arrival

    def knows(self, request_id: str) -> bool:
        return request_id in self._arrival or request_id in self._answers

    def record(self, solution: Any, close_s: float) -> None:
        """The answers of a window decided at ``close_s`` (``solution`` a
        :class:`~qlmio_opt.Solution`): a node for each dispatched request; a deferred one waits
        for a later window."""
        for decision in solution.requests:
            rid = decision.request
            if decision.node is None:
                self._deferrals[rid] = self._deferrals.get(rid, 0) + 1
                continue
            self._answer(
                {
                    "id": rid,
                    "status": "dispatched",
                    "node": decision.node,
                    "tier": self._tiers[decision.node],
                    "arrival_s": self._arrival.pop(rid, None),
                    "decided_s": close_s,
                    "deferrals": self._deferrals.pop(rid, 0),
                    "latency_s": decision.latency_s,
                    "quality": decision.quality,
                }
            )

    def fail(self, requests: list[dict[str, Any]], close_s: float, message: str) -> None:
        """The window closing at ``close_s`` could not be decided: its requests are answered
        with ``message``."""
        for request in requests:
            rid = str(request["id"])
            self._deferrals.pop(rid, None)
            self._answer(
                {
                    "id": rid,
                    "status": "failed",
                    "arrival_s": self._arrival.pop(rid, None),
                    "decided_s": close_s,
                    "message": message,
                }
            )

    def answer(self, request_id: str, now: float) -> dict[str, Any] | None:
        """The request's answer: decided, or still waiting (with the close of the window it
        waits for); None when the service does not know it."""
        if request_id in self._answers:
            return self._answers[request_id]
        if request_id in self._arrival:
            return {
                "id": request_id,
                "status": "waiting",
                "arrival_s": self._arrival[request_id],
                "deferrals": self._deferrals.get(request_id, 0),
                "closes_s": self.next_close_s(now),
            }
        return None

    def watch(self, request_id: str, watcher: Watcher) -> Watcher | None:
        """Call ``watcher`` once the request is decided (now, when it is); returns the handle
        :meth:`unwatch` takes, or None when it was called at once."""
        if request_id in self._answers or request_id not in self._arrival:
            watcher()
            return None
        self._watchers.setdefault(request_id, []).append(watcher)
        return watcher

    def unwatch(self, request_id: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(request_id, [])
        if watcher in watchers:
            watchers.remove(watcher)
        if not watchers:
            self._watchers.pop(request_id, None)

    def _answer(self, answer: dict[str, Any]) -> None:
        rid = answer["id"]
        self._answers[rid] = answer
        self._answers.move_to_end(rid)
        while len(self._answers) > KEPT_ANSWERS:
            self._answers.popitem(last=False)
        for watcher in self._watchers.pop(rid, []):
            watcher()
