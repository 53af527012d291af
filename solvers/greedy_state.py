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
    finite
        ``(R, C)`` whether each pair is allowed (``cost < inf``).
    gained
        ``(S, C, C, L)`` whether a request from site s starts crossing link l when it moves
        from column a to column c.
    max_memory
        ``(C,)`` the most memory one request holds on each column.
    moves
        Cache of :meth:`link_moves`.
    lists
        The arrays as nested Python lists (:meth:`scalars`), for single-move arithmetic,
        which is several times faster on Python floats than on NumPy scalars; also the table
        of :meth:`move_table` and other per-window values the searches compute once.
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
    finite: np.ndarray | None = None
    gained: np.ndarray | None = None
    max_memory: np.ndarray | None = None
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

    def move_table(self) -> list:
        """``[site][a][c]``: :meth:`link_moves` for a site and a pair of columns, or None until
        first asked (one table per window)."""
        table = self.lists.get("moves")
        if table is None:
            width = self.cost.shape[1]
            table = [[[None] * width for _ in range(width)] for _ in range(self.paths.shape[0])]
            self.lists["moves"] = table
        return table

    def scalars(self) -> dict:
        """Python-list copies of the arrays single moves read (made once, then cached)."""
        if "cost" not in self.lists:
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
        finite=np.isfinite(cost),
        gained=paths[:, None, :, :] & ~paths[:, :, None, :],
        max_memory=memory.max(axis=0, initial=0.0),
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
    shifts, settled
        Shifts made so far, and their number when a descent last found no improving move (a
        descent from an unmoved state is skipped).
    """

    def __init__(self, window: Window, columns: np.ndarray) -> None:
        self.w = w = window
        self.s = s = window.scalars()
        # the lists single moves read, as attributes (faster than the dictionary)
        self._cost, self._mem, self._mem_cap = s["cost"], s["memory"], s["memory_cap"]
        self._upload, self._site, self._link_cap = s["upload"], s["site"], s["link_cap"]
        self._gain, self._moves = s["gain"], window.move_table()
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
        self.shifts = 0  # shifts made so far
        self.settled = -1  # ``shifts`` when a descent last ended without an improving move
        # congestion cost of one more / one fewer request per column (0 on deferral)
        self._add = [0.0] * width
        self._remove = [0.0] * width
        for n in range(w.num_nodes):
            self._marginal(n)

    def _marginal(self, n: int) -> None:
        """Refresh the congestion marginals of node ``n`` from its count."""
        curve, m = self.s["congestion"][n], self._counts[n]
        self._add[n] = curve[m + 1] - curve[m]
        self._remove[n] = curve[m] - curve[max(m - 1, 0)]

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
        return np.array(self._add), np.array(self._remove)

    def _moved(self, r: int, a: int, col: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The links request ``r`` starts and stops crossing moving from ``a`` to ``col``."""
        site = self._site[r]
        found = self._moves[site][a][col]
        if found is None:
            found = self._moves[site][a][col] = self.w.link_moves(site, a, col)
        return found

    def shift_delta(self, r: int, col: int) -> float:
        """Exact objective change of moving request ``r`` to column ``col``."""
        r, col = int(r), int(col)
        a = int(self.columns[r])
        if col == a:
            return 0.0
        cost = self._cost[r]
        # the marginals are 0 on deferral
        return cost[col] - cost[a] - self._remove[a] + self._add[col]

    def fits(self, r: int, col: int, quality: bool = True) -> bool:
        """Whether moving ``r`` to ``col`` pushes no capacity over (or further over) its limit.

        With ``quality=False`` the quality floor is not checked.
        """
        r, col = int(r), int(col)
        a = int(self.columns[r])
        if col == a:
            return True
        if not self._cost[r][col] < math.inf:
            return False
        if self._memory[col] + self._mem[r][col] > self._mem_cap[col] + TOL:
            return False
        gained = self._moved(r, a, col)[0]
        if gained:
            upload, cap, links = self._upload[r], self._link_cap, self._links
            for k in gained:
                if links[k] + upload > cap[k] + TOL:
                    return False
        if quality and self._gain is not None:
            gain = self._gain[r]
            after = self.quality_slack + gain[col] - gain[a]
            return after >= min(self.quality_slack, 0.0) - TOL
        return True

    def overload_delta(self, r: int, col: int, memory_w, link_w, quality_w: float) -> float:
        """Change in weighted overload (weights per GB, per megabit, per unit of deficit) if
        request ``r`` moved to column ``col``."""
        r, col = int(r), int(col)
        a = int(self.columns[r])
        if col == a:
            return 0.0
        change = 0.0
        cap, memory, load = self._mem_cap, self._mem[r], self._memory
        if memory_w[a] and memory[a]:
            before = load[a] - cap[a]
            change += memory_w[a] * (max(before - memory[a], 0.0) - max(before, 0.0))
        if memory_w[col] and memory[col]:
            before = load[col] - cap[col]
            change += memory_w[col] * (max(before + memory[col], 0.0) - max(before, 0.0))
        gained, lost = self._moved(r, a, col)
        if gained or lost:
            upload, link_cap, links = self._upload[r], self._link_cap, self._links
            for k in gained:
                before = links[k] - link_cap[k]
                change += link_w[k] * (max(before + upload, 0.0) - max(before, 0.0))
            for k in lost:
                before = links[k] - link_cap[k]
                change += link_w[k] * (max(before - upload, 0.0) - max(before, 0.0))
        if quality_w and self._gain is not None:
            gain = self._gain[r]
            after = self.quality_slack + gain[col] - gain[a]
            change += quality_w * (max(-after, 0.0) - max(-self.quality_slack, 0.0))
        return change

    def shift(self, r: int, col: int) -> None:
        """Move request ``r`` to column ``col``."""
        r, col = int(r), int(col)
        a = int(self.columns[r])
        if col == a:
            return
        finite = math.isfinite(self.value)
        if finite:
            cost = self._cost[r]
            self.value += cost[col] - cost[a] - self._remove[a] + self._add[col]
        self._counts[a] -= 1
        self._counts[col] += 1
        if a != self.defer:
            self._marginal(a)
        if col != self.defer:
            self._marginal(col)
        memory = self._mem[r]
        self._memory[a] -= memory[a]
        self._memory[col] += memory[col]
        gained, lost = self._moved(r, a, col)
        if gained or lost:
            upload, links = self._upload[r], self._links
            for k in gained:
                links[k] += upload
            for k in lost:
                links[k] -= upload
        if self._gain is not None:
            gain = self._gain[r]
            self.quality_slack += gain[col] - gain[a]
        self.columns[r] = col
        self.shifts += 1
        if not (finite and math.isfinite(self.value)):
            self.value = self.objective()

    def restore(self, columns: np.ndarray) -> None:
        """Move every request whose column differs from ``columns`` back to it."""
        for r in np.flatnonzero(self.columns != columns):
            self.shift(r, columns[r])
