"""The MILP of docs/formulation.md as sparse arrays, ready for a matrix solver (HiGHS).

Columns, in order: ``x`` for every allowed pair, ``d`` for every request (when deferral is on),
then per congested node a count ``m_n = sum_r x[r, n]`` and its congestion latency ``theta_n``.
Giving the count its own column keeps the congestion pieces at two nonzeros each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from qlmio_opt.formulations.problem import Problem


@dataclass(frozen=True)
class MilpArrays:
    """``min c'x  s.t.  row_lower <= A x <= row_upper,  col_lower <= x <= col_upper``.

    ``A`` is held row-wise (CSR): ``row_start``, ``col_index``, ``value``.
    """

    pair_request: np.ndarray  # (P,) request of each x column
    pair_node: np.ndarray  # (P,) node of each x column
    defer_offset: int | None  # first d column, None when deferral is off
    count_cols: np.ndarray  # (N,) column of m_n, -1 where the node has no congestion term
    theta_cols: np.ndarray  # (N,) column of theta_n, -1 likewise
    col_cost: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    integrality: np.ndarray  # bool: integer column
    row_start: np.ndarray  # (rows + 1,) int32: row i's nonzeros are row_start[i]:row_start[i + 1]
    col_index: np.ndarray  # (nonzeros,) int32
    value: np.ndarray  # (nonzeros,)
    row_lower: np.ndarray
    row_upper: np.ndarray
    row_kind: tuple[str, ...]  # "assign" | "memory" | "link" | "quality" | "count" | "congestion"
    row_index: np.ndarray  # the request / node / link / piece each row is about

    @property
    def num_cols(self) -> int:
        return len(self.col_cost)

    @property
    def num_rows(self) -> int:
        return len(self.row_lower)

    @property
    def num_nonzeros(self) -> int:
        return len(self.value)

    @property
    def matrix(self) -> sp.csr_matrix:
        """The constraint matrix as a scipy sparse matrix."""
        return sp.csr_matrix(
            (self.value, self.col_index, self.row_start), shape=(self.num_rows, self.num_cols)
        )


_MINUS_ONE = np.array([-1.0])


class _Blocks:
    """Accumulates blocks of whole rows in row-wise (CSR) form: row lengths, columns, values."""

    def __init__(self) -> None:
        self.lengths: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []
        self.kinds: list[tuple[str, int]] = []
        self.index: list[np.ndarray] = []

    def add(self, lengths, cols, vals, lower, upper, kind: str, index) -> None:
        """Rows with ``lengths[i]`` nonzeros each, their ``cols``/``vals`` concatenated in order."""
        rows = len(lengths)
        self.lengths.append(np.asarray(lengths, dtype=np.int64))
        self.cols.append(np.asarray(cols, dtype=np.int64))
        self.vals.append(np.asarray(vals, dtype=float))
        self.lower.append(_per_row(lower, rows))
        self.upper.append(_per_row(upper, rows))
        self.kinds.append((kind, rows))
        self.index.append(np.asarray(index, dtype=np.int64))

    def arrays(self, **columns) -> MilpArrays:
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


def _per_row(bound, rows: int) -> np.ndarray:
    """A row bound (a number or one per row) as ``rows`` floats."""
    if np.ndim(bound) == 0:
        return np.full(rows, float(bound))
    return np.asarray(bound, dtype=float)


def _useful_segments(curve) -> tuple[np.ndarray, np.ndarray] | None:
    """The curve's pieces that can be positive, or None when it is zero for every count."""
    slopes, intercepts = curve.segments()
    useful = (slopes > 1e-12) | (intercepts > 1e-12)
    if not useful.any():
        return None
    return slopes[useful], intercepts[useful]


def build_milp(problem: Problem) -> MilpArrays:
    """Assemble the MILP of ``problem`` (vectorised; no solver involved).

    Rows come out in order (assignment, memory, link, quality, count, congestion), each block's
    nonzeros already sorted by row, so the row-wise matrix needs no sort.
    """
    allowed = problem.allowed
    pair_request, pair_node = np.nonzero(allowed)
    num_pairs = pair_request.size
    num_req, num_nodes = problem.num_requests, problem.num_nodes
    defer = problem.deferral_allowed
    # pair index of every allowed (r, n), read node by node: the nonzeros of node rows in order
    pair_index = np.zeros(allowed.shape, dtype=np.int64)
    pair_index[pair_request, pair_node] = np.arange(num_pairs)
    by_node = pair_index.T[allowed.T]
    node_pairs = allowed.sum(axis=0)
    node_start = np.concatenate(([0], np.cumsum(node_pairs)))

    blocks = _Blocks()
    # assignment: sum_n x[r, n] + d[r] = 1 (with deferral, d[r] closes request r's row)
    lengths = np.bincount(pair_request, minlength=num_req)
    if defer:
        defer_offset = num_pairs
        cols = np.empty(num_pairs + num_req, dtype=np.int64)
        closing = np.cumsum(lengths) + np.arange(num_req)
        is_pair = np.ones(cols.size, dtype=bool)
        is_pair[closing] = False
        cols[is_pair] = np.arange(num_pairs)
        cols[closing] = defer_offset + np.arange(num_req)
        lengths = lengths + 1
    else:
        defer_offset = None
        cols = np.arange(num_pairs)
    blocks.add(lengths, cols, np.ones(cols.size), 1.0, 1.0, "assign", np.arange(num_req))

    # memory: sum_r M[r, n] x[r, n] <= cap_n, where it can bind
    demand = problem.memory_gb[pair_request, pair_node]
    total = np.bincount(pair_node, weights=demand, minlength=num_nodes)
    caps = problem.node_memory_gb
    binding = np.flatnonzero(np.isfinite(caps) & (total > caps))
    if binding.size:
        cols = np.concatenate([by_node[node_start[n] : node_start[n + 1]] for n in binding])
        lengths = node_pairs[binding]
        blocks.add(lengths, cols, demand[cols], -np.inf, caps[binding], "memory", binding)

    # bandwidth: sum U[r] x[r, n] over pairs whose path crosses link k <= B_k, where it can bind
    upload = problem.upload_megabits
    if problem.link_ids:
        reach = problem.route_links[problem.request_site]  # (R, N, K)
        may_cross = (reach & allowed[:, :, None]).any(axis=1)  # (R, K)
        link_cap = problem.link_capacity_megabits
        binding = np.flatnonzero(upload @ may_cross > link_cap)
        if binding.size:
            crosses = reach[pair_request, pair_node][:, binding]  # (P, B)
            link_of, pairs = np.nonzero(crosses.T)
            lengths = np.bincount(link_of, minlength=binding.size)
            vals = upload[pair_request[pairs]]
            blocks.add(lengths, pairs, vals, -np.inf, link_cap[binding], "link", binding)

    # quality floor: sum (Q - T) x >= 0 over placed requests
    if problem.quality_target is not None:
        gain = problem.quality[pair_request, pair_node] - problem.quality_target
        blocks.add(np.array([num_pairs]), np.arange(num_pairs), gain, 0.0, np.inf, "quality", [0])

    # congestion: m_n = sum_r x[r, n];  theta_n >= a_i m_n + b_i for every useful piece i
    next_col = num_pairs + (num_req if defer else 0)
    count_cols = np.full(num_nodes, -1, dtype=np.int64)
    theta_cols = np.full(num_nodes, -1, dtype=np.int64)
    pieces = [_useful_segments(c) for c in problem.congestion_curves]
    congested = np.array([p is not None for p in pieces], dtype=bool)
    nodes = np.flatnonzero(congested)
    count_cols[nodes] = next_col + 2 * np.arange(nodes.size)
    theta_cols[nodes] = count_cols[nodes] + 1
    if nodes.size:
        cols, vals = [], []
        for n in nodes:
            on_n = by_node[node_start[n] : node_start[n + 1]]
            cols += [on_n, count_cols[n : n + 1]]
            vals += [np.ones(on_n.size), _MINUS_ONE]
        blocks.add(
            node_pairs[nodes] + 1,
            np.concatenate(cols),
            np.concatenate(vals),
            0.0,
            0.0,
            "count",
            nodes,
        )
        # theta_n - a_i m_n >= b_i: two nonzeros per piece
        slopes = np.concatenate([pieces[n][0] for n in nodes])
        intercepts = np.concatenate([pieces[n][1] for n in nodes])
        piece_node = np.repeat(nodes, [pieces[n][0].size for n in nodes])
        cols = np.column_stack([theta_cols[piece_node], count_cols[piece_node]]).ravel()
        vals = np.column_stack([np.ones(slopes.size), -slopes]).ravel()
        lengths = np.full(slopes.size, 2)
        blocks.add(lengths, cols, vals, intercepts, np.inf, "congestion", piece_node)

    num_cols = next_col + 2 * nodes.size
    col_cost = np.empty(num_cols)
    col_cost[:num_pairs] = problem.pair_cost(masked=False)[pair_request, pair_node]
    col_cost[num_pairs:next_col] = problem.deferral_cost()
    col_cost[count_cols[nodes]] = 0.0
    col_cost[theta_cols[nodes]] = problem.latency_cost_weight
    integrality = np.zeros(num_cols, dtype=bool)
    integrality[:next_col] = True
    col_lower = np.zeros(num_cols)
    col_upper = np.ones(num_cols)
    col_upper[count_cols[nodes]] = node_pairs[nodes]
    col_upper[theta_cols[nodes]] = np.inf
    return blocks.arrays(
        pair_request=pair_request,
        pair_node=pair_node,
        defer_offset=defer_offset,
        count_cols=count_cols,
        theta_cols=theta_cols,
        col_cost=col_cost,
        col_lower=col_lower,
        col_upper=col_upper,
        integrality=integrality,
    )


def assignment_from_columns(milp: MilpArrays, values: np.ndarray, num_requests: int) -> np.ndarray:
    """Node index per request (-1 = deferred) from a column vector."""
    assignment = np.full(num_requests, -1, dtype=np.int64)
    chosen = values[: len(milp.pair_request)] > 0.5
    assignment[milp.pair_request[chosen]] = milp.pair_node[chosen]
    return assignment


def columns_from_assignment(
    milp: MilpArrays, problem: Problem, assignment: np.ndarray
) -> np.ndarray:
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
