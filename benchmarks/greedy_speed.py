"""Wall time of the greedy path, with and without its runtime settings, measured side by side.

Usage (from the checkout)::

    python benchmarks/greedy_speed.py [--repeats 7] [--sizes 500x6,10000x12]
    python benchmarks/greedy_speed.py --scaling 1000,5000,10000,50000 [--nodes 24] [--repeats 3]

For each generated window (``benchmarks/windows.py``) and the committed ``window_061`` (553 x 6),
the greedy solve is timed in two ways, alternately in one process: as shipped (inside
:func:`qlmio_opt.solvers.runtime.hot_path`: one BLAS thread, cyclic GC paused) and without those
settings (the same algorithm, ``Greedy.solve_as_is``). Both must return the same assignment. The
first call of each window is reported apart (it pays one-off allocations), then the median and
the minimum of ``--repeats`` calls, and the shipped path's median CPU time (what the process
itself spent, whatever the other core does). The machine's load average is printed with the
table: these machines are shared, and wall times depend on what else runs.

With ``--scaling`` it times instead the shipped greedy's CPU on generated windows of those many
requests on ``--nodes`` nodes (the median of ``--repeats`` calls after a first one), prints the
CPU time per request-node pair with the dual's and the search's shares (wall-clock stats of the
solve), and the exponent ``b`` of a least-squares fit ``cpu = a * pairs ** b`` in log-log (1: time
per pair flat).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from windows import sized_window

from qlmio_opt import Instance, read_instance
from qlmio_opt.faces.report import markdown_table
from qlmio_opt.formulations import build_problem
from qlmio_opt.predictors import predict
from qlmio_opt.solvers.greedy import Greedy

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SIZES = "500x6,1000x6,2000x12,5000x12,10000x12"


def _timed(run) -> tuple[float, float, object]:
    """Wall and CPU seconds of ``run()``, and its result."""
    start, cpu = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - start, time.process_time() - cpu, result


def measure(label: str, problem, repeats: int) -> dict:
    """One table row: first call, then ``repeats`` alternating calls of both paths."""
    solver = Greedy()

    def shipped():
        return solver.solve(problem)

    def plain():
        return solver.solve_as_is(problem, None, 0, None)

    first, _, reference = _timed(shipped)
    times = {"shipped": [], "plain": []}
    cpu_times = []
    same = True
    for _ in range(repeats):
        for name, run in (("plain", plain), ("shipped", shipped)):
            elapsed, cpu, result = _timed(run)
            times[name].append(elapsed)
            if name == "shipped":
                cpu_times.append(cpu)
            same &= bool(np.array_equal(result.assignment, reference.assignment))
    value, bound = reference.reported_objective, reference.bound
    return {
        "window": label,
        "requests": problem.num_requests,
        "nodes": problem.num_nodes,
        "first call ms": 1000 * first,
        "shipped median ms": 1000 * statistics.median(times["shipped"]),
        "shipped min ms": 1000 * min(times["shipped"]),
        "shipped CPU ms": 1000 * statistics.median(cpu_times),
        "plain median ms": 1000 * statistics.median(times["plain"]),
        "plain min ms": 1000 * min(times["plain"]),
        "plain / shipped": statistics.median(times["plain"]) / statistics.median(times["shipped"]),
        "same answer": "yes" if same else "NO",
        "gap to own bound %": 100 * (value - bound) / max(abs(value), 1e-9),
    }


# The longest window the generator draws arrivals for (the Azure conversation trace has 19,366
# rows); larger windows are tiles of one this size.
LARGEST_DRAWN = 10_000


def tiled_window(requests: int, nodes: int) -> Instance:
    """A generated window of ``requests`` requests on ``nodes`` nodes; above
    :data:`LARGEST_DRAWN` requests, ``k`` copies of one :data:`LARGEST_DRAWN`-request window one
    after the other, with ``k`` times its length and edge memory (links carry megabits per
    second, so a ``k`` times longer window carries ``k`` times as much): about the same load
    (nodes whose memory is ``"auto"``, the device's free memory, keep it, so they get tighter)."""
    if requests <= LARGEST_DRAWN:
        return sized_window(requests, nodes)
    tiles = -(-requests // LARGEST_DRAWN)
    data = sized_window(LARGEST_DRAWN, nodes).to_dict()
    window_s = data["window_s"]
    data["window_s"] = tiles * window_s
    for node in data["nodes"]:
        if isinstance(node.get("memory_gb"), int | float):
            node["memory_gb"] = tiles * node["memory_gb"]
    data["requests"] = [
        dict(request, id=f"{request['id']}-{k}", arrival_s=request["arrival_s"] + k * window_s)
        for k in range(tiles)
        for request in data["requests"]
    ][:requests]
    data["name"] = f"tiled_{requests}x{nodes}"
    return Instance.from_dict(data)


def scaling_row(requests: int, nodes: int, repeats: int) -> dict:
    """CPU time of the shipped greedy on one generated window, and its parts."""
    instance = tiled_window(requests, nodes)
    problem = build_problem(instance, predict(instance))
    solver = Greedy()
    solver.solve(problem)
    runs = [_timed(lambda: solver.solve(problem)) for _ in range(repeats)]
    cpu = statistics.median(run[1] for run in runs)
    stats = runs[-1][2].stats
    pairs = problem.num_requests * problem.num_nodes
    return {
        "requests": problem.num_requests,
        "nodes": problem.num_nodes,
        "pairs": pairs,
        "CPU ms": 1000 * cpu,
        "CPU us per pair": 1e6 * cpu / pairs,
        "wall ms": 1000 * statistics.median(run[0] for run in runs),
        "dual ms": 1000 * stats["dual_s"],
        "search ms": 1000 * stats["search_s"],
    }


def fitted_exponent(pairs: list[int], seconds: list[float]) -> float:
    """``b`` of the least-squares fit ``log(seconds) = log(a) + b * log(pairs)``."""
    return float(np.polyfit(np.log(pairs), np.log(seconds), 1)[0])


def scaling(sizes: str, nodes: int, repeats: int) -> None:
    rows = [scaling_row(int(size), nodes, repeats) for size in sizes.split(",")]
    frame = pd.DataFrame(rows)
    print(markdown_table(frame, index=False))
    exponent = fitted_exponent(frame["pairs"].tolist(), (frame["CPU ms"] / 1000).tolist())
    print(f"fitted exponent of CPU time against pairs: {exponent:.3f} (1: time per pair flat)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="REQUESTSxNODES,...")
    parser.add_argument("--scaling", default=None, help="REQUESTS,...: CPU time per pair")
    parser.add_argument("--nodes", type=int, default=24, help="nodes of the --scaling windows")
    args = parser.parse_args(argv)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.scaling:
        scaling(args.scaling, args.nodes, args.repeats)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return 0
    rows = []
    instance = read_instance(ROOT / "instances" / "window_061.json")
    rows.append(measure("window_061", build_problem(instance, predict(instance)), args.repeats))
    for size in args.sizes.split(","):
        requests, nodes = (int(part) for part in size.lower().split("x"))
        instance = sized_window(requests, nodes)
        problem = build_problem(instance, predict(instance))
        rows.append(measure(f"generated {requests}x{nodes}", problem, args.repeats))
    print(markdown_table(pd.DataFrame(rows), index=False))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
