"""Solvers behind one interface (installed as ``qlmio_opt.solvers``).

``SOLVERS`` maps a name to a solver class; :func:`get_solver` builds one by name. A solver's
module is imported when its class is first asked for, so importing one solver (or this package)
loads neither HiGHS's nor Pyomo's Python layers unless they are used.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module

from qlmio_opt.solvers.base import Solver, SolverResult

# Listed in the order tables show them: exact first, then the fast path, then baselines.
_REGISTRY: dict[str, str] = {
    "exact": "qlmio_opt.solvers.exact:ExactHighs",
    "exact-pyomo": "qlmio_opt.solvers.exact_pyomo:ExactPyomo",
    "greedy": "qlmio_opt.solvers.greedy:Greedy",
    "greedy-thorough": "qlmio_opt.solvers.greedy:GreedyThorough",
    "cloud-only": "qlmio_opt.solvers.cloud_only:CloudOnly",
    "all-cloud": "qlmio_opt.solvers.baselines:AllCloud",
    "all-edge": "qlmio_opt.solvers.baselines:AllEdge",
    "random": "qlmio_opt.solvers.baselines:RandomRule",
    "round-robin": "qlmio_opt.solvers.baselines:RoundRobin",
    "latency-greedy": "qlmio_opt.solvers.baselines:LatencyGreedy",
    "quality-greedy": "qlmio_opt.solvers.baselines:QualityGreedy",
    "threshold": "qlmio_opt.solvers.baselines:Threshold",
    "per-request": "qlmio_opt.solvers.baselines:PerRequest",
}
"""Registry name -> ``module:class`` of every solver."""


class _Registry(Mapping[str, type[Solver]]):
    """A read-only name -> class map that imports a class's module on first access."""

    def __init__(self, targets: Mapping[str, str]) -> None:
        self._targets = dict(targets)
        self._loaded: dict[str, type[Solver]] = {}

    def __getitem__(self, name: str) -> type[Solver]:
        if name not in self._loaded:
            module, _, attr = self._targets[name].partition(":")
            cls = getattr(import_module(module), attr)
            if cls.name != name:
                raise RuntimeError(f"registry name {name!r} != {cls.__name__}.name {cls.name!r}")
            self._loaded[name] = cls
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets


SOLVERS: Mapping[str, type[Solver]] = _Registry(_REGISTRY)


def get_solver(name: str | Solver) -> Solver:
    """A solver instance by registry name (or ``name`` itself if it is a solver)."""
    if isinstance(name, Solver):
        return name
    if name not in SOLVERS:
        raise ValueError(f'unknown solver "{name}"; choose from {", ".join(SOLVERS)}')
    return SOLVERS[name]()


__all__ = ["SOLVERS", "Solver", "SolverResult", "get_solver"]
