"""The greedy solver's view of a window: immutable arrays in a move-friendly form, and a state.

A :class:`Window` recasts a :class:`~qlmio_opt.formulations.problem.Problem`. Column ``N`` is
deferral (cost ``delta``, ``inf`` when deferral is off), so an assignment is a column per
request. The capacity rows keep their structure, which makes every test a few ``(R, C)`` array
operations (``C = N + 1``):

* memory: request r holds ``memory[r, n]`` on node n only;
* bandwidth: request r puts ``upload[r]`` on every link of ``paths[site[r], n]``;
* quality floor: placing r on n adds ``gain[r, n] = Q[r, n] - T`` to a sum that must stay >= 0;
* congestion: node n costs ``congestion[n, m]`` (``kappa * E_n(m)``) with ``m`` requests.

Everything a search reads more than once is computed by :func:`build_window`, so a window never
changes after it is built (its arrays are read-only). :class:`State` keeps the loads, counts and
objective of one assignment up to date move by move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qlmio_opt.formulations.problem import Problem
from qlmio_opt.solvers.tuning import TOL, UNIT_SCALE_FLOOR

FloatArray = NDArray[np.float64]
Floats = NDArray[np.floating[Any]]
"""float64, or float32 where the dual's smoothed evaluations work in single precision."""
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
Rows = tuple[tuple[float, ...], ...]
LinkMoves = tuple[tuple[int, ...], tuple[int, ...]]
"""The links a request starts crossing and those it stops crossing in one move."""


@dataclass(frozen=True)
class Weights:
    """Penalty per unit of overload: ``(C,)`` memory columns, ``(L,)`` links, quality deficit."""

    memory: FloatArray
    link: FloatArray
    quality: float

    def scaled(self, factor: float) -> Weights:
        return Weights(self.memory * factor, self.link * factor, self.quality * factor)


@dataclass(frozen=True)
class WindowScalars:
    """The arrays single moves read, as nested tuples of Python numbers.

    Single-move arithmetic is several times faster on Python floats than on NumPy scalars.
    """

    cost: Rows
    memory: Rows
    memory_cap: tuple[float, ...]
    upload: tuple[float, ...]
    site: tuple[int, ...]
    link_cap: tuple[float, ...]
    gain: Rows | None
    congestion: Rows


@dataclass(frozen=True)
class Window:
    """One problem's arrays in the form the greedy works on (built by :func:`build_window`).

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
    scalars
        The arrays single moves read, as Python numbers.
    moves
        ``[site][a][c]``: the links a request from ``site`` starts and stops crossing moving
        from column ``a`` to column ``c`` (:class:`LinkMoves`).
    unit_weights
        Overload weights that make one typical request's worth of overload cost one typical
        pair cost.
    """

    cost: FloatArray
    memory: FloatArray
    memory_cap: FloatArray
    upload: FloatArray
    site: IntArray
    paths: BoolArray
    link_cap: FloatArray
    links: IntArray
    gain: FloatArray | None
    congestion: FloatArray
    crossing: FloatArray
    finite: BoolArray
    gained: BoolArray
    scalars: WindowScalars
    moves: tuple[tuple[tuple[LinkMoves, ...], ...], ...]
    unit_weights: Weights

    @property
    def num_requests(self) -> int:
        return int(self.cost.shape[0])

    @property
    def num_nodes(self) -> int:
        return int(self.cost.shape[1]) - 1

    @property
    def defer(self) -> int:
        """The deferral column."""
        return int(self.cost.shape[1]) - 1

    @property
    def can_defer(self) -> bool:
        return bool(np.isfinite(self.cost[:, -1]).all())


def build_window(problem: Problem) -> Window:
    """Recast ``problem`` as a :class:`Window`, keeping only capacity rows that can bind."""
    cost = _column_costs(problem)
    memory, memory_cap = _memory_rows(problem)
    links, paths = _link_rows(problem)
    gain = None
    if problem.floor_gain is not None:
        gain = np.zeros(cost.shape)
        gain[:, :-1] = np.where(problem.allowed, problem.floor_gain, 0.0)
    upload = np.asarray(problem.upload_megabits, dtype=float)
    site = np.asarray(problem.request_site, dtype=np.int64)
    link_cap = np.asarray(problem.link_capacity_megabits[links], dtype=float)
    congestion = _congestion_costs(problem)
    gained = paths[:, None, :, :] & ~paths[:, :, None, :]
    arrays = {
        "cost": cost,
        "memory": memory,
        "memory_cap": memory_cap,
        "upload": upload,
        "site": site,
        "paths": paths,
        "link_cap": link_cap,
        "links": links,
        "gain": gain,
        "congestion": congestion,
        "crossing": paths[problem.request_site].astype(float),
        "finite": np.isfinite(cost),
        "gained": gained,
    }
    for array in arrays.values():
        if array is not None:
            array.setflags(write=False)
    return Window(
        **arrays,
        scalars=WindowScalars(
            cost=_rows(cost),
            memory=_rows(memory),
            memory_cap=tuple(memory_cap.tolist()),
            upload=tuple(upload.tolist()),
            site=tuple(site.tolist()),
            link_cap=tuple(link_cap.tolist()),
            gain=None if gain is None else _rows(gain),
            congestion=_rows(congestion),
        ),
        moves=_link_move_table(gained),
        unit_weights=_unit_weights(cost, memory, memory_cap, upload, len(links), gain),
    )


def _column_costs(problem: Problem) -> FloatArray:
    """``(R, C)`` pair costs, then the deferral cost in the last column."""
    cost = np.empty((problem.num_requests, problem.num_nodes + 1))
    cost[:, :-1] = problem.pair_cost()
    cost[:, -1] = problem.deferral_cost()
    return cost


def _memory_rows(problem: Problem) -> tuple[FloatArray, FloatArray]:
    """``(R, C)`` memory held and ``(C,)`` capacities, on the nodes whose row can bind only
    (elsewhere the capacity is ``inf`` and the memory 0)."""
    num_n = problem.num_nodes
    memory = np.zeros((problem.num_requests, num_n + 1))
    memory[:, :num_n] = np.where(problem.allowed, problem.memory_gb, 0.0)
    memory_cap = np.full(num_n + 1, np.inf)
    binds = memory[:, :num_n].sum(axis=0) > problem.node_memory_gb + TOL
    memory_cap[:num_n] = np.where(binds, problem.node_memory_gb, np.inf)
    memory[:, ~np.isfinite(memory_cap)] = 0.0
    return memory, memory_cap


def _link_rows(problem: Problem) -> tuple[IntArray, BoolArray]:
    """The links that can bind (the requests able to cross one upload more than it carries),
    and ``(S, C, L)`` which of them each site crosses to reach each column."""
    can_cross = (problem.route_links[problem.request_site] & problem.allowed[:, :, None]).any(
        axis=1
    )
    if problem.num_requests:
        worst = problem.upload_megabits @ can_cross
    else:
        worst = np.zeros(len(problem.link_ids))
    links = np.flatnonzero(worst > problem.link_capacity_megabits + TOL)
    paths = np.zeros((problem.route_links.shape[0], problem.num_nodes + 1, len(links)), dtype=bool)
    paths[:, : problem.num_nodes, :] = problem.route_links[:, :, links]
    return links, paths


def _congestion_costs(problem: Problem) -> FloatArray:
    """``(N, R + 2)`` congestion cost of each node with ``m = 0 .. R + 1`` requests."""
    counts = np.arange(problem.num_requests + 2)
    congestion = np.zeros((problem.num_nodes, problem.num_requests + 2))
    for n, curve in enumerate(problem.congestion_curves):
        congestion[n] = problem.latency_cost_weight * np.asarray(curve(counts), dtype=float)
    return congestion


def _rows(array: FloatArray) -> Rows:
    return tuple(map(tuple, array.tolist()))


def _link_move_table(gained: BoolArray) -> tuple[tuple[tuple[LinkMoves, ...], ...], ...]:
    """``[site][a][c]``: the links started (``gained[s, a, c]``) and stopped (``gained[s, c,
    a]``) when a request from site ``s`` moves from column ``a`` to column ``c``."""
    flags = gained.tolist()
    width = gained.shape[1]

    def crossed(row: list[bool]) -> tuple[int, ...]:
        return tuple(k for k, on in enumerate(row) if on)

    return tuple(
        tuple(
            tuple((crossed(per_site[a][c]), crossed(per_site[c][a])) for c in range(width))
            for a in range(width)
        )
        for per_site in flags
    )


def _unit_weights(
    cost: FloatArray,
    memory: FloatArray,
    memory_cap: FloatArray,
    upload: FloatArray,
    num_links: int,
    gain: FloatArray | None,
) -> Weights:
    """Weights that make one typical request's worth of overload cost one typical pair cost."""
    finite = np.isfinite(cost)
    typical_cost = float(np.median(np.abs(cost[finite]))) if finite.any() else 1.0
    scale = max(typical_cost, UNIT_SCALE_FLOOR)
    typical = memory.sum(axis=0) / np.maximum((memory > 0).sum(axis=0), 1)
    typical = np.where(typical > 0, typical, 1.0)
    memory_w = np.where(np.isfinite(memory_cap), scale / typical, 0.0)
    sizes = upload[upload > 0]
    link_w = np.full(num_links, scale / (sizes.mean() if len(sizes) else 1.0))
    quality_w = 0.0
    if gain is not None:
        gains = np.abs(gain[finite & (gain != 0)])
        quality_w = scale / (gains.mean() if len(gains) else 1.0)
    return Weights(memory_w, link_w, quality_w)


class State:
    """An assignment (a column per request) with its loads, counts and objective.

    Single moves (:meth:`shift_delta`, :meth:`fits`, :meth:`shift`, ...) work on Python lists
    and floats; the NumPy views the move tables need (:attr:`counts`, :attr:`memory_load`,
    :attr:`link_load`) are built from them on demand.

    This is the greedy's own capacity tracker, not :class:`~qlmio_opt.solvers.capacity.Loads`:
    its searches make thousands of single moves per window, each read and updated on plain
    Python lists over the window's columns and kept links only (with the deferral column, the
    quality slack and the objective), which is several times faster than NumPy per move.

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

    def __init__(self, window: Window, columns: IntArray) -> None:
        self.w = w = window
        s = window.scalars
        # the values single moves read, as attributes (one lookup fewer per read)
        self._cost, self._mem, self._mem_cap = s.cost, s.memory, s.memory_cap
        self._upload, self._site, self._link_cap = s.upload, s.site, s.link_cap
        self._gain, self._moves, self._congestion = s.gain, window.moves, s.congestion
        self.defer = w.defer
        self.rows = np.arange(w.num_requests)
        self.columns = cols = np.asarray(columns, dtype=np.int64).copy()
        width = w.num_nodes + 1
        self._counts = np.bincount(cols, minlength=width).tolist()
        memory = np.bincount(cols, weights=w.memory[self.rows, cols], minlength=width)
        self._memory: list[float] = memory.tolist()
        links = w.upload @ w.paths[w.site, cols] if len(cols) else np.zeros(len(w.links))
        self._links: list[float] = links.tolist()
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
        curve, m = self._congestion[n], self._counts[n]
        self._add[n] = curve[m + 1] - curve[m]
        self._remove[n] = curve[m] - curve[max(m - 1, 0)]

    @property
    def counts(self) -> IntArray:
        """``(C,)`` requests per column."""
        return np.array(self._counts)

    @property
    def memory_load(self) -> FloatArray:
        """``(C,)`` GB held per column (0 where memory is unbounded)."""
        return np.array(self._memory)

    @property
    def link_load(self) -> FloatArray:
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
        cap = self._mem_cap
        if any(load > limit + TOL for load, limit in zip(self._memory, cap, strict=True)):
            return False
        link_cap = self._link_cap
        if any(load > limit + TOL for load, limit in zip(self._links, link_cap, strict=True)):
            return False
        return self.quality_slack >= -TOL

    def violations(self) -> tuple[FloatArray, FloatArray, float]:
        """Overload of each memory column and each link, and the quality deficit (all >= 0)."""
        w = self.w
        memory = np.maximum(self.memory_load - w.memory_cap, 0.0)
        links = np.maximum(self.link_load - w.link_cap, 0.0)
        return memory, links, max(-self.quality_slack, 0.0)

    def marginals(self) -> tuple[FloatArray, FloatArray]:
        """``(C,)`` congestion cost of one more request, and saved by one fewer, per column."""
        return np.array(self._add), np.array(self._remove)

    def _moved(self, r: int, a: int, col: int) -> LinkMoves:
        """The links request ``r`` starts and stops crossing moving from ``a`` to ``col``."""
        return self._moves[self._site[r]][a][col]

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

    def overload_delta(
        self, r: int, col: int, memory_w: list[float], link_w: list[float], quality_w: float
    ) -> float:
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

    def relieves(self, r: int, col: int, capacity: bool, quality: bool) -> bool:
        """Whether moving ``r`` to ``col`` reduces an overload that counts: memory or a link
        with ``capacity``, the quality floor with ``quality``."""
        a = int(self.columns[r])
        if capacity:
            if self._mem[r][a] > 0 and self._memory[a] > self._mem_cap[a] + TOL:
                return True
            loads, caps = self._links, self._link_cap
            if any(loads[k] > caps[k] + TOL for k in self._moved(r, a, col)[1]):
                return True
        gain = self._gain
        return bool(
            quality and self.quality_slack < -TOL and gain is not None and gain[r][col] > gain[r][a]
        )

    def restore(self, columns: IntArray) -> None:
        """Move every request whose column differs from ``columns`` back to it."""
        for r in np.flatnonzero(self.columns != columns).tolist():
            self.shift(r, int(columns[r]))
