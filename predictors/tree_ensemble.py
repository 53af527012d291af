"""Fast numpy evaluation of stacked binary decision trees (the learned models' inference).

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
which are summed over the trees in tree order per row exactly as before.

A split sends a row left when ``x <= threshold``, a missing value (NaN) the way its node was
trained to send it (``missing_go_to_left``), as scikit-learn's
``HistGradientBoosting*`` predictors do; the NaN test is only run when the block holds a
non-finite value. The results are bit-identical to the straightforward walk
(:func:`reference_raw_sum`, kept for the tests and the benchmark).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BLOCK_ELEMENTS",
    "CompiledTrees",
    "LeafMasks",
    "compile_leaf_masks",
    "compile_trees",
    "reference_raw_sum",
]

BLOCK_ELEMENTS = 2**14
"""About how many (row, tree) cells one block of the evaluation holds: each work buffer is then
at most 128 KiB (eight bytes a cell), small enough to be reused from the heap and to stay in the
CPU's L2 cache."""


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
        n_trees = self.n_trees
        out = np.zeros(n)
        if n == 0 or n_trees == 0:
            return out
        rows = max(1, min(n, BLOCK_ELEMENTS // n_trees))
        shape = (rows, n_trees)
        node, child = np.empty(shape, np.intp), np.empty(shape, np.intp)
        at, x, threshold = np.empty(shape, np.intp), np.empty(shape), np.empty(shape)
        right, missing = np.empty(shape, bool), np.empty(shape, bool)
        row_start = (np.arange(rows, dtype=np.intp) * n_cols)[:, None]
        roots2 = self.roots2[None, :]
        root_feature = self.feature2[self.roots2]
        root_threshold = self.threshold2[self.roots2][None, :]
        root_missing = self.missing_right2[self.roots2][None, :]
        # Indices were checked when the model was loaded: mode="wrap" only skips numpy's
        # bounds errors (and is its fastest mode), it never wraps anything here.
        for start in range(0, n, rows):
            block = X[start : start + rows]
            m = len(block)
            if m < rows:
                node, child, at, x, threshold, right, missing = (
                    a[:m] for a in (node, child, at, x, threshold, right, missing)
                )
                row_start = row_start[:m]
            flat = block.reshape(-1)
            with np.errstate(invalid="ignore", over="ignore"):
                has_nan = not np.isfinite(np.add.reduce(flat))  # NaN or inf: the careful path
            # level 0: every tree's root is known, so gather the root features' columns directly
            np.take(block, root_feature, axis=1, out=x, mode="wrap")
            np.greater(x, root_threshold, out=right)  # left if x <= threshold (scikit-learn)
            if has_nan:
                right |= np.isnan(x) & root_missing
            np.add(roots2, right, out=at)
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
            np.sum(x, axis=1, out=out[start : start + m])
        return out


def compile_trees(arrays: Mapping[str, np.ndarray]) -> CompiledTrees:
    """The doubled-index layout of checked tree arrays.

    Parameters
    ----------
    arrays
        ``value``, ``feature_idx``, ``num_threshold``, ``missing_go_to_left``, ``left``,
        ``right``, ``is_leaf`` (one entry per node, children local to their tree and after their
        parent) and ``tree_offsets`` (where each tree starts), as checked by the model loaders.

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


def reference_raw_sum(trees: CompiledTrees, X: np.ndarray) -> np.ndarray:
    """:meth:`CompiledTrees.raw_sum` the straightforward way (the walk this module replaced).

    All rows at once, one full ``(n, n_trees)`` matrix per step, nothing reused; kept as the
    reference of the tests and of ``benchmarks/predictor_speed.py``.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    n, n_cols = X.shape
    node = np.broadcast_to(trees.roots2, (n, trees.n_trees))
    flat = X.ravel()
    row = (np.arange(n, dtype=np.intp) * n_cols)[:, None]
    has_nan = bool(np.isnan(flat).any())
    for _ in range(trees.depth):
        x = np.take(flat, row + np.take(trees.feature2, node, mode="clip"), mode="clip")
        right = x > np.take(trees.threshold2, node, mode="clip")
        if has_nan:
            right |= np.isnan(x) & np.take(trees.missing_right2, node, mode="clip")
        node = np.take(trees.children2, node + right, mode="clip")
    return np.take(trees.value2, node, mode="clip").sum(axis=1)


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
        n_trees = self.n_trees
        out = np.zeros(n)
        if n == 0 or n_trees == 0:
            return out
        if n_blocks < 1 or n % n_blocks:
            raise ValueError(f"{n} rows do not split into {n_blocks} equal blocks")
        size = n // n_blocks
        X3 = X.reshape(n_blocks, size, n_cols)
        per_request = (X3[1:] == X3[:1]).all(axis=(0, 1))  # the same in every block
        per_block = (X3[:, :1] == X3).all(axis=(0, 1))  # constant within each block
        dtype = self.dtype
        shared = np.full((size, n_trees), np.iinfo(dtype).max, dtype=dtype)
        blocks = np.full((n_blocks, n_trees), np.iinfo(dtype).max, dtype=dtype)
        rows = max(1, min(size, BLOCK_ELEMENTS // n_trees))
        work = np.empty((max(size, n_blocks, rows), n_trees), dtype=dtype)
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
        mask = np.empty((rows, n_trees), dtype=dtype)
        leaf = np.empty((rows, n_trees), dtype=np.intp)
        value = np.empty((rows, n_trees))
        for k in range(n_blocks):
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
        return out


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
    full = (1 << bits) - 1
    feature_idx, threshold = arrays["feature_idx"], arrays["num_threshold"]
    left, right, values = arrays["left"], arrays["right"], arrays["value"]
    leaf_value = np.zeros(n_trees * width)
    split_tree: list[int] = []
    split_feature: list[int] = []
    split_threshold: list[float] = []
    split_mask: list[int] = []
    for t in range(n_trees):
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
            split_tree.append(t)
            split_feature.append(int(feature_idx[i]))
            split_threshold.append(float(threshold[i]))
            split_mask.append(full & ~((1 << middle) - (1 << first)))  # all but the left leaves
            return first, end

        visit(0)
    tree = np.array(split_tree, dtype=np.intp)
    feature = np.array(split_feature, dtype=np.intp)
    thresh = np.array(split_threshold, dtype=np.float64)
    masks = np.array(split_mask, dtype=dtype)
    features = np.unique(feature)
    all_thresholds, all_prefix = [], []
    for f in features:
        on = feature == f
        distinct = np.unique(thresh[on])
        rank = np.searchsorted(distinct, thresh[on])
        table = np.full((len(distinct) + 1, n_trees), full, dtype=dtype)
        np.bitwise_and.at(table, (rank + 1, tree[on]), masks[on])
        np.bitwise_and.accumulate(table, axis=0, out=table)
        all_thresholds.append(distinct)
        all_prefix.append(table)
    code = np.arange(1 << bits)
    lowest = np.zeros(1 << bits, dtype=np.intp)
    for b in range(bits - 1, -1, -1):  # the lowest set bit wins: write it last
        lowest[(code >> b) & 1 == 1] = b
    out = LeafMasks(
        features=features,
        thresholds=tuple(all_thresholds),
        prefix=tuple(all_prefix),
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
