"""qlmio-opt: quality-latency aware offloading of multimodal LLM requests.

A window of requests is predicted (quality, latency, memory per request-node pair), formulated
as an assignment problem with memory and bandwidth limits, and solved.

>>> from qlmio_opt import read_instance, solve
>>> solution = solve(read_instance("instances/window_042.json"), "latency-greedy")  # doctest: +SKIP

The public names below are imported when first used (PEP 562), so ``import qlmio_opt`` and
``qlmio-opt --help`` load none of the solvers, predictors or numerical libraries they do not
need. The layers behind them are described in ``docs/architecture.md``.
"""

from __future__ import annotations

from importlib import import_module

from qlmio_opt.domain.version import VERSION as __version__

# typing.TYPE_CHECKING without importing typing (mypy treats any TYPE_CHECKING name as true):
# ``import qlmio_opt`` and ``qlmio-opt --help`` stay free of typing's import time
TYPE_CHECKING = False

_PUBLIC = {
    "assign": "qlmio_opt.app.api",
    "solve": "qlmio_opt.app.solve",
    "Scheduler": "qlmio_opt.app.scheduler",
    "Decision": "qlmio_opt.app.scheduler",
    "InputError": "qlmio_opt.domain.errors",
    "QlmioError": "qlmio_opt.domain.errors",
    "Image": "qlmio_opt.domain.instance",
    "Instance": "qlmio_opt.domain.instance",
    "Link": "qlmio_opt.domain.instance",
    "Network": "qlmio_opt.domain.instance",
    "Node": "qlmio_opt.domain.instance",
    "NodeState": "qlmio_opt.domain.instance",
    "InFlight": "qlmio_opt.domain.instance",
    "Objective": "qlmio_opt.domain.instance",
    "Request": "qlmio_opt.domain.instance",
    "read_instance": "qlmio_opt.domain.io",
    "read_solution": "qlmio_opt.domain.io",
    "write_instance": "qlmio_opt.domain.io",
    "write_solution": "qlmio_opt.domain.io",
    "Solution": "qlmio_opt.domain.solution",
    "Status": "qlmio_opt.domain.solution",
}
"""Each public name and the module that defines it."""

__all__ = [
    "Decision",
    "Image",
    "InFlight",
    "InputError",
    "Instance",
    "Link",
    "Network",
    "Node",
    "NodeState",
    "Objective",
    "QlmioError",
    "Request",
    "Scheduler",
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

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports on first use
    from typing import Any

    from qlmio_opt.app.api import assign
    from qlmio_opt.app.scheduler import Decision, Scheduler
    from qlmio_opt.app.solve import solve
    from qlmio_opt.domain.errors import InputError, QlmioError
    from qlmio_opt.domain.instance import (
        Image,
        InFlight,
        Instance,
        Link,
        Network,
        Node,
        NodeState,
        Objective,
        Request,
    )
    from qlmio_opt.domain.io import read_instance, read_solution, write_instance, write_solution
    from qlmio_opt.domain.solution import Solution, Status


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'qlmio_opt' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
