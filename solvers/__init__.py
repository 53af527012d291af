"""Solvers behind one interface (installed as ``qlmio_opt.solvers``).

``SOLVERS`` maps a name to a solver class; :func:`get_solver` builds one by name.
"""

from __future__ import annotations

from qlmio_opt.solvers.base import Solver, SolverResult
from qlmio_opt.solvers.baselines import (
    AllCloud,
    AllEdge,
    LatencyGreedy,
    PerRequest,
    QualityGreedy,
    RandomRule,
    RoundRobin,
    Threshold,
)
from qlmio_opt.solvers.exact import ExactHighs
from qlmio_opt.solvers.exact_pyomo import ExactPyomo
from qlmio_opt.solvers.greedy import Greedy, GreedyThorough

# Listed in the order tables show them: exact first, then the fast path, then baselines.
SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls
    for cls in (
        ExactHighs,
        ExactPyomo,
        Greedy,
        GreedyThorough,
        AllCloud,
        AllEdge,
        RandomRule,
        RoundRobin,
        LatencyGreedy,
        QualityGreedy,
        Threshold,
        PerRequest,
    )
}


def get_solver(name: str | Solver) -> Solver:
    """A solver instance by registry name (or ``name`` itself if it is a solver)."""
    if isinstance(name, Solver):
        return name
    try:
        return SOLVERS[name]()
    except KeyError:
        raise ValueError(f'unknown solver "{name}"; choose from {", ".join(SOLVERS)}') from None


__all__ = ["SOLVERS", "Solver", "SolverResult", "get_solver"]
