"""How many LLM tokens an image costs, and how many pixels the vision encoder sees.

Four rules cover the catalog's models:

``patch``
    Qwen2-VL / Qwen2.5-VL. The image is resized (aspect kept) to multiples of ``patch_px``
    (28 px: 14-px ViT patches merged 2x2) like Qwen's ``smart_resize``; one token per
    ``patch_px`` square, clamped to ``min_tokens`` ... ``max_tokens`` by rescaling.
``tiles``
    InternVL2, MiniCPM-V, SmolVLM. The image is cut into ``tile_px`` tiles (at most
    ``max_tiles``; when the covering grid is larger, the grid of at most ``max_tiles`` tiles
    whose aspect ratio is closest to the image's is used), plus one thumbnail tile when there
    is more than one tile.
``fixed``
    LLaVA-1.5: every image is resized to ``input_px`` square and costs ``tokens``.
``openai-tiles``
    GPT-4o high detail: fit within ``max_dim`` square, shrink so the short side is at most
    ``short_side``, then ``base_tokens + tokens_per_tile * tiles`` of ``tile_px`` squares.

Every rule has a scalar version (plain Python) and a vectorised numpy version; both use the
same floating-point operations so they agree exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from qlmio_opt.domain.errors import CatalogError, Issue

__all__ = ["RULE_KINDS", "ImageTokenRule"]

# kind -> {param: default or None when required}
RULE_KINDS: Mapping[str, Mapping[str, int | bool | None]] = MappingProxyType(
    {
        "patch": MappingProxyType({"patch_px": 28, "min_tokens": 4, "max_tokens": 1280}),
        "tiles": MappingProxyType(
            {"tile_px": None, "tokens_per_tile": None, "max_tiles": None, "thumbnail": True}
        ),
        "fixed": MappingProxyType({"tokens": None, "input_px": None}),
        "openai-tiles": MappingProxyType(
            {
                "tile_px": 512,
                "base_tokens": 85,
                "tokens_per_tile": 170,
                "max_dim": 2048,
                "short_side": 768,
            }
        ),
    }
)

_BOOL_PARAMS = frozenset({"thumbnail"})


# Every integer parameter (a side in pixels, a token or tile count) is at most this: an image is
# at most 100,000 px a side (``qlmio_opt.domain.types.Pixels``) and the shipped rules' largest
# parameter is 2,048. Without a bound, ``tokens = 10**300`` overflowed the token arithmetic.
MAX_PARAM = 100_000
# ``max_tiles`` is at most this (the shipped rules use 9-16): the tiles rule compares every grid
# of at most max_tiles tiles, ~max_tiles * ln(max_tiles) of them per image, so 100,000 tiles
# took gigabytes and minutes for one window; 1,024 takes ~7,000 grids.
MAX_TILES = 1_024


def _shown(value: Any) -> str:
    """``repr`` cut short: a 300-digit integer would drown the message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_positive_int(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return value == int(value) and value >= 1


def _normalise_params(kind: str, params: Mapping[str, Any]) -> dict[str, int | bool]:
    """Validate ``params`` for ``kind`` and fill defaults; raise ``CatalogError``."""
    if kind not in RULE_KINDS:
        known = ", ".join(RULE_KINDS)
        raise CatalogError(Issue("rule", f'unknown image-token rule "{kind}" (known: {known})'))
    spec = RULE_KINDS[kind]
    issues: list[Issue] = []
    out: dict[str, int | bool] = {}
    for name in params:
        if name not in spec:
            issues.append(
                Issue(name, f"unknown parameter for rule {kind!r} (known: {', '.join(spec)})")
            )
    for name, default in spec.items():
        value = params.get(name, default)
        if value is None:
            issues.append(Issue(name, f"required parameter of rule {kind!r} missing"))
        elif name in _BOOL_PARAMS:
            if not isinstance(value, bool):
                issues.append(Issue(name, f"must be true or false (got {value!r})"))
            else:
                out[name] = value
        elif not _is_positive_int(value):
            issues.append(Issue(name, f"must be a positive integer (got {_shown(value)})"))
        elif value > (top := MAX_TILES if name == "max_tiles" else MAX_PARAM):
            issues.append(Issue(name, f"must be an integer in [1, {top}] (got {_shown(value)})"))
        else:
            out[name] = int(value)
    if not issues and kind == "patch" and out["min_tokens"] > out["max_tokens"]:
        issues.append(Issue("min_tokens", "must not exceed max_tokens"))
    if issues:
        raise CatalogError(issues)
    return out


@dataclass(frozen=True)
class ImageTokenRule:
    """An image-token rule: ``kind`` (see module docstring) and its parameters.

    Parameters
    ----------
    kind
        One of ``"patch"``, ``"tiles"``, ``"fixed"``, ``"openai-tiles"``.
    params
        The rule's parameters; missing optional ones take their defaults. Invalid kinds or
        parameters raise :class:`~qlmio_opt.domain.errors.CatalogError` with paths relative to the
        rule (``rule``, ``max_tokens``, ...).
    """

    kind: str
    params: Mapping[str, int | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "params", MappingProxyType(_normalise_params(self.kind, self.params))
        )

    def __hash__(self) -> int:
        return hash((self.kind, tuple(sorted(self.params.items()))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageTokenRule):
            return NotImplemented
        return self.kind == other.kind and dict(self.params) == dict(other.params)

    # -- scalar --------------------------------------------------------------------------
    def tokens(self, width: int, height: int) -> int:
        """LLM tokens for one image of ``width`` x ``height`` pixels."""
        w, h = _check_size(width, height)
        p = self.params
        if self.kind == "patch":
            rh, rw = _patch_resize(w, h, p)
            return (rh // p["patch_px"]) * (rw // p["patch_px"])
        if self.kind == "tiles":
            n = _tile_count(w, h, p)
            extra = 1 if p["thumbnail"] and n > 1 else 0
            return p["tokens_per_tile"] * (n + extra)
        if self.kind == "fixed":
            return int(p["tokens"])
        rw, rh = _openai_resize(w, h, p)
        tiles = _ceil_div(rw, p["tile_px"]) * _ceil_div(rh, p["tile_px"])
        return p["base_tokens"] + p["tokens_per_tile"] * tiles

    def seen_pixels(self, width: int, height: int) -> int:
        """Pixels the vision encoder actually sees after resizing (thumbnail excluded)."""
        w, h = _check_size(width, height)
        p = self.params
        if self.kind == "patch":
            rh, rw = _patch_resize(w, h, p)
            return rh * rw
        if self.kind == "tiles":
            return _tile_count(w, h, p) * p["tile_px"] ** 2
        if self.kind == "fixed":
            return int(p["input_px"]) ** 2
        rw, rh = _openai_resize(w, h, p)
        return rw * rh

    # -- vectorised ----------------------------------------------------------------------
    def tokens_array(self, widths: Any, heights: Any) -> np.ndarray:
        """Vectorised :meth:`tokens`; inputs broadcast, result is ``int64``."""
        w, h = _check_arrays(widths, heights)
        p = self.params
        if self.kind == "patch":
            rh, rw = _patch_resize_array(w, h, p)
            return (rh // p["patch_px"]) * (rw // p["patch_px"])
        if self.kind == "tiles":
            n = _tile_count_array(w, h, p)
            extra = (n > 1).astype(np.int64) if p["thumbnail"] else 0
            return p["tokens_per_tile"] * (n + extra)
        if self.kind == "fixed":
            return np.full(w.shape, p["tokens"], dtype=np.int64)
        rw, rh = _openai_resize_array(w, h, p)
        tiles = _ceil_div(rw, p["tile_px"]) * _ceil_div(rh, p["tile_px"])
        return p["base_tokens"] + p["tokens_per_tile"] * tiles

    def seen_pixels_array(self, widths: Any, heights: Any) -> np.ndarray:
        """Vectorised :meth:`seen_pixels`; inputs broadcast, result is ``int64``."""
        w, h = _check_arrays(widths, heights)
        p = self.params
        if self.kind == "patch":
            rh, rw = _patch_resize_array(w, h, p)
            return rh * rw
        if self.kind == "tiles":
            return _tile_count_array(w, h, p) * p["tile_px"] ** 2
        if self.kind == "fixed":
            return np.full(w.shape, p["input_px"] ** 2, dtype=np.int64)
        rw, rh = _openai_resize_array(w, h, p)
        return rw * rh


# -- helpers -------------------------------------------------------------------------------
def _check_size(width: int, height: int) -> tuple[int, int]:
    if isinstance(width, bool) or isinstance(height, bool):
        raise ValueError("image width and height must be integers")
    w, h = int(width), int(height)
    if w != width or h != height or w < 1 or h < 1:
        raise ValueError(f"image size must be positive integers (got {width} x {height})")
    return w, h


def _check_arrays(widths: Any, heights: Any) -> tuple[np.ndarray, np.ndarray]:
    w, h = np.broadcast_arrays(np.asarray(widths), np.asarray(heights))
    if w.size and (np.any(w < 1) or np.any(h < 1)):
        raise ValueError("image sizes must be positive integers")
    wi, hi = w.astype(np.int64), h.astype(np.int64)
    if np.any(wi != w) or np.any(hi != h):
        raise ValueError("image sizes must be integers")
    return wi, hi


def _ceil_div(a: Any, b: int) -> Any:
    return -(-a // b)


def _patch_resize(w: int, h: int, p: Mapping[str, int | bool]) -> tuple[int, int]:
    """Qwen ``smart_resize``: returns (height, width) in pixels, multiples of patch_px."""
    f = int(p["patch_px"])
    min_px, max_px = p["min_tokens"] * f * f, p["max_tokens"] * f * f
    rh = max(f, round(h / f) * f)
    rw = max(f, round(w / f) * f)
    if rh * rw > max_px:
        beta = math.sqrt((h * w) / max_px)
        rh = max(f, math.floor(h / beta / f) * f)
        rw = max(f, math.floor(w / beta / f) * f)
    elif rh * rw < min_px:
        beta = math.sqrt(min_px / (h * w))
        rh = math.ceil(h * beta / f) * f
        rw = math.ceil(w * beta / f) * f
    return rh, rw


def _patch_resize_array(
    w: np.ndarray, h: np.ndarray, p: Mapping[str, int | bool]
) -> tuple[np.ndarray, np.ndarray]:
    f = int(p["patch_px"])
    min_px, max_px = p["min_tokens"] * f * f, p["max_tokens"] * f * f
    # np.round and Python's round both round half to even.
    rh = np.maximum(f, np.round(h / f).astype(np.int64) * f)
    rw = np.maximum(f, np.round(w / f).astype(np.int64) * f)
    area = rh * rw
    too_big, too_small = area > max_px, area < min_px
    down = np.sqrt((h * w) / max_px)
    up = np.sqrt(min_px / (h * w))
    rh = np.where(too_big, np.maximum(f, np.floor(h / down / f).astype(np.int64) * f), rh)
    rw = np.where(too_big, np.maximum(f, np.floor(w / down / f).astype(np.int64) * f), rw)
    rh = np.where(too_small, np.ceil(h * up / f).astype(np.int64) * f, rh)
    rw = np.where(too_small, np.ceil(w * up / f).astype(np.int64) * f, rw)
    return rh, rw


def _grids(max_tiles: int) -> list[tuple[int, int]]:
    """All (cols, rows) grids with at most ``max_tiles`` tiles, most tiles first."""
    grids = [(c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles // c + 1)]
    return sorted(grids, key=lambda g: (-g[0] * g[1], g[0]))


def _tile_count(w: int, h: int, p: Mapping[str, int | bool]) -> int:
    t, max_tiles = int(p["tile_px"]), int(p["max_tiles"])
    n = _ceil_div(w, t) * _ceil_div(h, t)
    if n <= max_tiles:
        return n
    # Aspect mismatch as a ratio >= 1: max(c*h, r*w) / min(c*h, r*w); first (most tiles) wins.
    best, best_err = 1, math.inf
    for c, r in _grids(max_tiles):
        a, b = c * h, r * w
        err = max(a, b) / min(a, b)
        if err < best_err:
            best, best_err = c * r, err
    return best


def _tile_count_array(w: np.ndarray, h: np.ndarray, p: Mapping[str, int | bool]) -> np.ndarray:
    t, max_tiles = int(p["tile_px"]), int(p["max_tiles"])
    n = np.asarray(_ceil_div(w, t) * _ceil_div(h, t))
    over = n > max_tiles
    if not over.any():
        return n
    # the grid search only for the images over max_tiles (most fit as they are)
    grids = np.array(_grids(max_tiles), dtype=np.int64)
    cols, rows = grids[:, 0], grids[:, 1]
    a = h[over][:, None] * cols
    b = w[over][:, None] * rows
    err = np.maximum(a, b) / np.minimum(a, b)
    n = n.copy()
    n[over] = (cols * rows)[np.argmin(err, axis=-1)]
    return n


def _openai_resize(w: int, h: int, p: Mapping[str, int | bool]) -> tuple[int, int]:
    fw, fh = float(w), float(h)
    longest = max(fw, fh)
    if longest > p["max_dim"]:
        s = p["max_dim"] / longest
        fw, fh = fw * s, fh * s
    shortest = min(fw, fh)
    if shortest > p["short_side"]:
        s = p["short_side"] / shortest
        fw, fh = fw * s, fh * s
    return max(1, round(fw)), max(1, round(fh))


def _openai_resize_array(
    w: np.ndarray, h: np.ndarray, p: Mapping[str, int | bool]
) -> tuple[np.ndarray, np.ndarray]:
    fw, fh = w.astype(np.float64), h.astype(np.float64)
    longest = np.maximum(fw, fh)
    s = np.where(longest > p["max_dim"], p["max_dim"] / longest, 1.0)
    fw, fh = np.where(s < 1.0, fw * s, fw), np.where(s < 1.0, fh * s, fh)
    shortest = np.minimum(fw, fh)
    s = np.where(shortest > p["short_side"], p["short_side"] / shortest, 1.0)
    fw, fh = np.where(s < 1.0, fw * s, fw), np.where(s < 1.0, fh * s, fh)
    return (
        np.maximum(1, np.round(fw).astype(np.int64)),
        np.maximum(1, np.round(fh).astype(np.int64)),
    )
