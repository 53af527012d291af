"""``Scheduler``: window after window on one site, with the nodes' state carried between decisions.

:func:`~qlmio_opt.app.api.assign` decides one window and forgets it. A serving gateway decides a
window every few seconds, and each decision changes what the next one faces: the requests it
dispatched are still prefilling or decoding on their nodes, and the requests it deferred come
back. A :class:`Scheduler` holds the site (validated once), the solver and the predictors, and
carries between windows:

* the requests it deferred, each deferred at most ``max_deferrals`` times: a window holding a
  request at its cap is decided with deferral off;
* each node's live state as the formulation reads it (a
  :class:`~qlmio_opt.domain.instance.NodeState`): the last state observed from the node's engine
  (:meth:`Scheduler.observe`), plus what was dispatched to it since; without observations, its own
  record of what it dispatched and has not heard back about (:meth:`Scheduler.complete`), assumed
  finished once its predicted latency has passed twice over;
* each node's recent prefill load, an exponentially weighted rate of the prefill work it sent
  there (the look-ahead term of :mod:`qlmio_opt.domain.engine_load`).

Times are seconds on the caller's clock; a request's ``arrival_s`` is on that clock too, and its
``deadline_s`` counts from its arrival. The simulator's replay drives this same object.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qlmio_opt.app.solve import solve
from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.engine_load import prefill_work_s
from qlmio_opt.domain.errors import InputError, Issue
from qlmio_opt.domain.instance import InFlight, Instance, NodeState, Request
from qlmio_opt.domain.solution import RequestDecision, Solution, Status
from qlmio_opt.predictors import Predictor, get_predictor, predict

DEFAULT_MAX_DEFERRALS = 3
"""How often one request may be deferred. A deferral costs it a window (2 s in the replays), so
three bound the wait at 6 s, a fifth of the scenarios' 30 s deferral penalty. Chosen by hand."""

LOAD_HALF_LIFE_S = 6.0
"""Half-life of the prefill-load estimate: three 2 s windows, about a decode on a busy node in
the replays (docs/results.md). Chosen by hand, not tuned."""

EXPIRY_FACTOR = 2.0
"""Without a completion or an observation, a dispatched request is assumed finished once twice
its predicted latency has passed (the replays' exact policy predicted within 15-30%)."""


@dataclass(frozen=True)
class Decision:
    """What :meth:`Scheduler.decide` decided for one window.

    Attributes
    ----------
    instance
        The window as decided: its requests (arrivals and deadlines from the window's start),
        the nodes' state, deferral on or off.
    solution
        The window's solution (``qlmio-opt check`` accepts it with ``instance``).
    dispatched
        Request id -> node id of every request sent now.
    deferred
        Ids of the requests carried to the next window.
    fallback
        Empty when the solver decided; else which fallback did: ``"greedy"`` when the solver's
        time limit ended it without an assignment (the greedy answers within what is left, at
        least with its first construction), or, when no assignment exists, the solver without
        per-request floors and deadlines, the greedy without them, or every request on its
        fastest node.
    message
        The solver's own message (why it found no assignment, when it did not).
    decision_s
        Wall time of the decision.
    """

    instance: Instance
    solution: Solution
    dispatched: Mapping[str, str]
    deferred: tuple[str, ...]
    fallback: str = ""
    message: str = ""
    decision_s: float = 0.0


@dataclass
class _Sent:
    """A request the scheduler dispatched and has not heard back about."""

    item: InFlight
    sent_s: float
    expires_s: float
    prefill_s: float


@dataclass
class _Pending:
    request: Request
    deferrals: int = 0


@dataclass
class _NodeRecord:
    observed: NodeState | None = None
    observed_s: float = -math.inf
    sent: dict[str, _Sent] = field(default_factory=dict)
    load: float = 0.0  # prefill seconds per second, as of load_s
    load_s: float = 0.0


class Scheduler:
    """Decide a site's windows one after another (see the module docstring).

    Parameters
    ----------
    site
        The nodes, network and objective: an :class:`Instance` (its requests are ignored) or a
        mapping in the instance format without ``requests``.
    solver
        A registered solver name, or ``"auto"`` (exact within ``time_limit``, default 1 s,
        warm-started from the greedy).
    predictors
        ``"analytic"``, ``"learned"``, a model path, or a fitted predictor object.
    window_s
        Window length; default the site's ``window_s`` (else 2 s).
    time_limit
        Seconds per window for the solver.
    seed
        Seed of randomised solvers.
    max_deferrals
        How often one request may be deferred.
    track_state
        Whether windows see the nodes' state; when false every window is decided as if the nodes
        were idle (an ablation).
    look_ahead
        Whether windows see each node's recent prefill load (``NodeState.prefill_load``), under
        which the window's requests will decode.
    """

    def __init__(
        self,
        site: Instance | Mapping[str, Any],
        *,
        solver: str = "auto",
        predictors: str | Predictor = "analytic",
        window_s: float | None = None,
        time_limit: float | None = None,
        seed: int = 0,
        max_deferrals: int = DEFAULT_MAX_DEFERRALS,
        track_state: bool = True,
        look_ahead: bool = True,
        catalog: Catalog | None = None,
    ) -> None:
        from qlmio_opt.app.api import AUTO_TIME_LIMIT_S

        if max_deferrals < 0:
            raise ValueError(f"max_deferrals must be >= 0; got {max_deferrals}")
        base = site.to_dict() if isinstance(site, Instance) else dict(site)
        base.pop("requests", None)
        base.pop("overrides", None)
        base.setdefault("name", "window")
        base["window_s"] = window_s or base.get("window_s") or 2.0
        cat = catalog or (site.resolved_catalog if isinstance(site, Instance) else None)
        self.site = Instance.from_dict(base, catalog=cat, source="Scheduler site")
        self.solver = "exact" if solver == "auto" else solver
        self.auto = solver == "auto"
        self.predictor = get_predictor(predictors) if isinstance(predictors, str) else predictors
        self.time_limit = AUTO_TIME_LIMIT_S if time_limit is None and self.auto else time_limit
        self.seed = seed
        self.max_deferrals = max_deferrals
        self.track_state = track_state
        self.look_ahead = look_ahead
        self._base = {k: v for k, v in self.site.to_dict().items() if k != "name"}
        self._nodes = {n.id: _NodeRecord() for n in self.site.nodes}
        self._pending: dict[str, _Pending] = {}
        self._where: dict[str, str] = {}  # request id -> node id, while in flight
        self._windows = 0
        self._now = -math.inf

    # -- what the scheduler holds ---------------------------------------------------------------
    @property
    def window_s(self) -> float:
        return self.site.window_s

    @property
    def pending(self) -> tuple[Request, ...]:
        """The deferred requests waiting for the next window, oldest first."""
        return tuple(p.request for p in self._pending.values())

    def in_flight(self, request_id: str) -> bool:
        """Whether the request was dispatched and is still counted on its node."""
        return request_id in self._where

    def deferrals(self, request_id: str) -> int:
        """How often a pending request has been deferred (0 when it is not pending)."""
        pending = self._pending.get(request_id)
        return pending.deferrals if pending else 0

    def node_state(self, node_id: str, now: float) -> NodeState:
        """Node ``node_id``'s state as the next window at ``now`` would see it."""
        record = self._record(node_id)
        self._expire(record, now)
        sent = list(record.sent.values())
        if record.observed is not None:
            running = list(record.observed.running)
            waiting = [*record.observed.waiting, *(s.item for s in sent)]
            kv = record.observed.kv_used_gb
        else:
            # dispatched within the last window: still queued; earlier: decoding
            running = [_decoding(s.item) for s in sent if now - s.sent_s >= self.window_s]
            waiting = [s.item for s in sent if now - s.sent_s < self.window_s]
            kv = None
        return NodeState(
            running=tuple(running),
            waiting=tuple(waiting),
            kv_used_gb=kv,
            prefill_load=float(self._load(record, now)) if self.look_ahead else None,
        )

    def snapshot(self, now: float) -> dict[str, Any]:
        """Plain data: every node's state at ``now`` and the pending requests."""
        return {
            "time_s": now,
            "windows": self._windows,
            "nodes": {
                node: self.node_state(node, now).model_dump(mode="json") for node in self._nodes
            },
            "pending": [
                {"id": p.request.id, "deferrals": p.deferrals} for p in self._pending.values()
            ],
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything the scheduler carries between windows, as plain JSON-ready data (the
        inverse of :meth:`load_state`; the scheduling service's state file holds it)."""
        return {
            "time_s": None if self._now == -math.inf else self._now,
            "windows": self._windows,
            "pending": [
                {
                    "request": p.request.model_dump(mode="json", exclude_unset=True),
                    "deferrals": p.deferrals,
                }
                for p in self._pending.values()
            ],
            "nodes": {node: _record_dict(record) for node, record in self._nodes.items()},
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Carry on from :meth:`state_dict`'s data, taken from a scheduler of the same site.

        Raises
        ------
        InputError
            When the data is malformed or names a node the site does not have (nothing is
            changed then).
        """
        try:
            pending = {
                p["request"]["id"]: _Pending(
                    Request.model_validate(p["request"]), int(p["deferrals"])
                )
                for p in data["pending"]
            }
            nodes = {node: _record_from(raw) for node, raw in data["nodes"].items()}
            windows = int(data["windows"])
            now = -math.inf if data["time_s"] is None else float(data["time_s"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            # pydantic's ValidationError is a ValueError
            problem = f"not a scheduler state ({type(error).__name__}: {error})"
            raise InputError(Issue("state", problem), "Scheduler.load_state") from None
        if set(nodes) != set(self._nodes):
            raise InputError(
                Issue(
                    "state.nodes", f"nodes {sorted(nodes)} are not the site's {sorted(self._nodes)}"
                ),
                "Scheduler.load_state",
            )
        self._pending = pending
        self._nodes = nodes
        self._where = {rid: node for node, record in nodes.items() for rid in record.sent}
        self._windows = windows
        self._now = now

    # -- what the caller reports ----------------------------------------------------------------
    def observe(self, node_id: str, state: NodeState | Mapping[str, Any], now: float) -> None:
        """The node's engine reports its state at ``now``: it replaces the scheduler's record of
        what it sent there up to ``now`` (requests it sent later are added on top)."""
        record = self._record(node_id)
        if not isinstance(state, NodeState):
            state = _validated_state(state, node_id)
        record.observed = state
        record.observed_s = now
        for rid in [r for r, s in record.sent.items() if s.sent_s <= now]:
            del record.sent[rid]
            self._where.pop(rid, None)

    def complete(self, request_id: str) -> bool:
        """Request ``request_id`` finished; returns whether the scheduler knew it was in
        flight."""
        node = self._where.pop(request_id, None)
        if node is None:
            return False
        self._nodes[node].sent.pop(request_id, None)
        return True

    # -- deciding a window ----------------------------------------------------------------------
    def decide(
        self,
        requests: Iterable[Request | Mapping[str, Any]] = (),
        now: float = 0.0,
        *,
        allow_deferral: bool = True,
    ) -> Decision:
        """Decide the window closing at ``now``: the new ``requests`` (arrived in
        ``[now - window_s, now)``, or earlier) and the pending ones; dispatch or defer each.

        Raises
        ------
        InputError
            When a request is invalid or its id is already pending or in flight (naming it).
        ValueError
            When ``now`` is earlier than the previous window's.
        """
        if now < self._now:
            raise ValueError(f"windows must be decided in time order: {now} after {self._now}")
        start = time.perf_counter()
        new = [self._request(r, k) for k, r in enumerate(requests)]
        window = [*(p.request for p in self._pending.values()), *new]
        capped = any(p.deferrals >= self.max_deferrals for p in self._pending.values())
        defer = allow_deferral and not capped
        instance = self._window_instance(window, now, defer)
        solution, fallback, message = self._solve(instance)
        self._now = now
        self._windows += 1
        for request in new:
            self._pending[request.id] = _Pending(request)
        dispatched = dict(solution.assignment)
        for decision in solution.requests:
            if decision.node is not None:
                self._dispatch(self._pending.pop(decision.request).request, decision, now)
        deferred = tuple(rid for rid in self._pending)
        for rid in deferred:
            self._pending[rid].deferrals += 1
        return Decision(
            instance=instance,
            solution=solution,
            dispatched=dispatched,
            deferred=deferred,
            fallback=fallback,
            message=message,
            decision_s=time.perf_counter() - start,
        )

    def _request(self, raw: Request | Mapping[str, Any], k: int) -> Request:
        body = raw.model_dump(mode="json", exclude_unset=True) if isinstance(raw, Request) else raw
        try:
            request = Request.model_validate(body)
        except Exception as error:  # pydantic's ValidationError, as one InputError
            raise InputError(Issue(f"requests[{k}]", str(error)), "Scheduler.decide") from None
        if request.id in self._pending or request.id in self._where:
            where = "pending" if request.id in self._pending else "in flight"
            raise InputError(
                Issue(f"requests[{k}].id", f'request "{request.id}" is already {where}'),
                "Scheduler.decide",
            )
        return request

    def _window_instance(self, window: list[Request], now: float, defer: bool) -> Instance:
        start = now - self.window_s
        data = dict(self._base)
        data["name"] = f"window_{self._windows}"
        data["requests"] = [_window_body(r, start, self.window_s) for r in window]
        if not defer:
            data["objective"] = {**data["objective"], "deferral_penalty_s": None}
        if self.track_state:
            data["nodes"] = [
                {**node, "state": self.node_state(node["id"], now).model_dump(mode="json")}
                for node in data["nodes"]
            ]
        return Instance.from_dict(data, catalog=self.site.resolved_catalog, source="Scheduler")

    def _solve(self, instance: Instance) -> tuple[Solution, str, str]:
        """The solver's solution, or a fallback's when it has none (see :class:`Decision`)."""
        solution = self._run(instance, self.solver)
        message = solution.message or ""
        handed_over = solution.solver == "greedy" and _solver_name(self.solver) != "greedy"
        if solution.assignment or solution.deferred or not instance.requests:
            return solution, "greedy" if handed_over else "", message
        relaxed = _without_floors_and_deadlines(instance)
        for name in dict.fromkeys((self.solver, "greedy")):
            sol = self._run(relaxed, name)
            if sol.assignment or sol.deferred:
                return sol, f"{name} without floors and deadlines", message
        return _fastest_nodes(instance, self.predictor), "fastest node", message

    def _run(self, instance: Instance, solver: str) -> Solution:
        # a solver that the limit stops without an assignment hands over to the greedy, which
        # answers at least with its first construction (solve's fallback)
        return solve(
            instance,
            solver,
            predictors=self.predictor,
            time_limit=self.time_limit,
            seed=self.seed,
            fallback=None if solver == "greedy" else "greedy",
        )

    def _dispatch(self, request: Request, decision: RequestDecision, now: float) -> None:
        node_id = decision.node
        assert node_id is not None
        node = next(n for n in self.site.nodes if n.id == node_id)
        catalog = self.site.resolved_catalog
        model, device = catalog.model(node.model), catalog.device(node.device)
        image_tokens = sum(model.image_tokens.tokens(i.width, i.height) for i in request.images)
        item = InFlight(
            task=request.task,
            prompt_tokens=request.prompt_tokens,
            image_tokens=image_tokens,
            max_output_tokens=request.max_output_tokens,
        )
        latency = decision.latency_s if decision.latency_s is not None else self.window_s
        record = self._nodes[node_id]
        work = prefill_work_s(item, model, device)
        record.load = self._load(record, now) + work * math.log(2) / LOAD_HALF_LIFE_S
        record.load_s = now
        record.sent[request.id] = _Sent(item, now, now + EXPIRY_FACTOR * latency, work)
        self._where[request.id] = node_id

    def _load(self, record: _NodeRecord, now: float) -> float:
        """The node's prefill load at ``now``: every dispatch's work weighted by
        ``ln 2 / h * 2^(-age / h)`` (a rate estimate, in seconds of work per second)."""
        return record.load * 2.0 ** (-max(now - record.load_s, 0.0) / LOAD_HALF_LIFE_S)

    def _expire(self, record: _NodeRecord, now: float) -> None:
        for rid in [r for r, s in record.sent.items() if s.expires_s <= now]:
            del record.sent[rid]
            self._where.pop(rid, None)

    def _record(self, node_id: str) -> _NodeRecord:
        record = self._nodes.get(node_id)
        if record is None:
            raise InputError(
                Issue("node", f'unknown node "{node_id}"; the site has {", ".join(self._nodes)}'),
                "Scheduler",
            )
        return record


def _record_dict(record: _NodeRecord) -> dict[str, Any]:
    observed = record.observed
    return {
        "observed": None if observed is None else observed.model_dump(mode="json"),
        "observed_s": None if record.observed_s == -math.inf else record.observed_s,
        "sent": {
            rid: {
                "item": s.item.model_dump(mode="json"),
                "sent_s": s.sent_s,
                "expires_s": s.expires_s,
                "prefill_s": s.prefill_s,
            }
            for rid, s in record.sent.items()
        },
        "load": record.load,
        "load_s": record.load_s,
    }


def _record_from(raw: Mapping[str, Any]) -> _NodeRecord:
    observed = raw["observed"]
    return _NodeRecord(
        observed=None if observed is None else NodeState.model_validate(observed),
        observed_s=-math.inf if raw["observed_s"] is None else float(raw["observed_s"]),
        sent={
            rid: _Sent(
                InFlight.model_validate(s["item"]),
                float(s["sent_s"]),
                float(s["expires_s"]),
                float(s["prefill_s"]),
            )
            for rid, s in raw["sent"].items()
        },
        load=float(raw["load"]),
        load_s=float(raw["load_s"]),
    )


def _decoding(item: InFlight) -> InFlight:
    """``item`` once it decodes (one output token: its prefill is done)."""
    return item.model_copy(update={"output_tokens": min(1, item.max_output_tokens - 1)})


def _validated_state(state: Mapping[str, Any], node_id: str) -> NodeState:
    try:
        return NodeState.model_validate(state)
    except Exception as error:
        raise InputError(Issue(f"nodes.{node_id}.state", str(error)), "Scheduler.observe") from None


def _window_body(request: Request, start: float, window_s: float) -> dict[str, Any]:
    """``request`` in the window ``[start, start + window_s)``: arrival from the window's start
    (0 for a request that arrived before it), deadline from that arrival."""
    body = request.model_dump(mode="json", exclude_unset=True)
    waited = start - request.arrival_s
    if waited > 0:
        body["arrival_s"] = 0.0
        if request.deadline_s is not None:
            left = request.deadline_s - waited
            if left > 0:
                body["deadline_s"] = left
            else:
                del body["deadline_s"]
    else:
        body["arrival_s"] = min(float(-waited), window_s)
    return body


def _without_floors_and_deadlines(instance: Instance) -> Instance:
    return instance.replace(
        requests=[
            {
                k: v
                for k, v in r.model_dump(mode="json", exclude_unset=True).items()
                if k not in ("min_quality", "deadline_s")
            }
            for r in instance.requests
        ]
    )


def _fastest_nodes(instance: Instance, predictor: Predictor) -> Solution:
    """Every request on its fastest reachable node by the predictions, capacities ignored."""
    predictions = predict(instance, predictor)
    fastest = np.argmin(np.where(predictions.eligible, predictions.latency_s, np.inf), axis=1)
    decisions = []
    assignment = {}
    for i, (r, n) in enumerate(zip(instance.requests, fastest, strict=True)):
        node_id = instance.nodes[n].id
        assignment[r.id] = node_id
        decisions.append(
            RequestDecision(
                request=r.id,
                node=node_id,
                quality=float(predictions.quality[i, n]),
                latency_s=float(predictions.latency_s[i, n]),
            )
        )
    return Solution(
        instance=instance.name,
        solver="fastest-node",
        predictors=predictions.source,
        status=Status.FEASIBLE,
        message="no feasible assignment: every request sent to its fastest reachable node",
        assignment=assignment,
        requests=tuple(decisions),
    )


def _solver_name(solver: str | Any) -> str:
    """A solver's registered name, whether given by name or as an object."""
    return solver if isinstance(solver, str) else str(getattr(solver, "name", solver))
