"""Peak resident memory of one ``exact`` solve on a very large window, stage by stage.

The generator's traces hold at most ~19,000 consecutive arrivals, so a window beyond that is a
default-scenario window of ``--base`` requests with its requests repeated (new ids) up to the
size asked for: the same nodes and network, the same per-request spread. Each size runs in its
own process (``--child``), so the peaks do not mix; ``ru_maxrss`` is the process's peak.
``exact`` runs without its pair limit (``ExactHighs(max_pairs=None)``): these runs set it
(``solvers/exact.py``, ``MAX_PAIRS``; docs/scaling.md, "Exact's size limit").

    python benchmarks/exact_memory.py [--sizes 10000x12,50000x24] [--time-limit 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiled_window(requests: int, nodes: int, base: int):
    """A window of ``requests`` requests: ``base`` generated ones repeated with new ids."""
    from qlmio_opt import Instance
    from qlmio_opt.domain.scenarios import sized_window

    data = sized_window(min(requests, base), nodes)
    first = data["requests"]
    tiled = []
    for k in range(requests):
        request = dict(first[k % len(first)])
        request["id"] = f"{request['id']}_{k // len(first)}"
        tiled.append(request)
    data["requests"] = tiled
    data["name"] = f"tiled_{requests}x{nodes}"
    return Instance.from_dict(data)


def child(requests: int, nodes: int, base: int, time_limit: float) -> dict:
    from qlmio_opt import solve
    from qlmio_opt.solvers.exact import ExactHighs

    row: dict = {"requests": requests, "nodes": nodes}
    instance = tiled_window(requests, nodes, base)
    row["instance_peak_mb"] = peak_mb()
    start = time.perf_counter()
    # without exact's pair limit: measuring beyond it is what set it
    solution = solve(instance, ExactHighs(max_pairs=None), time_limit=time_limit)
    row["wall_s"] = time.perf_counter() - start
    row["status"] = solution.status.value
    row["message"] = solution.message
    stats = solution.solver_stats
    row.update({k: stats.get(k) for k in ("columns", "rows", "nonzeros", "highs_run_s")})
    row["peak_mb"] = peak_mb()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000x12,50000x24")
    parser.add_argument("--base", type=int, default=10_000)
    parser.add_argument("--time-limit", type=float, default=20.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        requests, nodes = (int(v) for v in args.child.split("x"))
        print(json.dumps(child(requests, nodes, args.base, args.time_limit)))
        return
    for size in args.sizes.split(","):
        command = [sys.executable, __file__, "--child", size, "--base", str(args.base)]
        command += ["--time-limit", str(args.time_limit)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{size}: failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(row))


if __name__ == "__main__":
    main()
