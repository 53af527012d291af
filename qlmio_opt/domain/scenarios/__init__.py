"""Benchmark window generator and its scenarios.

>>> from qlmio_opt.domain.scenarios import generate_window
>>> inst = generate_window("default", index=42, seed=0)  # doctest: +SKIP

``SCENARIOS`` maps a name to a :class:`Scenario` (all knobs of the generator); add a scenario by
registering ``dataclasses.replace(DEFAULT, name=..., load_range=...)`` here.
"""

from __future__ import annotations

from qlmio_opt.domain.scenarios.default import DEFAULT, Scenario
from qlmio_opt.domain.scenarios.generate import (
    dumps_instance,
    generate_window,
    generate_windows,
    sized_window,
    stats_table,
    window_size,
    window_sizes,
    window_stats,
    write_windows,
)

SCENARIOS: dict[str, Scenario] = {DEFAULT.name: DEFAULT}

__all__ = [
    "DEFAULT",
    "SCENARIOS",
    "Scenario",
    "dumps_instance",
    "generate_window",
    "generate_windows",
    "sized_window",
    "stats_table",
    "window_size",
    "window_sizes",
    "window_stats",
    "write_windows",
]
