"""Stacked binary decision trees: their saved arrays, their checks and their numpy inference.

:class:`TreeEnsemble` is what both learned models' trees are once trained
(:meth:`TreeEnsemble.from_estimator`) or loaded (:func:`check_tree_arrays` on the arrays of the
``.npz``); :class:`TreeSettings` are the scikit-learn settings that a saved ensemble records and
that bound its size before its arrays are read.

Layout
------
All trees' nodes sit in one array (tree after tree, as the model files store them). Inference
walks *doubled* node indices, ``2 * node`` to go left and ``2 * node + 1`` to go right, so that
stepping down is one gather in ``children2`` (``children2[2 * node + right]`` is the doubled index
of the child); the per-node arrays (feature, threshold, missing-value direction, leaf value) are
repeated twice to be read with the same indices. A leaf points to itself on both sides and its
threshold is ``+inf`` (every value goes "left", to itself), so a shallower leaf simply stays put
while the deeper trees finish: every tree takes exactly ``depth`` steps.

Evaluation
----------
Rows are evaluated in blocks of about :data:`BLOCK_ELEMENTS` (row, tree) cells: for each block a
``(rows, trees)`` matrix of node indices starts at the roots and steps down one level per
iteration, every operation writing into work buffers allocated once per call. Keeping the
buffers small and reused is most of the speed: a fresh array of a few megabytes is paid in page
faults (on the 2-core machine about ten times the arithmetic). The first level needs no gather
of features or thresholds (every tree's root is known), the last step gathers the leaf values,
which are summed over the trees in tree order per row.

A split sends a row left when ``x <= threshold``, a missing value (NaN) the way its node was
trained to send it (``missing_go_to_left``), as scikit-learn's
``HistGradientBoosting*`` predictors do; the NaN test is only run when the block holds a
non-finite value. The results are bit-identical to the straightforward walk (one full
``(rows, trees)`` matrix per step, kept in ``tests/predictors/oracle.py`` with a node-by-node
walk of one row; ``tests/predictors/test_fast_path.py`` compares them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from qlmio_opt.predictors.model_files import ArraySpec, FileModel

__all__ = [
    "BLOCK_ELEMENTS",
    "DTYPE_KINDS",
    "TREE_FIELDS",
    "CompiledTrees",
    "LeafMasks",
    "TreeEnsemble",
    "TreeSettings",
    "canonical_arrays",
    "check_tree_arrays",
    "compile_leaf_masks",
    "compile_trees",
]

BLOCK_ELEMENTS = 2**14
"""About how many (row, tree) cells one block of the evaluation holds: each work buffer is then
at most 128 KiB (eight bytes a cell), small enough to be reused from the heap and to stay in the
CPU's L2 cache."""

TREE_FIELDS: Mapping[str, str] = {
    "value": "f",
    "feature_idx": "i",
    "num_threshold": "f",
    "missing_go_to_left": "b",
    "left": "i",
    "right": "i",
    "is_leaf": "b",
    "tree_offsets": "i",
    "baseline": "f",
}
"""The arrays of one ensemble in a model file and their kind (``f`` float, ``i`` integer,
``b`` boolean): one entry per node, but ``tree_offsets`` (where each tree starts, then the node
count) and ``baseline`` (the raw score before any tree)."""

DTYPE_KINDS = {"f": "fiu", "i": "iu", "b": "biu"}
"""The numpy dtype kinds a field of each kind may be stored as (cast on load)."""

_NODE_FIELDS = ("value", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right")


# --------------------------------------------------------------------------------------------
# settings, and the sizes they allow
# --------------------------------------------------------------------------------------------
class TreeSettings(FileModel):
    """The settings of scikit-learn's ``HistGradientBoosting*`` models that a saved ensemble
    records, checked as a model file's fields and by ``fit`` alike."""

    max_iter: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    max_leaf_nodes: int | None = Field(ge=2)
    max_depth: int | None = Field(ge=1)
    min_samples_leaf: int = Field(ge=1)
    random_state: int | None = Field(ge=0, le=2**32 - 1)

    def max_tree_nodes(self) -> int | None:
        """The most nodes one tree can have, ``None`` if neither ``max_leaf_nodes`` nor
        ``max_depth`` bounds it (a binary tree with ``L`` leaves has ``2 L - 1`` nodes; one of
        depth ``d``, counted in edges as scikit-learn does, at most ``2**d`` leaves)."""
        depth_leaves = None if self.max_depth is None else 2 ** min(self.max_depth, 62)
        bounds = [b for b in (self.max_leaf_nodes, depth_leaves) if b]
        return 2 * min(bounds) - 1 if bounds else None

    def array_specs(self, n_trees: int | None = None) -> dict[str, ArraySpec]:
        """What the tree fields of an ``.npz`` may hold: ``n_trees`` trees (default
        ``max_iter``, one per boosting iteration) of at most :meth:`max_tree_nodes` nodes."""
        trees = self.max_iter if n_trees is None else n_trees
        per_tree = self.max_tree_nodes()
        nodes = None if per_tree is None else trees * per_tree
        specs = {
            key: ArraySpec(DTYPE_KINDS[TREE_FIELDS[key]], (None,), nodes) for key in _NODE_FIELDS
        }
        return specs | {
            "is_leaf": ArraySpec(DTYPE_KINDS["b"], (None,), nodes),
            "tree_offsets": ArraySpec(DTYPE_KINDS["i"], (None,), trees + 1),
            "baseline": ArraySpec(DTYPE_KINDS["f"], (None,), 1),
        }

    def estimator_params(self) -> dict[str, Any]:
        """These settings as keyword arguments of the scikit-learn estimator, early stopping
        off (the number of trees is the setting, and the fit deterministic)."""
        return {k: getattr(self, k) for k in TreeSettings.model_fields} | {"early_stopping": False}


# --------------------------------------------------------------------------------------------
# the doubled-index walk
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CompiledTrees:
    """Stacked trees in the doubled-index layout of the module docstring.

    Attributes
    ----------
    children2
        ``(2 * n_nodes,)``: doubled index of the left (even entries) and right (odd) child of
        every node; a leaf's are itself.
    feature2, threshold2, missing_right2, value2
        ``(2 * n_nodes,)``: every node's split feature (0 at leaves), threshold (``+inf`` at
        leaves), whether a NaN goes right (``False`` at leaves) and value, each repeated twice.
    roots2
        ``(n_trees,)``: doubled index of every tree's root.
    depth
        Edges on the longest root-to-leaf path (the number of steps).
    """

    children2: np.ndarray
    feature2: np.ndarray
    threshold2: np.ndarray
    missing_right2: np.ndarray
    value2: np.ndarray
    roots2: np.ndarray
    depth: int

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return len(self.roots2)

    def raw_sum(self, X: np.ndarray) -> np.ndarray:
        """Sum over the trees of the leaf each row of ``X`` reaches (no baseline).

        Parameters
        ----------
        X
            ``(n, n_columns)`` float64, C-contiguous; the trees' feature indices must be below
            ``n_columns`` (extra columns are ignored).

        Returns
        -------
        numpy.ndarray
            ``(n,)`` float64.
        """
        n, n_cols = X.shape
        out = np.zeros(n)
        if n == 0 or self.n_trees == 0:
            return out
        rows = max(1, min(n, BLOCK_ELEMENTS // self.n_trees))
        shape = (rows, self.n_trees)
        # node, child, at (indices); x, threshold (values); right, missing (flags)
        work = [np.empty(shape, np.intp) for _ in range(3)] + [np.empty(shape) for _ in range(2)]
        work += [np.empty(shape, bool) for _ in range(2)]
        row_start = (np.arange(rows, dtype=np.intp) * n_cols)[:, None]
        for start in range(0, n, rows):
            block = X[start : start + rows]
            m = len(block)  # the last block may be shorter: views of the buffers' first rows
            leaves = self._leaf_values(block, [a[:m] for a in work], row_start[:m])
            np.sum(leaves, axis=1, out=out[start : start + m])
        return out

    def _leaf_values(
        self, block: np.ndarray, work: list[np.ndarray], row_start: np.ndarray
    ) -> np.ndarray:
        """``(rows, n_trees)``: the value of the leaf every row of ``block`` reaches in every
        tree, walked in the buffers ``work`` (the result is one of them)."""
        node, child, at, x, threshold, right, missing = work
        flat = block.reshape(-1)
        with np.errstate(invalid="ignore", over="ignore"):
            has_nan = not np.isfinite(np.add.reduce(flat))  # NaN or inf: the careful path
        # Indices were checked when the model was loaded: mode="wrap" only skips numpy's
        # bounds errors (and is its fastest mode), it never wraps anything here.
        # level 0: every tree's root is known, so gather the root features' columns directly
        roots = self.roots2
        np.take(block, self.feature2[roots], axis=1, out=x, mode="wrap")
        np.greater(x, self.threshold2[roots][None, :], out=right)  # left if x <= threshold
        if has_nan:
            right |= np.isnan(x) & self.missing_right2[roots][None, :]
        np.add(roots[None, :], right, out=at)
        np.take(self.children2, at, out=node, mode="wrap")
        for _ in range(self.depth - 1):
            np.take(self.feature2, node, out=at, mode="wrap")
            at += row_start
            np.take(flat, at, out=x, mode="wrap")
            np.take(self.threshold2, node, out=threshold, mode="wrap")
            np.greater(x, threshold, out=right)
            if has_nan:
                np.take(self.missing_right2, node, out=missing, mode="wrap")
                right |= np.isnan(x) & missing
            node += right
            np.take(self.children2, node, out=child, mode="wrap")
            node, child = child, node
        np.take(self.value2, node, out=x, mode="wrap")
        return x


def compile_trees(arrays: Mapping[str, np.ndarray]) -> CompiledTrees:
    """The doubled-index layout of checked tree arrays.

    Parameters
    ----------
    arrays
        ``value``, ``feature_idx``, ``num_threshold``, ``missing_go_to_left``, ``left``,
        ``right``, ``is_leaf`` (one entry per node, children local to their tree and after their
        parent) and ``tree_offsets`` (where each tree starts), as :func:`check_tree_arrays`
        returns them.

    Returns
    -------
    CompiledTrees
    """
    offsets = np.asarray(arrays["tree_offsets"], dtype=np.intp)
    n_nodes = len(arrays["value"])
    leaf = np.asarray(arrays["is_leaf"], dtype=bool)
    start = np.repeat(offsets[:-1], np.diff(offsets))  # tree start of every node
    own = np.arange(n_nodes, dtype=np.intp)
    left = np.where(leaf, own, start + np.asarray(arrays["left"], dtype=np.intp))
    right = np.where(leaf, own, start + np.asarray(arrays["right"], dtype=np.intp))
    depth = np.zeros(n_nodes, dtype=np.intp)
    for i in np.flatnonzero(~leaf):  # children come after their parent: one forward pass
        depth[left[i]] = depth[right[i]] = depth[i] + 1
    children = np.empty(2 * n_nodes, dtype=np.intp)
    children[0::2], children[1::2] = 2 * left, 2 * right
    feature = np.where(leaf, 0, arrays["feature_idx"]).astype(np.intp)
    threshold = np.where(leaf, np.inf, arrays["num_threshold"]).astype(np.float64)
    missing_right = ~(leaf | np.asarray(arrays["missing_go_to_left"], dtype=bool))
    out = CompiledTrees(
        children2=children,
        feature2=np.repeat(feature, 2),
        threshold2=np.repeat(threshold, 2),
        missing_right2=np.repeat(missing_right, 2),
        value2=np.repeat(np.asarray(arrays["value"], dtype=np.float64), 2),
        roots2=2 * offsets[:-1],
        depth=int(depth.max()) if n_nodes else 0,
    )
    for a in (out.children2, out.feature2, out.threshold2, out.missing_right2, out.value2):
        a.setflags(write=False)
    return out


# --------------------------------------------------------------------------------------------
# leaf masks: rows that share columns share their work
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LeafMasks:
    """The ensemble as per-feature tables of leaf masks (the QuickScorer idea).

    Number every tree's leaves from left to right; give every split node the mask of all
    leaves except those of its left subtree. A row reaches, in every tree, the leftmost leaf
    left in the AND of the masks of the nodes it passes to the *right* (``x > threshold``), and
    whether it passes a node to the right depends on one feature only. So per feature, with
    its distinct thresholds sorted, the AND over the nodes a value passes to the right is a
    prefix-AND: one row of ``prefix`` per rank (the number of thresholds below the value), one
    mask per tree. A row's leaves are the AND over the features of these rows; rows that share
    a feature's value share its row, which is what :meth:`raw_sum_blocks` exploits.

    Attributes
    ----------
    features
        The features some split reads, increasing.
    thresholds
        Per entry of ``features``: its distinct split thresholds, increasing.
    prefix
        Per entry of ``features``: ``(len(thresholds) + 1, n_trees)`` masks (row ``r``: the
        AND of the masks of the nodes on this feature with one of the ``r`` lowest thresholds).
    lowest
        ``(2**bits,)``: index of the lowest set bit of every mask value.
    leaf_value
        ``(n_trees * leaves,)``: value of leaf ``i`` of tree ``t`` at ``t * leaves + i``.
    leaf_offset
        ``(1, n_trees)``: ``t * leaves``.
    dtype
        The masks' unsigned integer type (8 or 16 bits).
    """

    features: np.ndarray
    thresholds: tuple[np.ndarray, ...]
    prefix: tuple[np.ndarray, ...]
    lowest: np.ndarray
    leaf_value: np.ndarray
    leaf_offset: np.ndarray
    dtype: type

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return self.leaf_offset.shape[1]

    def raw_sum_blocks(self, X: np.ndarray, n_blocks: int) -> np.ndarray:
        """:meth:`CompiledTrees.raw_sum` of rows made of ``n_blocks`` blocks of equal size.

        Parameters
        ----------
        X
            ``(n_blocks * R, n_columns)`` float64, C-contiguous, without NaN; block ``k`` is
            rows ``k * R`` to ``(k + 1) * R``. Any layout gives the right sums; the speed comes
            from columns equal in every block (``X[k * R + r, f]`` independent of ``k``: a
            window's per-request columns, computed once per request) and columns constant
            within each block (the per-node ones), which are looked up once per request or once
            per block instead of once per row. The columns are recognised by comparing them.
        n_blocks
            Number of blocks (a divisor of the row count).

        Returns
        -------
        numpy.ndarray
            ``(n,)`` float64, bit-identical to :meth:`CompiledTrees.raw_sum`.
        """
        n, n_cols = X.shape
        out = np.zeros(n)
        if n == 0 or self.n_trees == 0:
            return out
        if n_blocks < 1 or n % n_blocks:
            raise ValueError(f"{n} rows do not split into {n_blocks} equal blocks")
        X3 = X.reshape(n_blocks, n // n_blocks, n_cols)
        self._sum_reached_leaves(*self._column_masks(X3), out)
        return out

    def _column_masks(
        self, X3: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """The AND of every feature's prefix masks: ``(R, n_trees)`` for the columns equal in
        every block, ``(n_blocks, n_trees)`` for those constant within each block, and the
        ``(prefix, ranks)`` of every other feature."""
        n_blocks, size, _ = X3.shape
        per_request = (X3[1:] == X3[:1]).all(axis=(0, 1))  # the same in every block
        per_block = (X3[:, :1] == X3).all(axis=(0, 1))  # constant within each block
        full = np.iinfo(self.dtype).max
        shared: np.ndarray = np.full((size, self.n_trees), full, dtype=self.dtype)
        blocks: np.ndarray = np.full((n_blocks, self.n_trees), full, dtype=self.dtype)
        work = np.empty((max(size, n_blocks), self.n_trees), dtype=self.dtype)
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for f, thresholds, prefix in zip(self.features, self.thresholds, self.prefix, strict=True):
            if per_request[f]:
                rank = np.searchsorted(thresholds, X3[0, :, f], side="left")
                shared &= np.take(prefix, rank, axis=0, out=work[:size])
            elif per_block[f]:
                rank = np.searchsorted(thresholds, X3[:, 0, f], side="left")
                blocks &= np.take(prefix, rank, axis=0, out=work[:n_blocks])
            else:
                rank = np.searchsorted(thresholds, X3[:, :, f], side="left")
                pairs.append((prefix, rank))
        return shared, blocks, pairs

    def _sum_reached_leaves(
        self,
        shared: np.ndarray,
        blocks: np.ndarray,
        pairs: list[tuple[np.ndarray, np.ndarray]],
        out: np.ndarray,
    ) -> None:
        """Write into ``out`` (key-major rows) the sum of the leaves every row reaches."""
        n_trees, dtype = self.n_trees, self.dtype
        size = len(shared)
        rows = max(1, min(size, BLOCK_ELEMENTS // n_trees))
        mask: np.ndarray = np.empty((rows, n_trees), dtype=dtype)
        work: np.ndarray = np.empty((rows, n_trees), dtype=dtype)
        leaf = np.empty((rows, n_trees), dtype=np.intp)
        value = np.empty((rows, n_trees))
        for k in range(len(blocks)):
            for start in range(0, size, rows):
                stop = min(start + rows, size)
                m = stop - start
                bits = np.bitwise_and(shared[start:stop], blocks[k], out=mask[:m])
                for prefix, rank in pairs:
                    bits &= np.take(prefix, rank[k, start:stop], axis=0, out=work[:m])
                np.take(self.lowest, bits, out=leaf[:m])
                leaf[:m] += self.leaf_offset
                np.take(self.leaf_value, leaf[:m], out=value[:m])
                np.sum(value[:m], axis=1, out=out[k * size + start : k * size + stop])


def compile_leaf_masks(arrays: Mapping[str, np.ndarray]) -> LeafMasks | None:
    """The :class:`LeafMasks` of checked tree arrays (as :func:`compile_trees` takes them), or
    ``None`` if a tree has more than 16 leaves (the masks are 8 or 16 bits wide)."""
    offsets = np.asarray(arrays["tree_offsets"], dtype=np.intp)
    leaf = np.asarray(arrays["is_leaf"], dtype=bool)
    n_trees = len(offsets) - 1
    n_leaves = np.add.reduceat(leaf.astype(np.intp), offsets[:-1]) if n_trees else np.zeros(0)
    width = int(n_leaves.max()) if n_trees else 1
    if width > 16:
        return None
    bits = 8 if width <= 8 else 16
    dtype = np.uint8 if bits == 8 else np.uint16
    splits, leaf_value = _numbered_leaves(arrays, width, (1 << bits) - 1)
    features, thresholds, prefix = _prefix_tables(*splits, n_trees=n_trees, dtype=dtype)
    code = np.arange(1 << bits)
    lowest = np.zeros(1 << bits, dtype=np.intp)
    for b in range(bits - 1, -1, -1):  # the lowest set bit wins: write it last
        lowest[(code >> b) & 1 == 1] = b
    out = LeafMasks(
        features=features,
        thresholds=thresholds,
        prefix=prefix,
        lowest=lowest,
        leaf_value=leaf_value,
        leaf_offset=(np.arange(n_trees, dtype=np.intp) * width)[None, :],
        dtype=dtype,
    )
    for a in (out.features, out.lowest, out.leaf_value, out.leaf_offset, *out.thresholds):
        a.setflags(write=False)
    for a in out.prefix:
        a.setflags(write=False)
    return out


def _numbered_leaves(
    arrays: Mapping[str, np.ndarray], width: int, full: int
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Number every tree's leaves left to right: every split's tree, feature, threshold and
    mask (all leaves but its left subtree's), and ``(n_trees * width,)`` leaf values (tree
    ``t``'s leaf ``i`` at ``t * width + i``)."""
    offsets = arrays["tree_offsets"]
    leaf, feature_idx, threshold = arrays["is_leaf"], arrays["feature_idx"], arrays["num_threshold"]
    left, right, values = arrays["left"], arrays["right"], arrays["value"]
    leaf_value = np.zeros((len(offsets) - 1) * width)
    rows: list[tuple[int, int, float, int]] = []  # tree, feature, threshold, mask
    for t in range(len(offsets) - 1):
        start = int(offsets[t])
        count = 0

        def visit(node: int, t: int = t, start: int = start) -> tuple[int, int]:
            """Leaves of the subtree at ``node``, numbered left to right: ``[first, end)``."""
            nonlocal count
            i = start + node
            if leaf[i]:
                leaf_value[t * width + count] = values[i]
                count += 1
                return count - 1, count
            first, middle = visit(int(left[i]))
            _, end = visit(int(right[i]))
            mask = full & ~((1 << middle) - (1 << first))  # all but the left subtree's leaves
            rows.append((t, int(feature_idx[i]), float(threshold[i]), mask))
            return first, end

        visit(0)
    columns = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
    kinds = (np.intp, np.intp, np.float64, np.uint16)
    return tuple(np.array(c, dtype=k) for c, k in zip(columns, kinds, strict=True)), leaf_value


def _prefix_tables(
    tree: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    mask: np.ndarray,
    *,
    n_trees: int,
    dtype: type,
) -> tuple[np.ndarray, tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Per feature some split reads: its distinct thresholds and the prefix-AND table of the
    masks of its splits (:class:`LeafMasks`)."""
    full = np.iinfo(dtype).max
    masks: np.ndarray = mask.astype(dtype)
    features = np.unique(feature)
    all_thresholds, all_prefix = [], []
    for f in features:
        on = feature == f
        distinct = np.unique(threshold[on])
        rank = np.searchsorted(distinct, threshold[on])
        table: np.ndarray = np.full((len(distinct) + 1, n_trees), full, dtype=dtype)
        np.bitwise_and.at(table, (rank + 1, tree[on]), masks[on])
        np.bitwise_and.accumulate(table, axis=0, out=table)
        all_thresholds.append(distinct)
        all_prefix.append(table)
    return features, tuple(all_thresholds), tuple(all_prefix)


# --------------------------------------------------------------------------------------------
# the ensemble: from scikit-learn, or from checked arrays
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """Stacked binary trees with numpy inference (see the module docstring).

    Attributes
    ----------
    arrays
        The checked fields of :data:`TREE_FIELDS` (:func:`check_tree_arrays`).
    n_features
        Columns the trees read.
    depth
        Edges on the longest root-to-leaf path.
    """

    arrays: Mapping[str, np.ndarray]
    n_features: int
    depth: int = field(init=False)
    _compiled: CompiledTrees = field(init=False, repr=False)
    _masks: LeafMasks | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        compiled = compile_trees(self.arrays)
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_masks", compile_leaf_masks(self.arrays))
        object.__setattr__(self, "depth", compiled.depth)

    @property
    def n_trees(self) -> int:
        return self._compiled.n_trees

    @property
    def baseline(self) -> float:
        return float(self.arrays["baseline"][0])

    @property
    def compiled(self) -> CompiledTrees:
        """The trees in the doubled-index layout."""
        return self._compiled

    @classmethod
    def from_estimator(cls, estimator: Any) -> TreeEnsemble:
        """Stack the trees of a fitted ``HistGradientBoostingRegressor`` or binary
        ``HistGradientBoostingClassifier``.

        Raises
        ------
        ValueError
            If the model is not binary or has categorical splits.
        """
        nodes, baseline = _sklearn_trees(estimator)
        if any(nd["is_categorical"].any() for nd in nodes):
            raise ValueError("categorical splits are not supported by the numpy inference")
        sizes = [len(nd) for nd in nodes]
        cat = np.concatenate(nodes) if nodes else np.zeros(0, dtype=object)
        arrays = {key: cat[key] for key in _NODE_FIELDS} | {
            "is_leaf": cat["is_leaf"],
            "tree_offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            "baseline": baseline,
        }
        n_features = int(estimator.n_features_in_)
        return cls(check_tree_arrays(arrays, "estimator", n_features), n_features)

    def raw_predict(self, X: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds, or the regression's values) of the rows of ``X``: baseline
        plus the sum of the trees' leaves."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n, {self.n_features}); got {X.shape}")
        return self.baseline + self._compiled.raw_sum(X)

    def raw_predict_blocks(self, X: np.ndarray, n_blocks: int) -> np.ndarray:
        """:meth:`raw_predict` of rows made of ``n_blocks`` equal blocks (a window's features,
        key-major), with the same numbers.

        ``X`` is float64 with *at least* ``n_features`` columns (the trees read the first
        ``n_features``: no copy of a wider matrix). Per-request and per-block columns are
        looked up once per request or block (:meth:`LeafMasks.raw_sum_blocks`); the blocked
        walk runs where that does not apply (a NaN, trees of more than 16 leaves).
        """
        if X.ndim != 2 or X.shape[1] < self.n_features or X.dtype != np.float64:
            raise ValueError(f"X must be float64 of shape (n, >= {self.n_features}); got {X.shape}")
        X = np.ascontiguousarray(X)
        with np.errstate(invalid="ignore", over="ignore"):
            has_nan = bool(np.isnan(np.add.reduce(X, axis=None)))  # or both infinities
        if self._masks is None or has_nan:
            return self.baseline + self._compiled.raw_sum(X)
        return self.baseline + self._masks.raw_sum_blocks(X, n_blocks)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of the positive class (the logistic of :meth:`raw_predict`)."""
        return 1.0 / (1.0 + np.exp(-self.raw_predict(X)))


def _sklearn_trees(estimator: Any) -> tuple[list[np.ndarray], np.ndarray]:
    """The node records of every tree of a fitted ``HistGradientBoosting*`` model and its
    baseline raw score.

    scikit-learn has no public access to the trees: this reads the private ``_predictors``
    (one list of ``TreePredictor`` per iteration, whose ``nodes`` are structured arrays) and
    ``_baseline_prediction``, which is why ``pyproject.toml`` bounds scikit-learn's version
    (the range these tests ran on: ``tests/predictors/test_fast_path.py`` compares the stacked
    trees with the estimator's own predictions).
    """
    predictors = estimator._predictors
    if any(len(it) != 1 for it in predictors):
        raise ValueError("only binary classifiers (one tree per iteration) are supported")
    baseline = np.asarray(estimator._baseline_prediction, dtype=float).ravel()
    if baseline.shape != (1,):
        raise ValueError(f"unexpected baseline shape {baseline.shape}")
    return [it[0].nodes for it in predictors], baseline


# --------------------------------------------------------------------------------------------
# checks of the arrays read from a file
# --------------------------------------------------------------------------------------------
def canonical_arrays(
    arrays: Mapping[str, np.ndarray], kinds: Mapping[str, str], source: str
) -> dict[str, np.ndarray]:
    """The fields of ``kinds`` (``f``, ``i`` or ``b``, as :data:`TREE_FIELDS`) as read-only
    one-dimensional float64, int64 or bool arrays.

    Raises
    ------
    ValueError
        ``SOURCE: field 'x': problem``: not one-dimensional, of another kind, a NaN in a float
        field, a value other than 0/1 in a boolean one.
    """
    out: dict[str, np.ndarray] = {}
    for key, kind in kinds.items():
        a = arrays[key]
        if a.ndim != 1:
            raise _refused(source, key, f"must be one-dimensional, has shape {a.shape}")
        if a.dtype.kind not in DTYPE_KINDS[kind] or (
            kind == "b" and a.dtype.kind != "b" and np.isin(a, [0, 1], invert=True).any()
        ):
            what = {"f": "floating point", "i": "integer", "b": "boolean"}[kind]
            raise _refused(source, key, f"must be {what}, is {a.dtype}")
        a = a.astype({"f": np.float64, "i": np.int64, "b": bool}[kind])
        if kind == "f" and np.isnan(a).any():
            raise _refused(source, key, "contains NaN")
        a.setflags(write=False)
        out[key] = a
    return out


def check_tree_arrays(
    arrays: Mapping[str, np.ndarray], source: str, n_features: int
) -> dict[str, np.ndarray]:
    """The fields of :data:`TREE_FIELDS`, canonical (:func:`canonical_arrays`) and checked as
    trees: one entry per node, finite leaf values, strictly rising tree offsets, split features
    below ``n_features``, children inside their own tree and after their parent (so every walk
    ends), one finite baseline.

    Raises
    ------
    ValueError
        ``SOURCE: field 'x': problem``.
    """
    out = canonical_arrays(arrays, TREE_FIELDS, source)
    n_nodes = len(out["value"])
    for key in (*_NODE_FIELDS, "is_leaf"):
        if len(out[key]) != n_nodes:
            raise _refused(
                source, key, f"has {len(out[key])} entries, expected {n_nodes} (one per node)"
            )
    if not np.isfinite(out["value"]).all():
        raise _refused(source, "value", "contains infinite values")
    off = out["tree_offsets"]
    if len(off) < 2 or off[0] != 0 or off[-1] != n_nodes or (np.diff(off) <= 0).any():
        raise _refused(source, "tree_offsets", f"must rise strictly from 0 to the {n_nodes} nodes")
    _check_splits(out, source, n_features)
    if out["baseline"].shape != (1,) or not np.isfinite(out["baseline"]).all():
        raise _refused(source, "baseline", "must be one finite number")
    return out


def _check_splits(out: Mapping[str, np.ndarray], source: str, n_features: int) -> None:
    """Split features in range; children inside their tree, after their parent, distinct."""
    off = out["tree_offsets"]
    size = np.repeat(np.diff(off), np.diff(off))
    local = np.arange(len(out["value"])) - np.repeat(off[:-1], np.diff(off))
    split = ~out["is_leaf"]
    f = out["feature_idx"][split]
    if ((f < 0) | (f >= n_features)).any():
        raise _refused(source, "feature_idx", f"split on a feature outside 0..{n_features - 1}")
    for key in ("left", "right"):
        child = out[key][split]
        if ((child <= local[split]) | (child >= size[split])).any():
            raise _refused(source, key, "child index outside its tree or not after its parent")
    if (out["left"][split] == out["right"][split]).any():
        raise _refused(source, "right", "equals the left child")


def _refused(source: str, field: str, problem: str) -> ValueError:
    return ValueError(f"{source}: field '{field}': {problem}")
