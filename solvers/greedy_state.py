"""The greedy solver's view of a window: arrays in a move-friendly form, and a mutable state.

A :class:`Window` recasts a :class:`~qlmio_opt.formulations.problem.Problem`. Column ``N`` is
deferral (cost ``delta``, ``inf`` when deferral is off), so an assignment is a column per
request. The capacity rows keep their structure, which makes every test a few ``(R, C)`` array
operations (``C = N + 1``):

* memory: request r holds ``memory[r, n]`` on node n only;
* bandwidth: request r puts ``upload[r]`` on every link of ``paths[site[r], n]``;
* quality floor: placing r on n adds ``gain[r, n] = Q[r, n] - T`` to a sum that must stay >= 0;
* congestion: node n costs ``congestion[n, m]`` (``kappa * E_n(m)``) with ``m`` requests.

:class:`State` keeps the loads, counts and objective of one assignment up to date move by move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qlmio_opt.formulations.problem import Problem

TOL = 1e-9


@dataclass(frozen=True)
class Window:
    """One problem's arrays in the form the greedy works on.

    Attributes
    ----------
    cost
        ``(R, C)`` pair cost, ``inf`` where not allowed; column ``N`` is deferral.
    memory, memory_cap
        ``(R, C)`` GB a request holds on its node; ``(C,)`` free GB (``inf``: no row).
    upload, site, paths, link_cap, links
        ``(R,)`` megabits; ``(R,)`` site index; ``(S, C, L)`` links crossed from each site to
        each column; ``(L,)`` capacities; ``(L,)`` index of each kept link in the problem.
        Only links that some set of requests could overload are kept.
    gain
        ``(R, C)`` ``Q - T`` under a quality floor, or None without one.
    congestion
        ``(N, R + 2)`` congestion cost ``kappa * E_n(m)`` for ``m = 0 .. R + 1``.
    crossing
        ``(R, C, L)`` 1.0 where request r's path to column c crosses link l.
    moves
        Cache of :meth:`link_moves`.
    lists
        The arrays as nested Python lists (:meth:`scalars`), for single-move arithmetic,
        which is several times faster on Python floats than on NumPy scalars.
    """

    cost: np.ndarray
    memory: np.ndarray
    memory_cap: np.ndarray
    upload: np.ndarray
    site: np.ndarray
    paths: np.ndarray
    link_cap: np.ndarray
    links: np.ndarray
    gain: np.ndarray | None
    congestion: np.ndarray
    crossing: np.ndarray | None = None
    moves: dict = field(default_factory=dict)
    lists: dict = field(default_factory=dict)

    @property
    def num_requests(self) -> int:
        return self.cost.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.cost.shape[1] - 1

    @property
    def defer(self) -> int:
        """The deferral column."""
        return self.cost.shape[1] - 1

    def link_moves(self, site: int, a: int, c: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The links a request from ``site`` starts and stops crossing moving from ``a`` to
        ``c`` (cached: single moves use them many times)."""
        key = (site, a, c)
        found = self.moves.get(key)
        if found is None:
            frm, to = self.paths[site, a], self.paths[site, c]
            found = (
                tuple(np.flatnonzero(to & ~frm).tolist()),
                tuple(np.flatnonzero(frm & ~to).tolist()),
            )
            self.moves[key] = found
        return found

    def scalars(self) -> dict:
        """Python-list copies of the arrays single moves read (made once, then cached)."""
        if not self.lists:
            self.lists.update(
                cost=self.cost.tolist(),
                memory=self.memory.tolist(),
                memory_cap=self.memory_cap.tolist(),
                upload=self.upload.tolist(),
                site=self.site.tolist(),
                link_cap=self.link_cap.tolist(),
                gain=None if self.gain is None else self.gain.tolist(),
                congestion=self.congestion.tolist(),
            )
        return self.lists

    @property
    def can_defer(self) -> bool:
        return bool(np.isfinite(self.cost[:, -1]).all())


def build_window(problem: Problem) -> Window:
    """Recast ``problem`` as a :class:`Window`, keeping only capacity rows that can bind."""
    num_r, num_n = problem.num_requests, problem.num_nodes
    allowed = problem.allowed
    cost = np.empty((num_r, num_n + 1))
    cost[:, :num_n] = problem.pair_cost()
    cost[:, num_n] = problem.deferral_cost()

    memory = np.zeros((num_r, num_n + 1))
    memory[:, :num_n] = np.where(allowed, problem.memory_gb, 0.0)
    memory_cap = np.full(num_n + 1, np.inf)
    binds = memory[:, :num_n].sum(axis=0) > problem.node_memory_gb + TOL
    memory_cap[:num_n] = np.where(binds, problem.node_memory_gb, np.inf)
    memory[:, ~np.isfinite(memory_cap)] = 0.0

    # a link can bind if the requests able to cross it upload more than it carries
    can_cross = (problem.route_links[problem.request_site] & allowed[:, :, None]).any(axis=1)
    worst = problem.upload_megabits @ can_cross if num_r else np.zeros(len(problem.link_ids))
    links = np.flatnonzero(worst > problem.link_capacity_megabits + TOL)
    paths = np.zeros((problem.route_links.shape[0], num_n + 1, len(links)), dtype=bool)
    paths[:, :num_n, :] = problem.route_links[:, :, links]

    gain = None
    if problem.quality_target is not None:
        gain = np.zeros((num_r, num_n + 1))
        gain[:, :num_n] = np.where(allowed, problem.quality - problem.quality_target, 0.0)

    counts = np.arange(num_r + 2)
    congestion = np.zeros((num_n, num_r + 2))
    for n, curve in enumerate(problem.congestion_curves):
        congestion[n] = problem.latency_cost_weight * np.asarray(curve(counts), dtype=float)
    return Window(
        cost=cost,
        memory=memory,
        memory_cap=memory_cap,
        upload=np.asarray(problem.upload_megabits, dtype=float),
        site=np.asarray(problem.request_site, dtype=np.int64),
        paths=paths,
        link_cap=np.asarray(problem.link_capacity_megabits[links], dtype=float),
        links=links,
        gain=gain,
        congestion=congestion,
        crossing=paths[problem.request_site].astype(float),
    )


class State:
    """An assignment (a column per request) with its loads, counts and objective.

    Single moves (:meth:`shift_delta`, :meth:`fits`, :meth:`shift`, ...) work on Python lists
    and floats; the NumPy views the move tables need (:attr:`counts`, :attr:`memory_load`,
    :attr:`link_load`) are built from them on demand.

    Parameters
    ----------
    window
        The problem arrays.
    columns
        Column per request; deferral is ``window.defer``.

    Attributes
    ----------
    value
        The objective, kept up to date by :meth:`shift` (``inf`` while a request sits on a
        forbidden column, e.g. deferred with deferral off).
    frozen
        Requests that searches must not move (set while a chain of moves is being built).
    """

    def __init__(self, window: Window, columns: np.ndarray) -> None:
        self.w = w = window
        self.s = window.scalars()
        self.defer = w.defer
        self.rows = np.arange(w.num_requests)
        self.columns = cols = np.asarray(columns, dtype=np.int64).copy()
        width = w.num_nodes + 1
        self._counts = np.bincount(cols, minlength=width).tolist()
        self._memory = np.bincount(cols, weights=w.memory[self.rows, cols], minlength=width)
        self._memory = self._memory.tolist()
        links = w.upload @ w.paths[w.site, cols] if len(cols) else np.zeros(len(w.links))
        self._links = links.tolist()
        self.quality_slack = 0.0 if w.gain is None else float(w.gain[self.rows, cols].sum())
        self.value = self.objective()
        self.frozen = np.zeros(w.num_requests, dtype=bool)

    @property
    def counts(self) -> np.ndarray:
        """``(C,)`` requests per column."""
        return np.array(self._counts)

    @property
    def memory_load(self) -> np.ndarray:
        """``(C,)`` GB held per column (0 where memory is unbounded)."""
        return np.array(self._memory)

    @property
    def link_load(self) -> np.ndarray:
        """``(L,)`` megabits per kept link."""
        return np.array(self._links, dtype=float)

    def copy(self) -> State:
        return State(self.w, self.columns)

    def objective(self) -> float:
        """Pair costs plus congestion, recomputed from scratch."""
        w = self.w
        pairs = w.cost[self.rows, self.columns].sum()
        counts = np.asarray(self._counts[:-1])
        return float(pairs + w.congestion[np.arange(w.num_nodes), counts].sum())

    def feasible(self) -> bool:
        """Whether every capacity holds."""
        cap = self.s["memory_cap"]
        if any(load > limit + TOL for load, limit in zip(self._memory, cap, strict=True)):
            return False
        link_cap = self.s["link_cap"]
        if any(load > limit + TOL for load, limit in zip(self._links, link_cap, strict=True)):
            return False
        return self.quality_slack >= -TOL

    def violations(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Overload of each memory column and each link, and the quality deficit (all >= 0)."""
        w = self.w
        memory = np.maximum(self.memory_load - w.memory_cap, 0.0)
        links = np.maximum(self.link_load - w.link_cap, 0.0)
        return memory, links, max(-self.quality_slack, 0.0)

    def marginals(self) -> tuple[np.ndarray, np.ndarray]:
        """``(C,)`` congestion cost of one more request, and saved by one fewer, per column."""
        w = self.w
        nodes = np.arange(w.num_nodes)
        m = np.asarray(self._counts[:-1])
        add = np.zeros(w.num_nodes + 1)
        remove = np.zeros(w.num_nodes + 1)
        add[:-1] = w.congestion[nodes, m + 1] - w.congestion[nodes, m]
        remove[:-1] = w.congestion[nodes, m] - w.congestion[nodes, np.maximum(m - 1, 0)]
        return add, remove

    def shift_delta(self, r: int, col: int) -> float:
        """Exact objective change of moving request ``r`` to column ``col``."""
        r, col = int(r), int(col)
        a = int(self.columns[r])
        if col == a:
            return 0.0
        cost = self.s["cost"][r]
        delta = cost[col] - cost[a]
        if a != self.defer:
            curve, m = self.s["congestion"][a], self._counts[a]
            delta -= curve[m] - curve[m - 1]
        if col != self.defer:
            curve, m = self.s["congestion"][col], self._counts[col]
            delta += curve[m + 1] - curve[m]
        return delta

    def fits(self, r: int, col: int, quality: bool = True) -> bool:
        """Whether moving ``r`` to ``col`` pushes no capacity over (or further over) its limit.

        With ``quality=False`` the quality floor is not checked.
        """
        r, col = int(r), int(col)
        a, s = int(self.columns[r]), self.s
        if col == a:
            return True
        if not s["cost"][r][col] < math.inf:
            return False
        if self._memory[col] + s["memory"][r][col] > s["memory_cap"][col] + TOL:
            return False
        gained = self.w.link_moves(s["site"][r], a, col)[0]
        if gained:
            upload, cap = s["upload"][r], s["link_cap"]
            for k in gained:
                if self._links[k] + upload > cap[k] + TOL:
                    return False
        if quality and s["gain"] is not None:
            gain = s["gain"][r]
            after = self.quality_slack + gain[col] - gain[a]
            return after >= min(self.quality_slack, 0.0) - TOL
        return True

    def overload_delta(self, r: int, col: int, memory_w, link_w, quality_w: float) -> float:
        """Change in weighted overload (weights per GB, per megabit, per unit of deficit) if
        request ``r`` moved to column ``col``."""
        r, col = int(r), int(col)
        a, s = int(self.columns[r]), self.s
        if col == a:
            return 0.0
        change = 0.0
        cap, memory = s["memory_cap"], s["memory"][r]
        if memory_w[a] and memory[a]:
            before = self._memory[a] - cap[a]
            change += memory_w[a] * (max(before - memory[a], 0.0) - max(before, 0.0))
        if memory_w[col] and memory[col]:
            before = self._memory[col] - cap[col]
            change += memory_w[col] * (max(before + memory[col], 0.0) - max(before, 0.0))
        gained, lost = self.w.link_moves(s["site"][r], a, col)
        if gained or lost:
            upload, link_cap = s["upload"][r], s["link_cap"]
            for k in gained:
                before = self._links[k] - link_cap[k]
                change += link_w[k] * (max(before + upload, 0.0) - max(before, 0.0))
            for k in lost:
                before = self._links[k] - link_cap[k]
                change += link_w[k] * (max(before - upload, 0.0) - max(before, 0.0))
        if quality_w and s["gain"] is not None:
            gain = s["gain"][r]
            after = self.quality_slack + gain[col] - gain[a]
            change += quality_w * (max(-after, 0.0) - max(-self.quality_slack, 0.0))
        return change

    def shift(self, r: int, col: int) -> None:
        """Move request ``r`` to column ``col``."""
        r, col = int(r), int(col)
        a, s = int(self.columns[r]), self.s
        if col == a:
            return
        finite = math.isfinite(self.value)
        if finite:
            self.value += self.shift_delta(r, col)
        self._counts[a] -= 1
        self._counts[col] += 1
        memory = s["memory"][r]
        self._memory[a] -= memory[a]
        self._memory[col] += memory[col]
        gained, lost = self.w.link_moves(s["site"][r], a, col)
        if gained or lost:
            upload = s["upload"][r]
            for k in gained:
                self._links[k] += upload
            for k in lost:
                self._links[k] -= upload
        if s["gain"] is not None:
            gain = s["gain"][r]
            self.quality_slack += gain[col] - gain[a]
        self.columns[r] = col
        if not (finite and math.isfinite(self.value)):
            self.value = self.objective()

    def restore(self, columns: np.ndarray) -> None:
        """Move every request whose column differs from ``columns`` back to it."""
        for r in np.flatnonzero(self.columns != columns):
            self.shift(r, columns[r])
