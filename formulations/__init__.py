"""Formulations of the window assignment problem (installed as ``qlmio_opt.formulations``).

:class:`Problem` is the array form every formulation and solver reads; the MILP builders
(Pyomo and direct HiGHS) live beside it.
"""

from qlmio_opt.formulations.problem import Problem, all_cloud_quality, build_problem

__all__ = ["Problem", "all_cloud_quality", "build_problem"]
