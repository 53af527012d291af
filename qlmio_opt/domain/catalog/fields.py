"""Checks for single catalog values; each appends an :class:`Issue` and returns ``INVALID``.

Every checker has the signature ``check(value, path, issues) -> value | INVALID`` so that
a whole entry is checked in one pass and every problem is reported, not just the first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from qlmio_opt.domain.errors import Issue

__all__ = [
    "INVALID",
    "Checker",
    "boolean",
    "integer_in",
    "metric",
    "modalities",
    "number_in",
    "probability",
    "text",
    "text_list",
    "tier",
]

INVALID: Any = object()
"""Marker returned by a checker for a value it rejected (the issue is already recorded)."""

Checker = Callable[[Any, str, list[Issue]], Any]

MODALITIES = ("text", "image")
TIERS = ("edge", "cloud")
METRICS = ("decode_tok_s", "prefill_tok_s")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        x = float(value)
    except OverflowError:  # an integer past the largest float
        return None
    return x if math.isfinite(x) else None


def _fail(issues: list[Issue], path: str, message: str) -> Any:
    issues.append(Issue(path, message))
    return INVALID


def _shown(value: Any) -> str:
    """``repr`` cut short: a 300-digit integer would drown the message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def number_in(low: float, high: float) -> Checker:
    """A checker for a finite number in ``[low, high]`` (``low`` is 0 or positive).

    The sign comes first ("must be a positive finite number"), the plausible range second.
    """
    kind = "positive" if low > 0 else "non-negative"

    def check(value: Any, path: str, issues: list[Issue]) -> Any:
        x = _number(value)
        if x is None or x < 0 or (x == 0 and low > 0):
            return _fail(issues, path, f"must be a {kind} finite number (got {_shown(value)})")
        if not low <= x <= high:
            return _fail(
                issues, path, f"must be a number in [{low:g}, {high:g}] (got {_shown(value)})"
            )
        return x

    return check


def integer_in(low: int, high: int) -> Checker:
    """A checker for a whole number in ``[low, high]``, ``low >= 1`` (``2.0`` is taken as 2).

    Being a positive integer comes first, the plausible range second.
    """

    def check(value: Any, path: str, issues: list[Issue]) -> Any:
        x = _number(value)
        if x is None or x < 1 or x != int(x):
            return _fail(issues, path, f"must be a positive integer (got {_shown(value)})")
        if not low <= x <= high:
            return _fail(
                issues, path, f"must be an integer in [{low}, {high}] (got {_shown(value)})"
            )
        return int(x)

    return check


def probability(value: Any, path: str, issues: list[Issue]) -> Any:
    x = _number(value)
    if x is None or not 0.0 <= x <= 1.0:
        return _fail(issues, path, f"must be a probability in [0, 1] (got {value!r})")
    return x


def text(value: Any, path: str, issues: list[Issue]) -> Any:
    if not isinstance(value, str) or not value.strip():
        return _fail(issues, path, f"must be a non-empty string (got {value!r})")
    return value


def text_list(value: Any, path: str, issues: list[Issue]) -> Any:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return _fail(issues, path, f"must be a list of strings (got {value!r})")
    return tuple(value)


def boolean(value: Any, path: str, issues: list[Issue]) -> Any:
    if not isinstance(value, bool):
        return _fail(issues, path, f"must be true or false (got {value!r})")
    return value


def _one_of(choices: tuple[str, ...]) -> Checker:
    def check(value: Any, path: str, issues: list[Issue]) -> Any:
        if value not in choices:
            options = ", ".join(f'"{c}"' for c in choices)
            return _fail(issues, path, f"must be one of {options} (got {value!r})")
        return value

    return check


tier = _one_of(TIERS)
metric = _one_of(METRICS)


def modalities(value: Any, path: str, issues: list[Issue]) -> Any:
    items = text_list(value, path, issues)
    if items is INVALID:
        return INVALID
    unknown = [m for m in items if m not in MODALITIES]
    if not items or unknown:
        return _fail(
            issues, path, f"must be a non-empty list from {list(MODALITIES)} (got {value!r})"
        )
    return items
