"""Ctrl-C during ``qlmio-opt solve``: seconds from SIGINT to exit, windows kept, processes left.

Each run starts ``python -m qlmio_opt.faces.cli solve SMALL... LONG --out DIR`` in its own session
(a process group, as a terminal makes), waits until both small windows' solutions are written and
``--settle`` seconds more (HiGHS running on LONG), sends SIGINT, and measures the time until the
command exits. Two LONG windows, each solved with ``exact``:

* ``window_078`` (committed; 331 requests x 7 nodes, 2,653 MILP columns), with exact's default
  60 s limit: it did not close within it in ``instances/bks.csv``; HiGHS checks for interrupts
  at most 2.8 s apart on it (a probe on the development machine);
* ``sized_window(2000, 12)`` (generated, not committed; 25,936 columns) with ``--time-limit 15``:
  exact runs HiGHS without presolve and, at this limit, without sub-MIP heuristics
  (``solvers/exact.py``), and HiGHS runs the whole limit; its checks come up to 4 s apart
  during the root relaxation.

Reported per window and mode: the exit codes, the median and the largest time from SIGINT to
exit, the windows written (and how many read back as valid solutions), and the child processes
of the command (loky workers, Dask's workers and their helpers) still alive ``--grace`` seconds
after it exited.

``--target group`` sends SIGINT to the whole process group, as a terminal's Ctrl-C does (the
workers get it too); ``--target pid`` to the command's process only.

    python benchmarks/interrupt_latency.py [--repeats 3] [--modes serial,loky,dask]
                                           [--windows committed,sized] [--target group|pid]
                                           [--settle 1] [--grace 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import pandas as pd
import psutil
from rich.console import Console

from qlmio_opt.domain.io import read_solution
from qlmio_opt.domain.scenarios import dumps_instance, sized_window
from qlmio_opt.faces.report import frame_table

ROOT = Path(__file__).resolve().parent.parent
SMALL = [ROOT / "instances" / "small" / f"{name}.json" for name in ("memory", "floor")]
COMMITTED = ROOT / "instances" / "window_078.json"
SIZED = (2000, 12)
# exact's limit on the sized window: short enough that exact runs HiGHS without sub-MIPs
# (25,936 columns >= 1,500 per second of limit, solvers/exact.py; with them, one run at a 40 s
# limit spent over 10 minutes inside a sub-MIP's presolve, which checks no interrupt), long
# enough that HiGHS still runs when the signal comes
SIZED_TIME_LIMIT_S = 15.0
MODES = {
    "serial": [],
    "loky": ["--jobs", "2"],
    "dask": ["--backend", "dask", "--jobs", "2"],
}
POLL_S = 0.05


def _children(proc: psutil.Process) -> dict[int, psutil.Process]:
    try:
        return {c.pid: c for c in proc.children(recursive=True)}
    except psutil.NoSuchProcess:
        return {}


def _alive(procs: dict[int, psutil.Process]) -> list[int]:
    alive = []
    for pid, proc in procs.items():
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def interrupt_once(
    mode: str, long: tuple[str, Path, list[str]], target: str, settle_s: float, grace_s: float
) -> dict:
    """One run of ``mode`` on ``long`` (name, file, extra options): start, wait for the small
    windows, settle, SIGINT, measure."""
    name, path, options = long
    with tempfile.TemporaryDirectory(prefix="qlmio-interrupt-") as tmp:
        out_dir = Path(tmp) / "out"
        args = [sys.executable, "-m", "qlmio_opt.faces.cli", "solve", *map(str, SMALL), str(path)]
        args += ["--out", str(out_dir), *options, *MODES[mode]]
        cli = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        watch = psutil.Process(cli.pid)
        seen: dict[int, psutil.Process] = {}
        expected = [out_dir / f"{f.stem}.solution.json" for f in SMALL]
        while not all(p.exists() for p in expected) and cli.poll() is None:
            seen.update(_children(watch))
            time.sleep(POLL_S)
        settle_end = time.perf_counter() + settle_s
        while time.perf_counter() < settle_end and cli.poll() is None:
            seen.update(_children(watch))
            time.sleep(POLL_S)
        seen.update(_children(watch))
        finished_early = cli.poll() is not None
        sent = time.perf_counter()
        if target == "group":
            os.killpg(cli.pid, signal.SIGINT)
        else:
            cli.send_signal(signal.SIGINT)
        _, stderr = cli.communicate(timeout=120)
        exit_s = time.perf_counter() - sent
        time.sleep(grace_s)
        left = _alive(seen)
        for pid in left:  # leave nothing behind on the shared machine
            seen[pid].kill()
        written = sorted(out_dir.glob("*.solution.json"))
        valid = sum(_reads_back(p) for p in written)
        text = stderr.decode(errors="replace")
        return {
            "window": name,
            "mode": mode,
            "exit_code": cli.returncode,
            "exit_s": exit_s,
            "written": len(written),
            "valid": valid,
            "children_seen": len(seen),
            "children_left": len(left),
            "traceback": "Traceback" in text,
            "finished_before_signal": finished_early,
            "stderr_last": text.strip().splitlines()[-1] if text.strip() else "",
        }


def _reads_back(path: Path) -> bool:
    try:
        read_solution(path)
    except Exception:
        return False
    return True


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per mode: exit codes, SIGINT-to-exit median and max, windows kept, leftovers."""
    rows = []
    for (window, mode), group in runs.groupby(["window", "mode"], sort=False):
        rows.append(
            {
                "window": window,
                "mode": mode,
                "runs": len(group),
                "exit codes": ",".join(sorted({str(c) for c in group["exit_code"]})),
                "SIGINT to exit median (s)": round(median(group["exit_s"]), 2),
                "SIGINT to exit max (s)": round(group["exit_s"].max(), 2),
                "windows written (valid)": ",".join(
                    sorted(
                        {
                            f"{w} ({v})"
                            for w, v in zip(group["written"], group["valid"], strict=True)
                        }
                    )
                ),
                "child processes seen": ",".join(sorted({str(c) for c in group["children_seen"]})),
                "leftover processes": int(group["children_left"].sum()),
                "tracebacks": int(group["traceback"].sum()),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--target", choices=("group", "pid"), default="group")
    parser.add_argument("--windows", default="committed,sized")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of HiGHS before SIGINT")
    parser.add_argument(
        "--grace", type=float, default=3.0, help="seconds before counting leftovers"
    )
    args = parser.parse_args()
    console = Console(width=200)
    console.print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average before {os.getloadavg()[0]:.2f}; SIGINT to the {args.target}, "
        f"{args.settle} s after the small windows were written"
    )
    runs = []
    with tempfile.TemporaryDirectory(prefix="qlmio-interrupt-sized-") as tmp:
        sized = Path(tmp) / f"sized_{SIZED[0]}x{SIZED[1]}.json"
        sized.write_text(dumps_instance(sized_window(*SIZED)), encoding="utf-8")
        longs = {
            "committed": ("window_078", COMMITTED, []),
            "sized": (sized.stem, sized, ["--time-limit", str(SIZED_TIME_LIMIT_S)]),
        }
        for _ in range(args.repeats):
            for window in args.windows.split(","):
                for mode in args.modes.split(","):
                    run = interrupt_once(mode, longs[window], args.target, args.settle, args.grace)
                    console.print(run, soft_wrap=True)
                    runs.append(run)
    console.print(f"load average after {os.getloadavg()[0]:.2f}")
    frame_table(console, summarise(pd.DataFrame(runs)), title="Ctrl-C during qlmio-opt solve")


if __name__ == "__main__":
    main()
