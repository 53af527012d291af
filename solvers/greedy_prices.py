"""Dual prices for the greedy: the Lagrangian of the capacity rows and of the node counts.

Dualising memory (``lambda_n``), bandwidth (``mu_k``), the quality floor (``nu``) and the count
of each node (``pi_n``, which splits the congestion term off) leaves a problem that separates by
request: each takes the column with the least *reduced cost*::

    c[r, n] + lambda_n M[r, n] + sum_k mu_k U[r] P[r, n, k] - nu (Q[r, n] - T) + pi_n

and each node the count ``m`` minimising ``kappa E_n(m) - pi_n m``. The dual function (the sum
of those minima less the priced capacities) is a lower bound on the optimum for any prices with
``lambda, mu, nu >= 0``. It is maximised on an entropy-smoothed version (soft minima at a
temperature that is lowered in stages) by a projected quasi-Newton method, started from the
smoothed function's own (damped) curvature: with a few dozen prices, that takes far fewer
evaluations than subgradient steps, and the smoothing spreads requests that are indifferent
between nodes instead of letting them all jump at once. The soft-min weights at the last
temperature also give the rounding (:mod:`qlmio_opt.solvers.greedy_rounding`) its order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qlmio_opt.solvers.greedy_state import FloatArray, Floats, IntArray, Window
from qlmio_opt.solvers.tuning import (
    ARMIJO,
    BIG,
    DAMPING,
    DENSE_LIMIT,
    EXP_FLOOR,
    GRADIENT_TOL,
    MIN_CURVATURE,
    MIN_STEP,
    STALL,
    TINY,
)

outer = np.multiply.outer
Objective = Callable[[FloatArray], tuple[float, FloatArray]]
"""A function to minimise: its value and gradient at a point."""


@dataclass(frozen=True)
class Prices:
    """Dual prices, all ``>= 0`` except ``count`` (``pi``).

    Attributes
    ----------
    memory
        ``(C,)`` per GB on each column (0 without a memory row).
    link
        ``(L,)`` per megabit on each kept link.
    quality
        Per unit of ``Q - T`` on the quality floor.
    count
        ``(C,)`` per request on each node (0 on deferral).
    """

    memory: FloatArray
    link: FloatArray
    quality: float
    count: FloatArray


class Dual:
    """The dual function of a :class:`Window` and its soft (smoothed) version.

    The prices form one vector ``y``: first the capacity rows (memory columns, links, the
    quality floor), each in *request units* (price times the typical use of one request, so
    the coordinates are commensurate for the optimiser), then one count price per congested
    node. A request's reduced costs are ``cost + y @ A`` for a ``(D, C * R)`` matrix ``A``.
    Where ``A`` has at most :data:`DENSE_LIMIT` entries it is kept densely in single precision
    (``dense``) and each product is one matrix-vector call: on windows of a few hundred
    requests the dozen small array operations of the structured products cost more than their
    arithmetic. Larger windows never form it: each memory and count row touches one column, and
    a link row touches the pairs whose path crosses it with the request's upload, so the
    product and its transpose are a few element-wise passes over the ``(C, R)`` pairs (no BLAS
    call, and memory linear in the pairs: a dense ``A`` of a 10,000 x 12 window took 50 MB and
    most of the first solve's time).
    """

    def __init__(self, window: Window, allowed_counts: IntArray) -> None:
        w = self.w = window
        num_r, width = w.cost.shape
        finite = np.isfinite(w.cost)
        self.exact_cost = np.ascontiguousarray(w.cost.T)  # (C, R), inf where not allowed
        self.cost = np.where(finite, w.cost, BIG).T.astype(np.float32)  # (C, R)
        self.memory_cols = np.flatnonzero(np.isfinite(w.memory_cap))
        self.nodes = np.flatnonzero((w.congestion[:, 1:] > TINY).any(axis=1))
        self.has_quality = w.gain is not None
        self.num_memory, self.num_links = len(self.memory_cols), len(w.links)
        units = [_typical(w.memory[:, n], finite[:, n]) for n in self.memory_cols]
        caps = list(w.memory_cap[self.memory_cols])
        upload_unit = _typical(w.upload, True)
        units += [upload_unit] * self.num_links
        caps += list(w.link_cap)
        if w.gain is not None:
            units.append(_typical(w.gain, finite))
            caps.append(0.0)
        self.num_capacity = len(units)
        self.unit = np.asarray(units, dtype=float)
        self.scaled_cap = np.asarray(caps, dtype=float) / np.maximum(self.unit, TINY)
        unit = np.maximum(self.unit, TINY)
        # coefficients in request units: memory (M, R) on its column, the upload on every link
        # of a pair's path (per site and column), the quality gain (C, R) on the floor's row
        self.memory = w.memory[:, self.memory_cols].T / unit[: self.num_memory, None]
        self.upload = w.upload / upload_unit if self.num_links else np.zeros(num_r)
        self.paths = w.paths.astype(float)  # (S, C, L)
        self.site = w.site
        self.site_onehot = np.zeros((num_r, len(w.paths)))  # (R, S): sums pairs by site
        self.site_onehot[np.arange(num_r), w.site] = 1.0
        self.gain = -w.gain.T / unit[-1] if w.gain is not None else None
        self.coef32 = (
            self.memory.astype(np.float32),
            self.upload.astype(np.float32),
            self.paths.astype(np.float32),
            None if self.gain is None else self.gain.astype(np.float32),
            self.site_onehot.astype(np.float32),
        )
        self.shape = (width, num_r)
        m = np.arange(w.congestion.shape[1], dtype=float)
        self.m = m
        limit = allowed_counts[self.nodes][:, None]
        self.congestion = np.where(m[None, :] <= limit, w.congestion[self.nodes], BIG)
        self.congestion = self.congestion.astype(np.float32)
        self.m32 = m.astype(np.float32)
        # reduced costs of the pairs, then the node terms (see :meth:`soft`)
        self.buffer = np.empty(self.cost.size + self.congestion.size, dtype=np.float32)
        self.dense = self._dense() if self.size * self.cost.size <= DENSE_LIMIT else None

    def _dense(self) -> FloatArray:
        """``(D, C * R)`` float32: the price rows written out, for windows small enough."""
        width, num_r = self.shape
        dense = np.zeros((self.size, width, num_r))
        num_memory, cut = self.num_memory, self.num_capacity
        dense[np.arange(num_memory), self.memory_cols] = self.memory
        if self.num_links:
            crossing = self.w.crossing  # (R, C, L)
            dense[num_memory : num_memory + self.num_links] = (
                crossing * self.upload[:, None, None]
            ).transpose(2, 1, 0)
        if self.gain is not None:
            dense[cut - 1] = self.gain
        dense[cut + np.arange(len(self.nodes)), self.nodes] = 1.0
        return dense.reshape(self.size, self.cost.size).astype(np.float32)

    @property
    def size(self) -> int:
        return self.num_capacity + len(self.nodes)

    def prices(self, y: FloatArray) -> Prices:
        """Unpack a price vector into :class:`Prices` (per GB, per megabit, ...)."""
        w = self.w
        raw = y[: self.num_capacity] / np.maximum(self.unit, TINY)
        num_memory = self.num_memory
        memory = np.zeros(w.num_nodes + 1)
        memory[self.memory_cols] = raw[:num_memory]
        link = raw[num_memory : num_memory + self.num_links]
        quality = float(raw[-1]) if self.has_quality else 0.0
        count = np.zeros(w.num_nodes + 1)
        count[self.nodes] = y[self.num_capacity :]
        return Prices(memory=memory, link=link, quality=quality, count=count)

    def _coefficients(self, exact: bool) -> tuple[Any, ...]:
        """Cost and coefficients in float64 (``exact``) or float32."""
        if exact:
            return (
                self.exact_cost,
                self.memory,
                self.upload,
                self.paths,
                self.gain,
                self.site_onehot,
            )
        return (self.cost, *self.coef32)

    def reduced(self, y: Floats, exact: bool = False, out: Floats | None = None) -> Floats:
        """``(C, R)`` reduced costs ``cost + y @ A`` (float64 if ``exact``, else float32)."""
        cost, memory, upload, paths, gain, _ = self._coefficients(exact)
        y = np.asarray(y, dtype=cost.dtype)
        if out is None:
            red = cost.copy()
        else:
            red = out
            np.copyto(red, cost)
        num_memory, cut = self.num_memory, self.num_capacity
        if num_memory:
            red[self.memory_cols] += y[:num_memory, None] * memory
        if self.num_links:
            per_site = paths @ y[num_memory : num_memory + self.num_links]  # (S, C)
            red += per_site.T[:, self.site] * upload[None, :]
        if gain is not None:
            red += y[cut - 1] * gain
        if len(self.nodes):
            red[self.nodes] += y[cut:, None]
        return red

    def row_sums(self, p: Floats) -> FloatArray:
        """``A @ p`` for ``(C, R)`` pair weights ``p`` (float32): each price row's expected use."""
        _, memory, upload, paths, gain, onehot = self._coefficients(p.dtype == np.float64)
        out = np.empty(self.size, dtype=float)
        num_memory, cut = self.num_memory, self.num_capacity
        out[:num_memory] = np.einsum("mr,mr->m", memory, p[self.memory_cols])
        if self.num_links:
            by_site = (p * upload[None, :]) @ onehot  # (C, S)
            out[num_memory : num_memory + self.num_links] = np.einsum("sck,cs->k", paths, by_site)
        if gain is not None:
            out[cut - 1] = np.einsum("cr,cr->", gain, p)
        out[cut:] = p[self.nodes].sum(axis=1)
        return out

    def _node_terms(self, y: FloatArray) -> FloatArray:
        """``(N', m)`` ``kappa E(m) - pi m`` of each congested node."""
        pi = y[self.num_capacity :, None].astype(np.float32)
        return self.congestion - pi * self.m32[None, :]

    def weights(self, y: FloatArray, tau: float) -> Floats:
        """``(C, R)`` soft-min weights of every request's columns at temperature ``tau``."""
        return _soft_min(self.reduced(y), tau)[1]

    def value(self, y: FloatArray) -> tuple[float, IntArray]:
        """The exact dual value (a lower bound) and the columns minimising the reduced cost.

        Computed in double precision from the problem arrays (the bound is reported).
        """
        red = self.reduced(y, exact=True)
        columns = np.argmin(red, axis=0)
        total = red.min(axis=0).sum() - y[: self.num_capacity] @ self.scaled_cap
        limit = self.congestion < BIG / 2
        terms = self.w.congestion[self.nodes] - y[self.num_capacity :, None] * self.m[None, :]
        total += np.where(limit, terms, np.inf).min(axis=1, initial=np.inf).sum()
        return float(total), columns

    def soft(self, y: FloatArray, tau: float) -> tuple[float, FloatArray]:
        """Minus the smoothed dual at temperature ``tau`` and its gradient (for a minimiser).

        The reduced costs of the pairs and the node terms share one buffer, so that the
        element-wise steps of their soft minima run once over both.
        """
        y32 = y.astype(np.float32)
        cut, pairs = self.num_capacity, self.cost.size
        buffer = self.buffer
        red, node = (
            buffer[:pairs].reshape(self.shape),
            buffer[pairs:].reshape(self.congestion.shape),
        )
        if self.dense is None:
            self.reduced(y32, out=red)
        else:  # a BLAS call: the greedy runs it on one thread (``runtime.hot_path``)
            np.dot(y32, self.dense, out=buffer[:pairs])
            red += self.cost
        np.multiply(y32[cut:, None], self.m32, out=node)
        np.subtract(self.congestion, node, out=node)
        low, node_low = np.minimum.reduce(red, axis=0), np.minimum.reduce(node, axis=1)
        red -= low
        node -= node_low[:, None]
        buffer *= np.float32(-1.0 / tau)
        np.maximum(buffer, np.float32(EXP_FLOOR), out=buffer)  # keeps exp off its slow path
        np.exp(buffer, out=buffer)
        red_sum, node_sum = np.add.reduce(red, axis=0), np.add.reduce(node, axis=1)
        red /= red_sum
        node /= node_sum[:, None]
        add = np.add.reduce
        total = float(add(low, dtype=float) + add(node_low, dtype=float))
        total -= tau * float(add(np.log(red_sum), dtype=float) + add(np.log(node_sum), dtype=float))
        total -= y[:cut] @ self.scaled_cap
        if self.dense is None:
            grad = self.row_sums(red)
        else:
            grad = (self.dense @ buffer[:pairs]).astype(float)
        grad[:cut] -= self.scaled_cap
        grad[cut:] -= node @ self.m32
        return -total, -grad

    def _column_blocks(self) -> list[tuple[int, IntArray, FloatArray]]:
        """Per column, the price rows that touch it and their ``(rows, R)`` coefficients."""
        blocks = []
        memory_row = {int(n): i for i, n in enumerate(self.memory_cols)}
        count_row = {int(n): self.num_capacity + i for i, n in enumerate(self.nodes)}
        crosses = self.w.crossing  # (R, C, L), built with the window
        for c in range(self.shape[0]):
            rows, coefs = [], []
            if c in memory_row:
                rows.append(memory_row[c])
                coefs.append(self.memory[memory_row[c]])
            for k in range(self.num_links):
                coef = crosses[:, c, k] * self.upload
                if coef.any():
                    rows.append(self.num_memory + k)
                    coefs.append(coef)
            if self.gain is not None and self.gain[c].any():
                rows.append(self.num_capacity - 1)
                coefs.append(self.gain[c])
            if c in count_row:
                rows.append(count_row[c])
                coefs.append(np.ones(self.shape[1]))
            if rows:
                blocks.append((c, np.asarray(rows), np.array(coefs)))
        return blocks

    def curvature(self, y: FloatArray, tau: float) -> FloatArray:
        """``(D, D)`` Hessian of minus the smoothed dual at ``y`` (positive semidefinite).

        It is ``(A diag(p) A' - B B') / tau`` summed over requests (``p`` the soft-min weights,
        ``B`` each request's expected row use under them), plus the variance of each node's
        count on its count price: a few small products per column, as each price row touches
        few columns.
        """
        p = _soft_min(self.reduced(y), tau)[1].astype(float)
        q = _soft_min(self._node_terms(y), tau, axis=1)[1].astype(float)
        size = self.size
        if self.dense is not None:
            dense = self.dense.astype(float)
            weighted = dense * p.reshape(-1)
            hessian = weighted @ dense.T
            use = weighted.reshape(size, *self.shape).sum(axis=1)  # (D, R)
        else:
            hessian = np.zeros((size, size))
            use = np.zeros((size, self.shape[1]))
            for c, touch, coef in self._column_blocks():
                weighted = coef * p[c]
                # einsum, not matmul: a threaded BLAS can stall on a busy machine
                hessian[np.ix_(touch, touch)] += np.einsum("ir,jr->ij", weighted, coef)
                use[touch] += weighted
        hessian -= np.einsum("ir,jr->ij", use, use)
        mean = q @ self.m
        counts = np.arange(self.num_capacity, size)
        hessian[counts, counts] += np.maximum(q @ (self.m * self.m) - mean * mean, 0.0)
        return hessian / tau

    def inverse_hessian(self, y: FloatArray, tau: float, damping: float) -> FloatArray | None:
        """The inverse of :meth:`curvature` plus ``damping`` times its mean diagonal (None
        where it has none)."""
        if not self.size:
            return None
        hessian = self.curvature(y, tau)
        level = np.trace(hessian) / self.size
        if not level > 0.0:
            return None
        return np.linalg.inv(hessian + damping * level * np.eye(self.size))

    def maximise(
        self,
        y0: FloatArray | None,
        taus: tuple[float, ...],
        max_evals: int | tuple[int, ...],
        damping: float | None = DAMPING,
    ) -> tuple[FloatArray, int]:
        """Maximise the smoothed dual at each temperature in turn.

        ``max_evals`` is the number of evaluations allowed per temperature (one number, or one
        per temperature). The quasi-Newton method starts from the damped curvature at ``y0``
        (:meth:`inverse_hessian`; None: from a multiple of the identity). Returns the price
        vector and the number of evaluations used.
        """
        y = np.zeros(self.size) if y0 is None else y0
        lower = np.arange(self.size) < self.num_capacity
        evaluations = 0
        limits = np.broadcast_to(max_evals, (len(taus),))
        inverse: FloatArray | None = None
        previous = taus[0] if len(taus) else 1.0
        if damping is not None and len(taus):
            start = np.maximum(y, np.where(lower, 0.0, -np.inf))
            inverse = self.inverse_hessian(start, taus[0], damping)
        for tau, limit in zip(taus, limits, strict=True):
            if inverse is not None:
                inverse = inverse * (tau / previous)  # curvature grows as 1 / tau
            y, used, inverse = projected_bfgs(
                partial(self.soft, tau=tau), y, lower, int(limit), inverse
            )
            evaluations += used
            previous = tau
        return y, evaluations


def projected_bfgs(
    fun: Objective,
    x0: FloatArray,
    lower: NDArray[np.bool_],
    max_evals: int,
    inverse: FloatArray | None = None,
    stall: float = STALL,
) -> tuple[FloatArray, int, FloatArray | None]:
    """Minimise ``fun`` (value, gradient) subject to ``x >= 0`` where ``lower``.

    A projected quasi-Newton method with a dense inverse-Hessian estimate (there are only a
    few dozen prices): the BFGS direction on the free variables, a step projected onto the
    bounds and halved until it decreases enough (Armijo). Stops after ``max_evals``
    evaluations or two steps in a row that gain less than ``stall`` (relative).

    Returns
    -------
    tuple
        The last accepted point, the number of evaluations and the inverse-Hessian estimate
        (to warm-start a related problem).
    """
    floor = np.where(lower, 0.0, -np.inf)
    x = np.maximum(x0, floor)
    f, g = fun(x)
    evals, stalled = 1, 0
    dot, maximum = np.dot, np.maximum
    while evals < max_evals and stalled < 2:
        pinned = (x <= floor) & (g > 0.0)
        free_g = g.copy()
        free_g[pinned] = 0.0
        size = max(float(free_g.max(initial=0.0)), -float(free_g.min(initial=0.0)))
        if size < GRADIENT_TOL:
            break
        if inverse is None:
            d, t = -free_g, 1.0 / size
        else:
            d, t = -dot(inverse, free_g), 1.0
            d[pinned] = 0.0
            if dot(d, free_g) >= 0.0:
                d, t, inverse = -free_g, 1.0 / size, None
        while True:
            x_new = maximum(x + d if t == 1.0 else x + t * d, floor)
            f_new, g_new = fun(x_new)
            evals += 1
            s = x_new - x
            armijo = f_new <= f + ARMIJO * float(dot(free_g, s))
            if armijo or evals >= max_evals or t < MIN_STEP:
                break
            t *= 0.5
        if f_new > f:
            break
        stalled = stalled + 1 if f - f_new <= stall * max(1.0, abs(f)) else 0
        y = g_new - g
        sy = float(dot(s, y))
        if sy > MIN_CURVATURE:
            if inverse is None:
                inverse = np.eye(len(x)) * (sy / float(dot(y, y)))
            hy = dot(inverse, y)
            rho = 1.0 / sy
            left = (rho * rho * (sy + float(dot(y, hy)))) * s
            left -= rho * hy
            update = outer(left, s)
            update -= outer(rho * s, hy)
            inverse += update
        x, f, g = x_new, f_new, g_new
    return x, evals, inverse


def _typical(values: FloatArray, mask: NDArray[np.bool_] | bool) -> float:
    """Mean of the nonzero ``|values|`` over ``mask`` (1 if there is none)."""
    magnitude = np.where(mask, np.abs(values), 0.0)
    count = int((magnitude > 0).sum())
    return float(magnitude.sum() / count) if count else 1.0


def _soft_min(values: Floats, tau: float, axis: int = 0) -> tuple[Floats, Floats]:
    """``-tau log sum exp(-v / tau)`` along ``axis`` (0 or 1) and the softmax weights."""
    low = values.min(axis=axis)
    shifted = low[None, :] if axis == 0 else low[:, None]
    z = np.subtract(shifted, values)
    z *= np.float32(1.0 / tau)
    # terms below exp(-40) do not matter; clipping keeps exp off its slow underflow path
    np.maximum(z, np.float32(EXP_FLOOR), out=z)
    np.exp(z, out=z)
    total = z.sum(axis=axis)
    z /= total[None, :] if axis == 0 else total[:, None]
    return low - tau * np.log(total), z
