"""The MILP of docs/formulation.md as sparse arrays, ready for a matrix solver (HiGHS).

Columns, in order: ``x`` for every allowed pair, ``d`` for every request (when deferral is on),
then per congested node a count ``m_n = sum_r x[r, n]`` and its congestion latency ``theta_n``.
Giving the count its own column keeps the congestion pieces at two nonzeros each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qlmio_opt.formulations.congestion import CongestionCurve
from qlmio_opt.formulations.problem import Problem

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
Segments = tuple[FloatArray, FloatArray]
"""Slopes and intercepts of a congestion curve's pieces."""


@dataclass(frozen=True)
class MilpArrays:
    """``min c'x  s.t.  row_lower <= A x <= row_upper,  col_lower <= x <= col_upper``.

    ``A`` is held row-wise (CSR): ``row_start``, ``col_index``, ``value``.
    """

    pair_request: IntArray  # (P,) request of each x column
    pair_node: IntArray  # (P,) node of each x column
    defer_offset: int | None  # first d column, None when deferral is off
    count_cols: IntArray  # (N,) column of m_n, -1 where the node has no congestion term
    theta_cols: IntArray  # (N,) column of theta_n, -1 likewise
    col_cost: FloatArray
    col_lower: FloatArray
    col_upper: FloatArray
    integrality: BoolArray  # integer column
    row_start: NDArray[np.int32]  # (rows + 1,): row i's nonzeros are row_start[i]:row_start[i + 1]
    col_index: NDArray[np.int32]  # (nonzeros,)
    value: FloatArray  # (nonzeros,)
    row_lower: FloatArray
    row_upper: FloatArray
    row_kind: tuple[str, ...]  # "assign" | "memory" | "link" | "quality" | "count" | "congestion"
    row_index: IntArray  # the request / node / link / piece each row is about

    @property
    def num_cols(self) -> int:
        return len(self.col_cost)

    @property
    def num_rows(self) -> int:
        return len(self.row_lower)

    @property
    def num_nonzeros(self) -> int:
        return len(self.value)


_MINUS_ONE = np.array([-1.0])


class _Blocks:
    """Accumulates blocks of whole rows in row-wise (CSR) form: row lengths, columns, values."""

    def __init__(self) -> None:
        self.lengths: list[IntArray] = []
        self.cols: list[IntArray] = []
        self.vals: list[FloatArray] = []
        self.lower: list[FloatArray] = []
        self.upper: list[FloatArray] = []
        self.kinds: list[tuple[str, int]] = []
        self.index: list[IntArray] = []

    def add(
        self,
        lengths: ArrayLike,
        cols: ArrayLike,
        vals: ArrayLike,
        lower: ArrayLike,
        upper: ArrayLike,
        kind: str,
        index: ArrayLike,
    ) -> None:
        """Rows with ``lengths[i]`` nonzeros each, their ``cols``/``vals`` concatenated in order."""
        row_lengths = np.asarray(lengths, dtype=np.int64)
        rows = len(row_lengths)
        self.lengths.append(row_lengths)
        self.cols.append(np.asarray(cols, dtype=np.int64))
        self.vals.append(np.asarray(vals, dtype=float))
        self.lower.append(_per_row(lower, rows))
        self.upper.append(_per_row(upper, rows))
        self.kinds.append((kind, rows))
        self.index.append(np.asarray(index, dtype=np.int64))

    def arrays(self, **columns: Any) -> MilpArrays:
        """The finished :class:`MilpArrays`, given its column fields."""
        lengths = np.concatenate(self.lengths)
        row_start = np.zeros(lengths.size + 1, dtype=np.int32)
        np.cumsum(lengths, out=row_start[1:])
        return MilpArrays(
            **columns,
            row_start=row_start,
            col_index=np.concatenate(self.cols).astype(np.int32),
            value=np.concatenate(self.vals),
            row_lower=np.concatenate(self.lower),
            row_upper=np.concatenate(self.upper),
            row_kind=tuple(kind for kind, rows in self.kinds for _ in range(rows)),
            row_index=np.concatenate(self.index),
        )


def _per_row(bound: ArrayLike, rows: int) -> FloatArray:
    """A row bound (a number or one per row) as ``rows`` floats."""
    if np.ndim(bound) == 0:
        return np.full(rows, bound, dtype=float)
    return np.asarray(bound, dtype=float)


def _useful_segments(curve: CongestionCurve) -> Segments | None:
    """The curve's pieces that can be positive, or None when it is zero for every count."""
    slopes, intercepts = curve.segments()
    useful = (slopes > 1e-12) | (intercepts > 1e-12)
    if not useful.any():
        return None
    return slopes[useful], intercepts[useful]


@dataclass(frozen=True)
class _Pairs:
    """The allowed pairs, numbered as their ``x`` columns, and each node's pairs in order."""

    request: IntArray  # (P,) request of each pair
    node: IntArray  # (P,) node of each pair
    by_node: IntArray  # (P,) pair indices, node by node (the nonzeros of node rows in order)
    node_count: IntArray  # (N,) pairs per node
    node_start: IntArray  # (N + 1,) where each node's pairs start in ``by_node``

    @property
    def size(self) -> int:
        return int(self.request.size)

    def on_node(self, n: int) -> IntArray:
        return self.by_node[self.node_start[n] : self.node_start[n + 1]]


def _pairs(problem: Problem) -> _Pairs:
    allowed = problem.allowed
    pair_request, pair_node = np.nonzero(allowed)
    pair_index = np.zeros(allowed.shape, dtype=np.int64)
    pair_index[pair_request, pair_node] = np.arange(pair_request.size)
    node_count = allowed.sum(axis=0)
    return _Pairs(
        request=pair_request,
        node=pair_node,
        by_node=pair_index.T[allowed.T],
        node_count=node_count,
        node_start=np.concatenate(([0], np.cumsum(node_count))),
    )


def build_milp(problem: Problem) -> MilpArrays:
    """Assemble the MILP of ``problem`` (vectorised; no solver involved).

    Rows come out in order (assignment, memory, link, quality, count, congestion), each block's
    nonzeros already sorted by row, so the row-wise matrix needs no sort.
    """
    pairs = _pairs(problem)
    blocks = _Blocks()
    defer_offset = _add_assignment_rows(blocks, problem, pairs)
    _add_memory_rows(blocks, problem, pairs)
    _add_link_rows(blocks, problem, pairs)
    _add_quality_row(blocks, problem, pairs)
    first_node_col = pairs.size + (problem.num_requests if problem.deferral_allowed else 0)
    pieces = [_useful_segments(c) for c in problem.congestion_curves]
    nodes = np.flatnonzero(np.array([p is not None for p in pieces], dtype=bool))
    count_cols = np.full(problem.num_nodes, -1, dtype=np.int64)
    theta_cols = np.full(problem.num_nodes, -1, dtype=np.int64)
    count_cols[nodes] = first_node_col + 2 * np.arange(nodes.size)
    theta_cols[nodes] = count_cols[nodes] + 1
    if nodes.size:
        congested = {int(n): piece for n, piece in enumerate(pieces) if piece is not None}
        _add_congestion_rows(blocks, pairs, nodes, count_cols, theta_cols, congested)
    return blocks.arrays(
        pair_request=pairs.request,
        pair_node=pairs.node,
        defer_offset=defer_offset,
        count_cols=count_cols,
        theta_cols=theta_cols,
        **_column_bounds_and_costs(problem, pairs, first_node_col, nodes, count_cols, theta_cols),
    )


def _add_assignment_rows(blocks: _Blocks, problem: Problem, pairs: _Pairs) -> int | None:
    """``sum_n x[r, n] + d[r] = 1`` (with deferral, ``d[r]`` closes request r's row).

    Returns the first ``d`` column, None without deferral.
    """
    num_req, num_pairs = problem.num_requests, pairs.size
    lengths = np.bincount(pairs.request, minlength=num_req)
    defer_offset = None
    if problem.deferral_allowed:
        defer_offset = num_pairs
        cols = np.empty(num_pairs + num_req, dtype=np.int64)
        closing = np.cumsum(lengths) + np.arange(num_req)
        is_pair = np.ones(cols.size, dtype=bool)
        is_pair[closing] = False
        cols[is_pair] = np.arange(num_pairs)
        cols[closing] = defer_offset + np.arange(num_req)
        lengths = lengths + 1
    else:
        cols = np.arange(num_pairs)
    blocks.add(lengths, cols, np.ones(cols.size), 1.0, 1.0, "assign", np.arange(num_req))
    return defer_offset


def _add_memory_rows(blocks: _Blocks, problem: Problem, pairs: _Pairs) -> None:
    """``sum_r M[r, n] x[r, n] <= cap_n``, where it can bind."""
    demand = problem.memory_gb[pairs.request, pairs.node]
    total = np.bincount(pairs.node, weights=demand, minlength=problem.num_nodes)
    caps = problem.node_memory_gb
    binding = np.flatnonzero(np.isfinite(caps) & (total > caps))
    if binding.size:
        cols = np.concatenate([pairs.on_node(n) for n in binding.tolist()])
        lengths = pairs.node_count[binding]
        blocks.add(lengths, cols, demand[cols], -np.inf, caps[binding], "memory", binding)


def _add_link_rows(blocks: _Blocks, problem: Problem, pairs: _Pairs) -> None:
    """``sum U[r] x[r, n]`` over the pairs whose path crosses link k ``<= B_k``, where it can
    bind."""
    if not problem.link_ids:
        return
    upload = problem.upload_megabits
    reach = problem.route_links[problem.request_site]  # (R, N, K)
    may_cross = (reach & problem.allowed[:, :, None]).any(axis=1)  # (R, K)
    link_cap = problem.link_capacity_megabits
    binding = np.flatnonzero(upload @ may_cross > link_cap)
    if binding.size:
        crosses = reach[pairs.request, pairs.node][:, binding]  # (P, B)
        link_of, crossing = np.nonzero(crosses.T)
        lengths = np.bincount(link_of, minlength=binding.size)
        vals = upload[pairs.request[crossing]]
        blocks.add(lengths, crossing, vals, -np.inf, link_cap[binding], "link", binding)


def _add_quality_row(blocks: _Blocks, problem: Problem, pairs: _Pairs) -> None:
    """``sum floor_gain x >= 0`` over placed requests (``quality_floor`` only)."""
    if problem.floor_gain is None:
        return
    gain = problem.floor_gain[pairs.request, pairs.node]
    count = np.array([pairs.size])
    blocks.add(count, np.arange(pairs.size), gain, 0.0, np.inf, "quality", [0])


def _add_congestion_rows(
    blocks: _Blocks,
    pairs: _Pairs,
    nodes: IntArray,
    count_cols: IntArray,
    theta_cols: IntArray,
    pieces: dict[int, Segments],
) -> None:
    """``m_n = sum_r x[r, n]``, then ``theta_n >= a_i m_n + b_i`` for every useful piece i of
    each congested node (two nonzeros per piece)."""
    cols: list[IntArray] = []
    vals: list[FloatArray] = []
    for n in nodes.tolist():
        on_n = pairs.on_node(n)
        cols += [on_n, count_cols[n : n + 1]]
        vals += [np.ones(on_n.size), _MINUS_ONE]
    lengths = pairs.node_count[nodes] + 1
    blocks.add(lengths, np.concatenate(cols), np.concatenate(vals), 0.0, 0.0, "count", nodes)
    # theta_n - a_i m_n >= b_i
    slopes = np.concatenate([pieces[n][0] for n in nodes.tolist()])
    intercepts = np.concatenate([pieces[n][1] for n in nodes.tolist()])
    piece_node = np.repeat(nodes, [pieces[n][0].size for n in nodes.tolist()])
    piece_cols = np.column_stack([theta_cols[piece_node], count_cols[piece_node]]).ravel()
    piece_vals = np.column_stack([np.ones(slopes.size), -slopes]).ravel()
    lengths = np.full(slopes.size, 2)
    blocks.add(lengths, piece_cols, piece_vals, intercepts, np.inf, "congestion", piece_node)


def _column_bounds_and_costs(
    problem: Problem,
    pairs: _Pairs,
    first_node_col: int,
    nodes: IntArray,
    count_cols: IntArray,
    theta_cols: IntArray,
) -> dict[str, FloatArray | BoolArray]:
    """Cost, bounds and integrality of every column: binary ``x`` and ``d``, then each
    congested node's count (up to its pairs) and congestion latency (>= 0)."""
    num_cols = first_node_col + 2 * nodes.size
    col_cost = np.empty(num_cols)
    col_cost[: pairs.size] = problem.pair_cost(masked=False)[pairs.request, pairs.node]
    col_cost[pairs.size : first_node_col] = problem.deferral_cost()
    col_cost[count_cols[nodes]] = 0.0
    col_cost[theta_cols[nodes]] = problem.latency_cost_weight
    integrality = np.zeros(num_cols, dtype=bool)
    integrality[:first_node_col] = True
    col_lower = np.zeros(num_cols)
    col_upper = np.ones(num_cols)
    col_upper[count_cols[nodes]] = pairs.node_count[nodes]
    col_upper[theta_cols[nodes]] = np.inf
    return {
        "col_cost": col_cost,
        "col_lower": col_lower,
        "col_upper": col_upper,
        "integrality": integrality,
    }


def assignment_from_columns(milp: MilpArrays, values: FloatArray, num_requests: int) -> IntArray:
    """Node index per request (-1 = deferred) from a column vector."""
    assignment = np.full(num_requests, -1, dtype=np.int64)
    chosen = values[: len(milp.pair_request)] > 0.5
    assignment[milp.pair_request[chosen]] = milp.pair_node[chosen]
    return assignment


def columns_from_assignment(milp: MilpArrays, problem: Problem, assignment: IntArray) -> FloatArray:
    """The column vector of ``assignment`` (for a warm start), counts and theta included."""
    values = np.zeros(milp.num_cols)
    placed = assignment[milp.pair_request] == milp.pair_node
    values[: len(milp.pair_request)] = placed
    if milp.defer_offset is not None:
        values[milp.defer_offset + np.flatnonzero(assignment < 0)] = 1.0
    counts = np.bincount(assignment[assignment >= 0], minlength=problem.num_nodes)
    for n in np.flatnonzero(milp.count_cols >= 0):
        values[milp.count_cols[n]] = counts[n]
        values[milp.theta_cols[n]] = float(problem.congestion_curves[n](int(counts[n])))
    return values
