"""Solvers behind one interface (installed as ``qlmio_opt.solvers``).

``SOLVERS`` maps a name to a solver class; :func:`get_solver` builds one by name.
"""

from __future__ import annotations

from qlmio_opt.solvers.base import Solver, SolverResult
from qlmio_opt.solvers.baselines import AllCloud, AllEdge, LatencyGreedy

SOLVERS: dict[str, type[Solver]] = {cls.name: cls for cls in (AllCloud, AllEdge, LatencyGreedy)}


def get_solver(name: str | Solver) -> Solver:
    """A solver instance by registry name (or ``name`` itself if it is a solver)."""
    if isinstance(name, Solver):
        return name
    try:
        return SOLVERS[name]()
    except KeyError:
        raise ValueError(f'unknown solver "{name}"; choose from {", ".join(SOLVERS)}') from None


__all__ = ["SOLVERS", "Solver", "SolverResult", "get_solver"]
