"""The service's Prometheus metrics, in a registry of its own (names prefixed ``qlmio_``).

Counters for events, gauges for state, histograms for times and predictions, as vLLM's and the
Prometheus client's conventions have it (units in the names, ``_total`` on counters).
"""

from __future__ import annotations

import collections
import copy
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

DECISION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Decision times: the greedy decides a window in milliseconds, the exact solver within its time
limit (``auto``: 1 s; docs/benchmarks.md), so the buckets run from 1 ms to 10 s."""

LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
"""Request latencies: the shipped windows' predicted means run from under a second on the edge
to tens of seconds on a loaded node (docs/results.md); doubling buckets cover both ends."""

QUALITY_BUCKETS = tuple(round(0.1 * k, 1) for k in range(1, 11))
"""Predicted quality is a probability: ten even buckets."""


class Metrics:
    """Every metric the service exports, updated by :class:`~.core.Service`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.windows = Counter("qlmio_windows", "Windows decided.", registry=r)
        self.requests = Counter(
            "qlmio_requests_dispatched",
            "Requests dispatched, by node and tier.",
            ["node", "tier"],
            registry=r,
        )
        self.deferrals = Counter(
            "qlmio_deferrals", "Requests deferred to the next window.", registry=r
        )
        self.decision = Histogram(
            "qlmio_decision_seconds",
            "Wall time of a window's decision (the Scheduler's decide).",
            buckets=DECISION_BUCKETS_S,
            registry=r,
        )
        self.latency = WindowHistogram(
            "qlmio_predicted_latency_seconds",
            "Predicted latency of each dispatched request.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.quality = WindowHistogram(
            "qlmio_predicted_quality",
            "Predicted quality of each dispatched request.",
            buckets=QUALITY_BUCKETS,
            registry=r,
        )
        self.status = Counter(
            "qlmio_solver_status",
            "Windows by the solver that decided them and its status.",
            ["solver", "status"],
            registry=r,
        )
        self.fallbacks = Counter(
            "qlmio_fallbacks", "Windows decided by a fallback, by reason.", ["reason"], registry=r
        )
        self.completions = Counter(
            "qlmio_completions",
            "Completions reported for requests in flight, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.observed_latency = Histogram(
            "qlmio_observed_latency_seconds",
            "Latency the gateway reported with a completion.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.observations = Counter(
            "qlmio_node_observations", "Node states reported.", ["node"], registry=r
        )
        self.refused = Counter(
            "qlmio_refused_calls",
            "Calls answered with an error, by status code.",
            ["code"],
            registry=r,
        )
        self.single_requests = Counter(
            "qlmio_single_requests",
            "Requests posted one at a time (POST /v1/requests) and collected into a window.",
            registry=r,
        )
        self.collected_windows = Counter(
            "qlmio_collected_windows",
            "Windows the service closed itself (windowing mode; counted in qlmio_windows too).",
            registry=r,
        )
        self.collected = Gauge(
            "qlmio_collected_requests",
            "Requests posted one at a time waiting for their window to close.",
            registry=r,
        )
        self.pending = Gauge("qlmio_pending_requests", "Deferred requests waiting.", registry=r)
        self.in_flight = Gauge(
            "qlmio_in_flight_requests",
            "Requests the scheduler counts as running or waiting on each node.",
            ["node"],
            registry=r,
        )

    def record_window(self, solution: Any, tiers: Mapping[str, str], decision_s: float) -> None:
        """Count one window's decision (``solution`` a :class:`~qlmio_opt.Solution`)."""
        self.windows.inc()
        self.decision.observe(decision_s)
        self.status.labels(solution.solver, solution.status.value).inc()
        self.deferrals.inc(len(solution.deferred))
        # one labelled increment per node, not per request: finding a label set is most of a
        # counter's cost, and a window sends many requests to few nodes
        sent = [d for d in solution.requests if d.node is not None]
        for node, count in collections.Counter(d.node for d in sent).items():
            self.requests.labels(node, tiers[node]).inc(count)
        self.latency.observe_all([d.latency_s for d in sent if d.latency_s is not None])
        self.quality.observe_all([d.quality for d in sent if d.quality is not None])

    def record_load(self, pending: int, in_flight: Mapping[str, int], collected: int = 0) -> None:
        self.pending.set(pending)
        self.collected.set(collected)
        for node, count in in_flight.items():
            self.in_flight.labels(node).set(count)

    def text(self, *, only: Collection[str] | None = None, without: Collection[str] = ()) -> bytes:
        """The Prometheus text exposition of every metric (or of those named ``only``, less
        those named ``without``: the names without ``_total``), without the ``_created``
        series."""
        return generate_latest(_WithoutCreated(self.registry, only, without))


class WindowHistogram:
    """A Prometheus histogram that counts a window's values in one call (prometheus_client's
    ``Histogram.observe`` takes one value, under a lock and a pass over the buckets each: most
    of counting a window of 100 requests). Exposed as the client's histograms are (cumulative
    ``_bucket{le}``, ``_count``, ``_sum``), without their ``_created``.

    Parameters
    ----------
    name, documentation
        As for ``prometheus_client.Histogram``.
    buckets
        The finite upper bounds, increasing (``+Inf`` is added).
    registry
        Where it is collected.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = np.asarray(buckets, dtype=float)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_all(self, values: Sequence[float]) -> None:
        """Count every value of ``values`` (a value equal to a bound is in that bound's bucket,
        as ``le`` says)."""
        if not values:
            return
        data = np.asarray(values, dtype=float)
        counts = np.bincount(
            np.searchsorted(self._bounds, data, side="left"), minlength=len(self._counts)
        )
        with self._lock:
            self._counts += counts
            for value in data.tolist():  # one at a time: the client's sum, to the last digit
                self._sum += value

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        bounds = [*(floatToGoString(b) for b in self._bounds), "+Inf"]
        buckets = [(le, float(c)) for le, c in zip(bounds, cumulative, strict=True)]
        yield HistogramMetricFamily(self.name, self.documentation, buckets, total)


class _WithoutCreated:
    """A registry's metrics less the ``_created`` sample the client adds to every counter and
    histogram (the time it was made: noise on a dashboard, and a series per label set). The
    client's own switch (``disable_created_metrics``) is global to the process, which a service
    run inside a gateway's own Python process must not change, so the samples are dropped
    here, for this registry only."""

    def __init__(
        self,
        registry: CollectorRegistry,
        only: Collection[str] | None = None,
        without: Collection[str] = (),
    ) -> None:
        self._registry = registry
        self._only = only
        self._without = without

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            if family.name in self._without or (
                self._only is not None and family.name not in self._only
            ):
                continue
            kept = copy.copy(family)
            created = f"{family.name}_created"
            kept.samples = [s for s in family.samples if s.name != created]
            yield kept
