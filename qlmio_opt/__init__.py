"""qlmio-opt: quality-latency aware offloading of multimodal LLM requests.

A window of requests is predicted (quality, latency, memory per request-node pair), formulated
as an assignment problem with memory and bandwidth limits, and solved.

>>> from qlmio_opt import read_instance, solve
>>> solution = solve(read_instance("instances/window_042.json"), "latency-greedy")  # doctest: +SKIP
"""

from pathlib import Path as _Path

# In an installed wheel, formulations/, predictors/ and solvers/ sit inside this package (see
# [tool.setuptools.package-dir]). In a source checkout they are the repository's top-level pillar
# folders, so let submodule lookup also search the checkout's root; this keeps
# `python -m pytest` and scripts run from the checkout importing the same code.
_root = _Path(__file__).resolve().parent.parent
if (
    not (_Path(__file__).parent / "solvers").is_dir()
    and (_root / "solvers" / "__init__.py").is_file()
):
    __path__.append(str(_root))

from qlmio_opt.api import assign
from qlmio_opt.errors import InputError, QlmioError
from qlmio_opt.instance import Image, Instance, Link, Network, Node, Objective, Request
from qlmio_opt.io import read_instance, read_solution, write_instance, write_solution
from qlmio_opt.solution import Solution, Status
from qlmio_opt.solve import solve

__version__ = "0.1.0"

__all__ = [
    "Image",
    "InputError",
    "Instance",
    "Link",
    "Network",
    "Node",
    "Objective",
    "QlmioError",
    "Request",
    "Solution",
    "Status",
    "__version__",
    "assign",
    "read_instance",
    "read_solution",
    "solve",
    "write_instance",
    "write_solution",
]
