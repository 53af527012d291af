"""Best-known values of benchmark windows: ``bks.csv`` beside the window files.

``instances/bks.csv`` (written by ``benchmarks/best_known.py``) holds, per committed window, the
best objective found, its proven bound and whether it is optimal, under the analytic predictors.
A row applies to a window file only when the file is the one it was computed for: same name and,
where the row records it, the same SHA-256 of the file's bytes, so an edited copy of a window is
never compared with another window's optimum.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from qlmio_opt.domain.frozen import FrozenDict

BKS_FILE = "bks.csv"
BKS_PREDICTORS = "analytic"
"""The predictors every best-known value was computed with (``benchmarks/best_known.py``)."""


@dataclass(frozen=True)
class BestKnown:
    """One window's best-known value."""

    instance: str
    objective: float
    bound: float | None
    optimal: bool
    instance_sha256: str | None = None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@lru_cache(maxsize=16)
def _read(path: str, mtime_ns: int) -> FrozenDict[str, BestKnown]:
    rows: dict[str, BestKnown] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                objective = float(row["objective"])
            except (KeyError, TypeError, ValueError):
                continue  # a window without an incumbent has no best-known value
            bound = row.get("bound") or None
            rows[row["instance"]] = BestKnown(
                instance=row["instance"],
                objective=objective,
                bound=float(bound) if bound is not None else None,
                optimal=row.get("status") == "optimal",
                instance_sha256=row.get("instance_sha256") or None,
            )
    return FrozenDict(rows)  # cached and shared by every caller


def read_bks(path: Path) -> Mapping[str, BestKnown]:
    """The rows of a ``bks.csv`` by instance name (empty if the file does not exist), read-only."""
    path = Path(path)
    if not path.is_file():
        return FrozenDict()
    return _read(str(path.resolve()), path.stat().st_mtime_ns)


@dataclass(frozen=True)
class KnownValues:
    """The best-known values a window file may have: the rows of the ``bks.csv`` beside it and
    the file's own SHA-256 (read where the file is, shipped to workers that cannot see it)."""

    rows: Mapping[str, BestKnown]
    sha256: str | None

    @classmethod
    def beside(cls, window_file: Path) -> KnownValues:
        """The values for ``window_file``: the ``bks.csv`` in its folder, if any."""
        rows = read_bks(Path(window_file).parent / BKS_FILE)
        if not rows:
            return cls(FrozenDict(), None)
        try:
            return cls(rows, file_sha256(window_file))
        except OSError:
            return cls(FrozenDict(), None)

    def objective(self, instance_name: str) -> float | None:
        """The best-known objective of ``instance_name``, if a row is for exactly this file."""
        row = self.rows.get(instance_name)
        if row is None:
            return None
        if row.instance_sha256 is not None and row.instance_sha256 != self.sha256:
            return None
        return row.objective
