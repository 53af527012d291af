"""How fast the faces start: ``qlmio-opt --help`` and imports against a bare ``python -c pass``.

Each command runs ``--repeats`` times, interleaved with the others (so a busy moment of a shared
machine hits all of them alike), in fresh processes; the table shows the median and minimum wall
time, the ratio of medians to ``python -c pass`` and how many qlmio_opt modules each loads.

    python benchmarks/startup.py [--repeats 21]

Run it with the interpreter of an environment where qlmio-opt is installed (an editable install
adds its import finder to every start: note which one was measured).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from importlib.metadata import distribution
from pathlib import Path

COUNT = (
    "import sys, json; {stmt}; "
    "print(json.dumps(len([m for m in sys.modules if m.startswith('qlmio_opt')])))"
)


def commands() -> dict[str, list[str]]:
    py = sys.executable
    beside = Path(sys.executable).parent / "qlmio-opt"  # the script of this interpreter's env
    cli = str(beside) if beside.exists() else (shutil.which("qlmio-opt") or "qlmio-opt")
    return {
        "python -c pass": [py, "-c", "pass"],
        "import qlmio_opt": [py, "-c", "import qlmio_opt"],
        "qlmio-opt --version": [cli, "--version"],
        "qlmio-opt --help": [cli, "--help"],
        "qlmio-opt solve --help": [cli, "solve", "--help"],
        "import qlmio_opt.solvers.greedy_state": [
            py,
            "-c",
            "import qlmio_opt.solvers.greedy_state",
        ],
    }


def modules_loaded(stmt: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", COUNT.format(stmt=stmt)], capture_output=True, text=True, check=True
    )
    return int(json.loads(proc.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    runs = commands()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, argv in runs.items():
            start = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c pass"])
    editable = (distribution("qlmio-opt").read_text("direct_url.json") or "").find("editable") >= 0
    how = "editable" if editable else "normally"
    print(f"python {sys.version.split()[0]}, qlmio-opt installed {how}")
    print(
        f"{'command':42s} {'median ms':>10s} {'min ms':>8s} {'x pass':>7s} {'qlmio modules':>14s}"
    )
    loaded = {
        "import qlmio_opt": modules_loaded("import qlmio_opt"),
        "qlmio-opt --help": modules_loaded("from qlmio_opt.faces.cli import parser; parser()"),
        "import qlmio_opt.solvers.greedy_state": modules_loaded(
            "import qlmio_opt.solvers.greedy_state"
        ),
    }
    for name, values in times.items():
        median = statistics.median(values)
        count = loaded.get(name, "")
        print(
            f"{name:42s} {1000 * median:10.1f} {1000 * min(values):8.1f} {median / base:7.2f} "
            f"{count!s:>14s}"
        )


if __name__ == "__main__":
    main()
