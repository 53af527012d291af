"""The simulator: a ground-truth world, trace replay under policies, and the benchmark dataset.

Only this package knows the truth (:mod:`~qlmio_opt.simulator.world`); predictors and solvers
never import it. :func:`replay` measures policies against the truth, the oracle predictor hands the
truth to the optimiser as a bound, and :mod:`~qlmio_opt.simulator.dataset` writes the table the
learned predictors train on.
"""

from __future__ import annotations

from qlmio_opt.simulator.dataset import BenchData, bench_data, write_bench_data
from qlmio_opt.simulator.metrics import reduction_table, summarise
from qlmio_opt.simulator.oracle import OraclePredictor
from qlmio_opt.simulator.replay import ORACLE, PolicyRun, ReplayConfig, ReplayResult, replay
from qlmio_opt.simulator.workload import TRACES, Workload, deployment, workload
from qlmio_opt.simulator.world import World, WorldConfig

__all__ = [
    "ORACLE",
    "TRACES",
    "BenchData",
    "OraclePredictor",
    "PolicyRun",
    "ReplayConfig",
    "ReplayResult",
    "Workload",
    "World",
    "WorldConfig",
    "bench_data",
    "deployment",
    "reduction_table",
    "replay",
    "summarise",
    "workload",
    "write_bench_data",
]
