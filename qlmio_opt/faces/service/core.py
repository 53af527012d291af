"""The service without HTTP: one :class:`~qlmio_opt.Scheduler` behind one lock, the service's
clock, validation with the command line's messages, the greedy fallback, metrics, the state
file, and windowing mode (requests posted one at a time, :mod:`.windowing`). :mod:`.app` puts it
on HTTP."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from qlmio_opt.app.scheduler import Decision, Scheduler
from qlmio_opt.domain.errors import InputError, Issue
from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.io import parse_json
from qlmio_opt.domain.solution import Status
from qlmio_opt.domain.validation import validate_model
from qlmio_opt.faces.service.bodies import (
    ClockBody,
    CompletionBody,
    NodeStateBody,
    RequestEnvelope,
    WindowEnvelope,
)
from qlmio_opt.faces.service.metrics import Metrics
from qlmio_opt.faces.service.state_file import restore_state, write_state
from qlmio_opt.faces.service.windowing import KEPT_ANSWERS, Collector, Watcher

M = TypeVar("M", bound=BaseModel)

WINDOWS = "windows posted whole (POST /v1/windows)"
SINGLE_ON_SERVICE_CLOCK = "requests posted one at a time on its own clock (calls without now)"
SINGLE_ON_GATEWAY_CLOCK = "requests posted one at a time on the gateway's clock (calls with now)"
"""A service's mode, fixed by its first deciding call: its windows come whole from the gateway or
are closed by the service, and a service closing windows keeps its clock or follows the
gateway's. Mixing them would decide windows out of time order."""


class Refused(Exception):
    """A call the service refuses: an HTTP status and the issues, as the command line says them."""

    def __init__(self, status: int, error: InputError, kind: str = "invalid input") -> None:
        super().__init__(error.render())
        self.status = status
        self.error = error
        self.kind = kind


@dataclass(frozen=True)
class WindowResult:
    """A decided window: the solution document (encoded as :func:`encode_json` does) and how it
    was reached."""

    document: bytes
    fallback: str
    decision_s: float
    wait_s: float  # waiting for the scheduler while other calls held it


class Service:
    """A site's scheduler served to many callers.

    Parameters
    ----------
    scheduler
        The site's scheduler (its solver, predictors and window).
    state_file
        Where the scheduler's state is kept (restored from it when it exists); None: nowhere.
    """

    def __init__(self, scheduler: Scheduler, state_file: Path | None = None) -> None:
        self.scheduler = scheduler
        self.state_file = state_file
        self.metrics = Metrics()
        self.site_name = scheduler.site.name
        self.solver_name = "auto" if scheduler.auto else scheduler.solver
        self._site = {k: v for k, v in scheduler.site.to_dict().items() if k != "requests"}
        self._tiers = {n.id: n.tier for n in scheduler.site.nodes}
        self._lock = threading.Lock()
        self.windows = 0  # decided by this process (the state's count goes on across restarts)
        windowing = restore_state(scheduler, state_file) if state_file is not None else None
        self.restored = windowing is not None
        last = scheduler.state_dict()["time_s"]
        self._last_now = -math.inf if last is None else float(last)
        self.collector = Collector(scheduler.window_s, self._tiers)
        if last is not None:  # restored: windows close after the last decided one, never before
            self.collector.last_closed = math.ceil(float(last) / scheduler.window_s) - 1
        self._mode: str | None = None
        if windowing:
            assert state_file is not None
            self._restore_windowing(windowing, state_file)
        # the service's clock starts at window_s (the first window is [0, window_s)) and goes on
        # from the last call's time after a restart
        self._clock_zero = time.monotonic() - max(self._last_now, scheduler.window_s)
        self._timer: threading.Thread | None = None
        self._stopping = threading.Event()
        if self._mode == SINGLE_ON_SERVICE_CLOCK and (
            self.collector.collected or scheduler.pending
        ):
            self._start_timer()  # what waited before the restart is decided on time

    # -- the calls -------------------------------------------------------------------------------
    def decide_window(self, body: bytes) -> WindowResult:
        """``POST /v1/windows``: decide the window closing now."""
        source = "POST /v1/windows"
        envelope = _validated(WindowEnvelope, body, source)
        raw = [dict(r) for r in envelope.requests]
        queued = time.perf_counter()
        with self._lock:
            wait_s = time.perf_counter() - queued
            self._enter_mode(WINDOWS, source)
            now = self._now(envelope.now, source)
            if now < self.scheduler.window_s:
                issue = Issue(
                    "now",
                    f"must be >= window_s = {self.scheduler.window_s:g} (the window "
                    f"[now - window_s, now) starts at 0 or later); got {now:g}",
                )
                raise Refused(422, InputError(issue, source))
            requests = self._on_scheduler_clock(raw, now)
            if requests is None:  # an arrival out of the window: the instance's rule says so
                self._refuse_window(raw, source)
            decision = self._decide(requests or [], raw, now, envelope.allow_deferral, source)
            self._last_now = now
            self.windows += 1
            self._after_change()
        fallback = self._count_window(decision)
        document = encode_json(decision.solution.to_dict())
        return WindowResult(document, fallback, decision.decision_s, wait_s)

    def submit_request(self, body: bytes) -> tuple[str, float]:
        """``POST /v1/requests``: collect one request into the window of its arrival (the time
        of the call); returns its id and how long the call may wait for its answer."""
        source = "POST /v1/requests"
        envelope = _validated(RequestEnvelope, body, source)
        raw = dict(envelope.request)
        if "arrival_s" in raw:
            issue = Issue(
                "request.arrival_s",
                "set by the service in windowing mode (the time of the call: now, or the "
                "service's clock); leave it out",
            )
            raise Refused(422, InputError(issue, source))
        self._check_single(raw, source)
        rid = str(raw["id"])
        gateway_clock = envelope.now is not None
        with self._lock:
            self._enter_mode(
                SINGLE_ON_GATEWAY_CLOCK if gateway_clock else SINGLE_ON_SERVICE_CLOCK, source
            )
            now = self._now(envelope.now, source)
            self._close_due(now)
            self._refuse_known_id(rid, source)
            self.collector.add(raw, now)
            self._last_now = now
            self._after_change()  # a posted request survives a restart
        self.metrics.single_requests.inc()
        if not gateway_clock:
            self._start_timer()
        return rid, envelope.wait_s

    def tick(self, body: bytes) -> dict[str, Any]:
        """``POST /v1/clock``: the gateway's clock reads ``now``; close every window due."""
        source = "POST /v1/clock"
        envelope = _validated(ClockBody, body, source)
        with self._lock:
            self._enter_mode(SINGLE_ON_GATEWAY_CLOCK, source)
            now = self._now(envelope.now, source)
            before = self.windows
            self._close_due(now)
            self._last_now = now
            self._after_change()  # the clock moved, even when no window closed
            closed, collected = self.windows - before, self.collector.collected
        return {"time_s": now, "windows": closed, "collected": collected}

    def request_answer(self, request_id: str) -> dict[str, Any]:
        """``GET /v1/requests/{id}``: the request's node, or that it still waits; 404 when the
        service does not know it."""
        with self._lock:
            answer = self.collector.answer(request_id, self._clock())
        if answer is None:
            issue = Issue(
                "id",
                f'request "{request_id}" is not known (never posted to POST /v1/requests, or '
                f"decided long ago: the last {KEPT_ANSWERS} answers are kept)",
            )
            raise Refused(
                404, InputError(issue, f"GET /v1/requests/{request_id}"), "unknown request"
            )
        return answer

    def watch_request(self, request_id: str, watcher: Watcher) -> Watcher | None:
        """Call ``watcher`` once the request is decided (see :meth:`.Collector.watch`)."""
        with self._lock:
            return self.collector.watch(request_id, watcher)

    def unwatch_request(self, request_id: str, watcher: Watcher) -> None:
        with self._lock:
            self.collector.unwatch(request_id, watcher)

    def stop(self) -> None:
        """Stop closing windows on the service's clock (at shutdown)."""
        self._stopping.set()
        if self._timer is not None:
            self._timer.join(timeout=5)

    def complete(self, body: bytes) -> dict[str, Any]:
        """``POST /v1/completions``: a dispatched request finished."""
        source = "POST /v1/completions"
        completion = _validated(CompletionBody, body, source)
        with self._lock:
            known = self.scheduler.complete(completion.id)
            if known:
                self._after_change()
        if not known:
            issue = Issue(
                "id",
                f'request "{completion.id}" is not in flight (never dispatched, already '
                "completed, or assumed finished after twice its predicted latency)",
            )
            raise Refused(404, InputError(issue, source), "unknown request")
        self.metrics.completions.labels("completed" if completion.completed else "failed").inc()
        if completion.latency_s is not None:
            self.metrics.observed_latency.observe(completion.latency_s)
        return {"id": completion.id, "in_flight": False}

    def observe(self, node_id: str, body: bytes) -> dict[str, Any]:
        """``POST /v1/nodes/{node_id}/state``: the node's engine reports its state."""
        source = f"POST /v1/nodes/{node_id}/state"
        if node_id not in self._tiers:
            issue = Issue(
                "node", f'unknown node "{node_id}"; the site has {", ".join(self._tiers)}'
            )
            raise Refused(404, InputError(issue, source), "unknown node")
        report = _validated(NodeStateBody, body, source)
        self._check_state_on_site(node_id, report.state.model_dump(mode="json"), source)
        with self._lock:
            now = self._now(report.now, source)
            self.scheduler.observe(node_id, report.state, now)
            self._last_now = max(self._last_now, now)
            self._after_change()
        self.metrics.observations.labels(node_id).inc()
        return {"node": node_id, "time_s": now}

    def state(self) -> dict[str, Any]:
        """``GET /v1/state``: every node as the next window would see it, and the pending."""
        with self._lock:
            now = self._clock()
            snapshot = self.scheduler.snapshot(now)
            collected = self.collector.collected
        nodes = [{**n, "state": snapshot["nodes"][n["id"]]} for n in self._site["nodes"]]
        held = Instance.from_dict(
            {**self._site, "nodes": nodes}, catalog=self.scheduler.site.resolved_catalog
        ).node_held_gb
        view = {}
        for k, node in enumerate(nodes):
            state = node["state"]
            view[node["id"]] = {
                "tier": node["tier"],
                "running": len(state["running"]),
                "waiting": len(state["waiting"]),
                "memory_gb": float(held[k]),
                "kv_used_gb": state["kv_used_gb"],
                "prefill_load": state["prefill_load"],
                "state": state,
            }
        return {
            "time_s": now,
            "windows": snapshot["windows"],
            "nodes": view,
            "pending": snapshot["pending"],
            "collected": collected,
        }

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "site": self.site_name,
            "solver": self.solver_name,
            "window_s": self.scheduler.window_s,
            "windows": self.windows,
        }

    def save(self) -> None:
        """Write the state file now (at shutdown; every change writes it too)."""
        if self.state_file is not None:
            with self._lock:
                write_state(self.scheduler, self.state_file, self._windowing_state())

    # -- the parts -------------------------------------------------------------------------------
    def _enter_mode(self, mode: str, source: str) -> None:
        """Fix the service's mode at its first deciding call; refuse (409) the other modes'."""
        if self._mode is None:
            self._mode = mode
        elif self._mode != mode:
            issue = Issue(
                "",
                f"this service decides {self._mode}; one mode per service (start another "
                "service for the other)",
            )
            raise Refused(409, InputError(issue, source), "wrong mode")

    def _check_single(self, raw: dict[str, Any], source: str) -> None:
        """Validate a single request as the site with it would be (the command line's
        messages, its path named ``request`` as in the body)."""
        try:
            Instance.from_dict(
                {**self._site, "requests": [{**raw, "arrival_s": 0.0}]},
                catalog=self.scheduler.site.resolved_catalog,
                source=source,
            )
        except InputError as error:
            issues = [
                Issue("request" + i.path.removeprefix("requests[0]"), i.message)
                if i.path.startswith("requests[0]")
                else i
                for i in error.issues
            ]
            raise Refused(422, InputError(issues, source)) from None

    def _refuse_known_id(self, request_id: str, source: str) -> None:
        """Refuse (422) an id that waits for a window or is in flight (called under the lock)."""
        if self.collector.waiting(request_id) or any(
            r.id == request_id for r in self.scheduler.pending
        ):
            where = "waiting for a window"
        elif self.scheduler.in_flight(request_id):
            where = "in flight"
        else:
            return
        issue = Issue("request.id", f'request "{request_id}" is already {where}')
        raise Refused(422, InputError(issue, source))

    def _close_due(self, now: float) -> None:
        """Decide every collected window that closes by ``now``, in order (under the lock)."""
        while (window := self.collector.due(now, bool(self.scheduler.pending))) is not None:
            self._close_window(window)

    def _close_window(self, window: int) -> None:
        close = self.collector.close_s(window)
        requests = self.collector.take(window)
        try:
            decision = self._decide(requests, requests, close, True, "window closing")
        except Exception as error:  # the window's callers hear it; the service carries on
            reason = error.error.render() if isinstance(error, Refused) else str(error)
            message = f"the window closing at {close:g} s could not be decided: {reason}"
            self.collector.fail(requests, close, message)
            self._after_change()
            return
        self._last_now = max(self._last_now, close)
        self.windows += 1
        self.collector.record(decision.solution, close)
        self._after_change()  # the scheduler's dispatches and the collector's record together
        self._count_window(decision, collected=True)

    def _start_timer(self) -> None:
        if self._timer is None:
            self._timer = threading.Thread(
                target=self._close_on_time, name="qlmio-windows", daemon=True
            )
            self._timer.start()

    def _close_on_time(self) -> None:
        """Close each window at its end on the service's clock, until :meth:`stop`."""
        while not self._stopping.wait(self._until_next_close()):
            with self._lock:
                self._close_due(self._clock())

    def _until_next_close(self) -> float:
        with self._lock:
            now = self._clock()
            if self.collector.due(now, bool(self.scheduler.pending)) is not None:
                return 0.0
            return max(self.collector.close_s(self.collector.window_of(now)) - now, 0.0)

    def _count_window(self, decision: Decision, collected: bool = False) -> str:
        """Count a decided window in the metrics; returns its fallback reason ('' for none)."""
        fallback = self._fallback_reason(decision)
        if fallback:
            self.metrics.fallbacks.labels(fallback).inc()
        self.metrics.record_window(decision.solution, self._tiers, decision.decision_s)
        if collected:
            self.metrics.collected_windows.inc()
        return fallback

    def _clock(self) -> float:
        return max(self._last_now, time.monotonic() - self._clock_zero, 0.0)

    def _now(self, given: float | None, source: str) -> float:
        now = self._clock() if given is None else given
        if now < self._last_now:
            issue = Issue("now", f"{now:g} is before the previous call's time {self._last_now:g}")
            raise Refused(409, InputError(issue, source), "out of time order")
        return now

    def _on_scheduler_clock(
        self, raw: list[dict[str, Any]], now: float
    ) -> list[dict[str, Any]] | None:
        """The requests with their arrivals on the scheduler's clock (they count from the
        window's start in the body); None when one is not a number within the window."""
        window_s = self.scheduler.window_s
        start = now - window_s
        out = []
        for request in raw:
            arrival = request.get("arrival_s")
            if not isinstance(arrival, int | float) or isinstance(arrival, bool):
                return None
            if not 0 <= arrival <= window_s:
                return None
            out.append({**request, "arrival_s": start + arrival})
        return out

    def _decide(
        self,
        requests: list[dict[str, Any]],
        raw: list[dict[str, Any]],
        now: float,
        allow_deferral: bool,
        source: str,
    ) -> Decision:
        try:
            return self.scheduler.decide(requests, now, allow_deferral=allow_deferral)
        except InputError as error:
            self._refuse_window(raw, source)  # the instance's own message, when it has one
            raise Refused(422, error.with_source(source)) from None
        except Exception:
            # a solver that fails must not take the service down: the greedy decides instead
            self.metrics.fallbacks.labels("solver error").inc()
            with _greedy(self.scheduler):
                return self.scheduler.decide(requests, now, allow_deferral=allow_deferral)

    def _refuse_window(self, raw: list[dict[str, Any]], source: str) -> None:
        """Validate the window as the instance file the command line would read (the site with
        these requests); raise its issues, if it has any."""
        try:
            Instance.from_dict(
                {**self._site, "requests": raw},
                catalog=self.scheduler.site.resolved_catalog,
                source=source,
            )
        except InputError as error:
            raise Refused(422, error) from None

    def _check_state_on_site(self, node_id: str, state: dict[str, Any], source: str) -> None:
        nodes = [{**n, "state": state} if n["id"] == node_id else n for n in self._site["nodes"]]
        try:
            Instance.from_dict(
                {**self._site, "nodes": nodes},
                catalog=self.scheduler.site.resolved_catalog,
                source=source,
            )
        except InputError as error:
            raise Refused(422, error) from None

    def _fallback_reason(self, decision: Decision) -> str:
        if decision.fallback == "greedy":
            # the solver's limit ended it without an assignment: the greedy answered
            return "time limit"
        if decision.fallback:
            return decision.fallback
        if decision.solution.status is Status.TIME_LIMIT:
            # the best assignment found in time (the exact solver starts from the greedy's)
            return "time limit"
        return ""

    def _after_change(self) -> None:
        """Keep the state file up to date (called under the lock)."""
        if self.state_file is not None:
            write_state(self.scheduler, self.state_file, self._windowing_state())

    def _windowing_state(self) -> dict[str, Any]:
        """The service's own part of the state file: its mode, the time of its last call and
        what windowing mode collected (see :meth:`.Collector.state_dict`)."""
        return {
            "mode": self._mode,
            "time_s": None if self._last_now == -math.inf else self._last_now,
            "collector": self.collector.state_dict(),
        }

    def _restore_windowing(self, data: dict[str, Any], source: Path) -> None:
        """Carry on from :meth:`_windowing_state`'s data, read from the state file ``source``;
        refused (naming the file) when it is malformed."""
        try:
            mode = data.get("mode")
            if mode not in (None, WINDOWS, SINGLE_ON_SERVICE_CLOCK, SINGLE_ON_GATEWAY_CLOCK):
                raise ValueError(f"unknown mode {mode!r}")
            time_s = data.get("time_s")
            last_now = -math.inf if time_s is None else float(time_s)
            if "collector" in data:
                waiting = {r.id for r in self.scheduler.pending}
                self.collector.load_state(data["collector"], waiting)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            problem = f"not a service state ({type(error).__name__}: {error})"
            raise InputError(Issue("windowing", problem), str(source)) from None
        self._mode = mode
        self._last_now = max(self._last_now, last_now)

    def metrics_text(self, without: Collection[str] = ()) -> bytes:
        """``GET /metrics``: the gauges of the nodes' load brought up to date (at a scrape, not
        at every call: counting what is in flight costs a pass over every record); the metrics
        named ``without`` left out (those a serving process counts itself)."""
        with self._lock:
            now = self._clock()
            in_flight = {}
            for node in self._tiers:
                state = self.scheduler.node_state(node, now)
                in_flight[node] = len(state.running) + len(state.waiting)
            pending = len(self.scheduler.pending)
            collected = self.collector.collected
        self.metrics.record_load(pending, in_flight, collected)
        return self.metrics.text(without=without)


def _validated(cls: type[M], body: bytes, source: str) -> M:
    """The body as a ``cls``; refused (400 or 422) with the command line's messages."""
    data = _parsed(body, source)
    try:
        return validate_model(cls, data, source=source)
    except InputError as error:
        raise Refused(422, error) from None


def _parsed(body: bytes, source: str) -> Any:
    """The body's JSON, with the rules (and the messages) of the command line's
    :func:`~qlmio_opt.domain.io.parse_json`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Refused(
            400, InputError(Issue("", f"not UTF-8 text ({error.reason})"), source)
        ) from None
    try:
        # parse_json finds repeated keys by walking the parsed document in Python, several
        # times the parse itself on a window's body; a dict that kept every pair has none
        return json.loads(text, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError, _RepeatedKey):
        pass  # parse_json says what is wrong, as the command line would
    try:
        return parse_json(text, source)
    except InputError as error:
        raise Refused(400, error, "malformed JSON") from None


class _RepeatedKey(Exception):
    """An object of the body repeats a key (parse_json then names where)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _RepeatedKey
    return out


def encode_json(document: Any) -> bytes:
    """``document`` as the bytes FastAPI's ``JSONResponse`` sends (compact UTF-8, NaN refused),
    encoded in the calling thread: a window's answer is encoded in its worker thread, not on the
    event loop every call shares."""
    return json.dumps(
        document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


@contextmanager
def _greedy(scheduler: Scheduler) -> Iterator[None]:
    """The scheduler deciding with the greedy for one call."""
    saved = scheduler.solver, scheduler.auto, scheduler.time_limit
    scheduler.solver, scheduler.auto, scheduler.time_limit = "greedy", False, None
    try:
        yield
    finally:
        scheduler.solver, scheduler.auto, scheduler.time_limit = saved
