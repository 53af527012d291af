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
    """``min c'x  s.t.  row_lower <= A x <= row_upper,  col_lower <= x <= col_upper``."""

    pair_request: np.ndarray  # (P,) request of each x column
    pair_node: np.ndarray  # (P,) node of each x column
    defer_offset: int | None  # first d column, None when deferral is off
    count_cols: np.ndarray  # (N,) column of m_n, -1 where the node has no congestion term
    theta_cols: np.ndarray  # (N,) column of theta_n, -1 likewise
    col_cost: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    integrality: np.ndarray  # bool: integer column
    matrix: sp.csc_matrix
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


class _Rows:
    """Accumulates rows as COO triplets."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.kind: list[str] = []
        self.index: list[int] = []

    def add(self, cols, vals, lower: float, upper: float, kind: str, index: int) -> None:
        row = len(self.lower)
        self.rows.append(np.full(len(cols), row, dtype=np.int64))
        self.cols.append(np.asarray(cols, dtype=np.int64))
        self.vals.append(np.asarray(vals, dtype=float))
        self.lower.append(lower)
        self.upper.append(upper)
        self.kind.append(kind)
        self.index.append(index)

    def add_block(self, row_of, cols, vals, lower, upper, kind, index) -> None:
        """Many rows at once: ``row_of[j]`` is the block row of nonzero j."""
        start = len(self.lower)
        self.rows.append(start + np.asarray(row_of, dtype=np.int64))
        self.cols.append(np.asarray(cols, dtype=np.int64))
        self.vals.append(np.asarray(vals, dtype=float))
        self.lower.extend(_per_row(lower, len(index)))
        self.upper.extend(_per_row(upper, len(index)))
        self.kind.extend([kind] * len(index))
        self.index.extend(np.asarray(index).tolist())


def _per_row(bound, rows: int) -> list[float]:
    """A row bound (a number or one per row) as a list of ``rows`` floats."""
    if np.ndim(bound) == 0:
        return [float(bound)] * rows
    return np.broadcast_to(bound, rows).tolist()


def build_milp(problem: Problem) -> MilpArrays:
    """Assemble the MILP of ``problem`` (vectorised; no solver involved)."""
    pair_request, pair_node = np.nonzero(problem.allowed)
    num_pairs = len(pair_request)
    num_req = problem.num_requests
    defer = problem.deferral_allowed
    cost = [problem.pair_cost()[pair_request, pair_node]]
    integer = [np.ones(num_pairs, dtype=bool)]
    next_col = num_pairs
    defer_offset = None
    if defer:
        defer_offset = next_col
        cost.append(np.full(num_req, problem.deferral_cost()))
        integer.append(np.ones(num_req, dtype=bool))
        next_col += num_req

    rows = _Rows()
    # assignment: sum_n x[r, n] + d[r] = 1
    assign_cols = [np.arange(num_pairs)]
    assign_rows = [pair_request]
    if defer:
        assign_cols.append(defer_offset + np.arange(num_req))
        assign_rows.append(np.arange(num_req))
    rows.add_block(
        np.concatenate(assign_rows),
        np.concatenate(assign_cols),
        np.ones(sum(len(c) for c in assign_cols)),
        1.0,
        1.0,
        "assign",
        np.arange(num_req),
    )

    # memory: sum_r M[r, n] x[r, n] <= cap_n, where it can bind
    demand = problem.memory_gb[pair_request, pair_node]
    for n in range(problem.num_nodes):
        cap = problem.node_memory_gb[n]
        on_n = np.flatnonzero(pair_node == n)
        if np.isfinite(cap) and demand[on_n].sum() > cap:
            rows.add(on_n, demand[on_n], -np.inf, cap, "memory", n)

    # bandwidth: sum U[r] x[r, n] over pairs whose path crosses link k <= B_k
    crosses = problem.route_links[problem.request_site[pair_request], pair_node]  # (P, K)
    upload = problem.upload_megabits[pair_request]
    for k in range(len(problem.link_ids)):
        on_k = np.flatnonzero(crosses[:, k])
        if on_k.size == 0:
            continue
        worst = np.zeros(num_req)
        np.maximum.at(worst, pair_request[on_k], upload[on_k])
        if worst.sum() > problem.link_capacity_megabits[k]:
            rows.add(on_k, upload[on_k], -np.inf, problem.link_capacity_megabits[k], "link", k)

    # quality floor: sum (Q - T) x >= 0 over placed requests
    if problem.quality_target is not None:
        gain = problem.quality[pair_request, pair_node] - problem.quality_target
        rows.add(np.arange(num_pairs), gain, 0.0, np.inf, "quality", 0)

    # congestion: m_n = sum_r x[r, n];  theta_n >= a_i m_n + b_i
    count_cols = np.full(problem.num_nodes, -1, dtype=np.int64)
    theta_cols = np.full(problem.num_nodes, -1, dtype=np.int64)
    for n, curve in enumerate(problem.congestion_curves):
        slopes, intercepts = curve.segments()
        useful = (slopes > 1e-12) | (intercepts > 1e-12)
        if not useful.any():
            continue
        count_cols[n], theta_cols[n] = next_col, next_col + 1
        next_col += 2
        cost.append(np.array([0.0, problem.latency_cost_weight]))
        integer.append(np.array([False, False]))
        on_n = np.flatnonzero(pair_node == n)
        rows.add(
            np.append(on_n, count_cols[n]),
            np.append(np.ones(len(on_n)), -1.0),
            0.0,
            0.0,
            "count",
            n,
        )
        # theta_n - a_i m_n >= b_i, one row per useful segment, added as one block
        a, b = slopes[useful], intercepts[useful]
        pieces = len(a)
        rows.add_block(
            np.repeat(np.arange(pieces), 2),
            np.tile([theta_cols[n], count_cols[n]], pieces),
            np.column_stack([np.ones(pieces), -a]).ravel(),
            b,
            np.inf,
            "congestion",
            np.full(pieces, n),
        )

    num_cols = next_col
    col_upper = np.ones(num_cols)
    col_lower = np.zeros(num_cols)
    for n in np.flatnonzero(count_cols >= 0):
        col_upper[count_cols[n]] = np.count_nonzero(pair_node == n)
        col_upper[theta_cols[n]] = np.inf
    matrix = sp.csc_matrix(
        (
            np.concatenate(rows.vals),
            (np.concatenate(rows.rows), np.concatenate(rows.cols)),
        ),
        shape=(len(rows.lower), num_cols),
    )
    return MilpArrays(
        pair_request=pair_request,
        pair_node=pair_node,
        defer_offset=defer_offset,
        count_cols=count_cols,
        theta_cols=theta_cols,
        col_cost=np.concatenate(cost),
        col_lower=col_lower,
        col_upper=col_upper,
        integrality=np.concatenate(integer),
        matrix=matrix,
        row_lower=np.array(rows.lower),
        row_upper=np.array(rows.upper),
        row_kind=tuple(rows.kind),
        row_index=np.array(rows.index, dtype=np.int64),
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
