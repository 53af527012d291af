"""The MILP of ``docs/formulation.md`` as a readable Pyomo model.

:func:`build_pyomo_model` turns a :class:`Problem` into a ``ConcreteModel``; it calls no solver,
so any Pyomo MIP solver can take the result. Indices are positions in the problem's arrays:
request ``r`` is ``problem.request_ids[r]``, node ``n`` is ``problem.node_ids[n]``, link ``k`` is
``problem.link_ids[k]``.

Components (names follow the document)::

    REQUESTS, NODES, LINKS     index sets
    PAIRS                      allowed (r, n): the only pairs with an x variable
    CONGESTED                  nodes with at least one congestion piece
    PIECES                     (n, i): piece i of E_n, kept when a_ni or b_ni is non-zero

    x[r, n]      binary, over PAIRS
    d[r]         binary, only when deferral is on
    count[n]     requests placed on n (over CONGESTED)
    theta[n]     >= 0, congestion latency of n (over CONGESTED)

    assign[r]              sum_n x[r, n] + d[r] = 1
    memory[n]              sum_r M[r, n] x[r, n] <= cap_n      (only if it can bind)
    bandwidth[k]           sum U[r] P[r, n, k] x[r, n] <= B_k    (only if it can bind)
    quality                sum (Q[r, n] - T) x[r, n] >= 0       (quality_floor only)
    count_def[n]           count[n] = sum_r x[r, n]
    congestion[n, i]       theta[n] >= a_ni count[n] + b_ni
    cost                   sum c x + kappa sum theta + delta sum d

One difference in form, none in meaning: the document writes each congestion piece on
``sum_r x[r, n]`` directly. Here that sum is named once as ``count[n]`` (one equality row per
congested node), so a piece row has two nonzeros instead of one per request that may use the node:
on a 1,000-request window the congestion rows hold about 12,000 nonzeros instead of 2.45 million.
Every feasible ``x`` gives the same ``theta`` and objective in both forms, and the columns and rows
are those of the direct highspy build (``formulations/milp_arrays.py``). ``theta`` exists only for
nodes with a congestion piece; elsewhere ``E_n = 0``.

Rows that cannot bind are left out, as the document says: a memory row whose allowed requests all
fit together, a link row whose largest possible load (each request that may cross it counted
once) is within its capacity, and congestion pieces with zero slope and intercept. A request with
no allowed node and deferral off gets an ``assign`` row that is the constant ``1 <= 0``
(``Constraint.Infeasible``): the model is still well-formed and HiGHS reports it infeasible.
:class:`qlmio_opt.solvers.exact_pyomo.ExactPyomo` catches that case before building.

Coefficients enter as plain Python floats (``ndarray.tolist()``) through ``quicksum``, and the
garbage collector is paused while the model is assembled (Pyomo creates many small objects; the
collector's passes cost ~40% otherwise). Measured on the development machine (2 cores) for
``instances/window_095.json`` (1,000 requests x 7 nodes, 6,958 pairs, 2,465 congestion pieces;
7,972 columns, 3,484 rows): building the model takes about 0.3 s; handing it to HiGHS through
``pyomo.contrib.solver`` (``set_instance``) about 0.9 s more.
"""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo
from pyomo.common.gc_manager import PauseGC

from qlmio_opt.formulations.problem import Problem

# Pieces whose slope and intercept are both below this are ``theta >= 0`` again: dropped.
PIECE_TOL = 1e-12


def build_pyomo_model(problem: Problem) -> pyo.ConcreteModel:
    """The MILP of ``problem`` as a Pyomo ``ConcreteModel`` (no solver is called)."""
    with PauseGC():  # the collector's passes over many new small objects cost ~40% otherwise
        m = pyo.ConcreteModel(name=problem.name)
        add_variables(m, problem)
        add_constraints(m, problem)
        set_objective(m, problem)
    return m


def add_variables(m: pyo.ConcreteModel, p: Problem) -> None:
    """Index sets and variables: ``x`` on allowed pairs, ``d`` with deferral, count and theta."""
    rows, cols = np.nonzero(p.allowed)
    m.REQUESTS = pyo.Set(initialize=range(p.num_requests), ordered=True)
    m.NODES = pyo.Set(initialize=range(p.num_nodes), ordered=True)
    m.LINKS = pyo.Set(initialize=range(len(p.link_ids)), ordered=True)
    m.PAIRS = pyo.Set(
        dimen=2, ordered=True, initialize=list(zip(rows.tolist(), cols.tolist(), strict=True))
    )
    pieces = _congestion_pieces(p)
    m.CONGESTED = pyo.Set(initialize=sorted(pieces), ordered=True)
    m.PIECES = pyo.Set(
        dimen=2,
        ordered=True,
        initialize=[(n, i) for n in sorted(pieces) for i in range(len(pieces[n]))],
    )

    m.x = pyo.Var(m.PAIRS, domain=pyo.Binary)
    if p.deferral_allowed:
        m.d = pyo.Var(m.REQUESTS, domain=pyo.Binary)
    on_node = np.bincount(cols, minlength=p.num_nodes).tolist()
    m.count = pyo.Var(
        m.CONGESTED, domain=pyo.NonNegativeReals, bounds=lambda _m, n: (0, on_node[n])
    )
    m.theta = pyo.Var(m.CONGESTED, domain=pyo.NonNegativeReals)


def add_constraints(m: pyo.ConcreteModel, p: Problem) -> None:
    """Assignment, memory, bandwidth, quality floor and congestion rows (skipping idle ones)."""
    rows, cols = np.nonzero(p.allowed)
    nodes_of = _group(cols, rows, p.num_requests)  # allowed nodes of each request
    requests_on = _group(rows, cols, p.num_nodes)  # requests allowed on each node
    memory = p.memory_gb.tolist()
    cap = p.node_memory_gb.tolist()
    x = m.x
    defer = p.deferral_allowed

    def assign(m, r):
        if not nodes_of[r] and not defer:
            return pyo.Constraint.Infeasible  # the request can go nowhere
        placed = pyo.quicksum(x[r, n] for n in nodes_of[r])
        return placed + m.d[r] == 1 if defer else placed == 1

    m.assign = pyo.Constraint(m.REQUESTS, rule=assign)

    def memory_row(m, n):
        demand = sum(memory[r][n] for r in requests_on[n])
        if not np.isfinite(cap[n]) or demand <= cap[n]:
            return pyo.Constraint.Skip  # unbounded, or everything allowed fits together
        return pyo.quicksum(memory[r][n] * x[r, n] for r in requests_on[n]) <= cap[n]

    m.memory = pyo.Constraint(m.NODES, rule=memory_row)

    crossing = _link_pairs(p, rows, cols)
    upload = p.upload_megabits.tolist()
    link_cap = p.link_capacity_megabits.tolist()

    def bandwidth(m, k):
        pairs = crossing[k]
        worst = sum(upload[r] for r in {r for r, _ in pairs})  # each request crosses once at most
        if worst <= link_cap[k]:
            return pyo.Constraint.Skip
        return pyo.quicksum(upload[r] * x[r, n] for r, n in pairs) <= link_cap[k]

    m.bandwidth = pyo.Constraint(m.LINKS, rule=bandwidth)

    if p.floor_gain is not None and len(m.PAIRS):  # with no pair at all, 0 >= 0 holds
        gain = p.floor_gain.tolist()
        m.quality = pyo.Constraint(
            expr=pyo.quicksum(gain[r][n] * x[r, n] for r, n in m.PAIRS) >= 0.0
        )

    pieces = _congestion_pieces(p)

    def count_def(m, n):
        return m.count[n] == pyo.quicksum(x[r, n] for r in requests_on[n])

    m.count_def = pyo.Constraint(m.CONGESTED, rule=count_def)

    def congestion(m, n, i):
        a, b = pieces[n][i]
        return m.theta[n] >= a * m.count[n] + b

    m.congestion = pyo.Constraint(m.PIECES, rule=congestion)


def set_objective(m: pyo.ConcreteModel, p: Problem) -> None:
    """``min sum c x + kappa sum theta + delta sum d``."""
    cost = p.pair_cost().tolist()
    total = pyo.quicksum(cost[r][n] * m.x[r, n] for r, n in m.PAIRS)
    if len(m.CONGESTED):
        total += p.latency_cost_weight * pyo.quicksum(m.theta[n] for n in m.CONGESTED)
    if p.deferral_allowed:
        total += p.deferral_cost() * pyo.quicksum(m.d[r] for r in m.REQUESTS)
    m.cost = pyo.Objective(expr=total, sense=pyo.minimize)


def assignment_from_model(m: pyo.ConcreteModel, num_requests: int) -> np.ndarray:
    """Node index per request (-1 = deferred or unset) from the ``x`` values loaded in ``m``."""
    assignment = np.full(num_requests, -1, dtype=np.int64)
    for (r, n), var in m.x.items():
        if var.value is not None and var.value > 0.5:
            assignment[r] = n
    return assignment


def _group(values: np.ndarray, keys: np.ndarray, size: int) -> list[list[int]]:
    """``out[key]`` = the ``values`` paired with ``key``, in order."""
    out: list[list[int]] = [[] for _ in range(size)]
    for key, value in zip(keys.tolist(), values.tolist(), strict=True):
        out[key].append(value)
    return out


def _link_pairs(p: Problem, rows: np.ndarray, cols: np.ndarray) -> list[list[tuple[int, int]]]:
    """For each link, the allowed pairs whose path crosses it."""
    crosses = p.route_links[p.request_site[rows], cols]  # (pairs, links)
    out: list[list[tuple[int, int]]] = [[] for _ in p.link_ids]
    pair_idx, link_idx = np.nonzero(crosses)
    pair_r, pair_n = rows[pair_idx].tolist(), cols[pair_idx].tolist()
    for r, n, k in zip(pair_r, pair_n, link_idx.tolist(), strict=True):
        out[k].append((r, n))
    return out


def _congestion_pieces(p: Problem) -> dict[int, list[tuple[float, float]]]:
    """Node -> its pieces ``(a_i, b_i)`` of ``E_n``, without the all-zero ones."""
    pieces = {}
    for n, curve in enumerate(p.congestion_curves):
        slopes, intercepts = curve.segments()
        kept = [
            (float(a), float(b))
            for a, b in zip(slopes, intercepts, strict=True)
            if abs(a) > PIECE_TOL or abs(b) > PIECE_TOL
        ]
        if kept:
            pieces[n] = kept
    return pieces
