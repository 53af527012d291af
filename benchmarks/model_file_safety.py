"""What loading a model file costs, and what refusing a 1 GiB zip bomb costs.

Run ``python benchmarks/model_file_safety.py [--repeats 5]``. For each case it prints the
median wall time of ``--repeats`` runs, the tracemalloc peak of one run and the growth of the
process's peak RSS (``ru_maxrss``) over that run. Every case runs in a fresh Python process,
so one case's peak cannot hide another's; the files are built and the loader is warmed up (on
the shipped model of the same format) before anything is measured.

The cases:

- ``load shipped ...``: the shipped models of ``predictors/trained/`` as ``qlmio-opt solve
  --predictors learned`` reads them;
- ``refuse 1 GiB bomb (...)``: the model of that format with one float member replaced by an
  ``.npy`` that inflates to 1 GiB of zeros (about 1 MB on disk) and its SHA-256 recorded in the
  JSON, as an attacker holding both files would do: the archives
  ``tests/predictors/test_model_files.py`` builds and refuses;
- ``np.load of the bomb, unguarded``: what the sklearn quality loader did with that file
  before the change (it read every member before checking anything), for comparison.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "predictors"))  # the archives the tests refuse

from test_model_files import (  # noqa: E402
    FORMATS,
    copy_shipped,
    gib_npy_member,
    plant_member,
    torch_model_file,
)

from qlmio_opt.predictors import TRAINED_DIR  # noqa: E402

CASES = (
    "load shipped sklearn-quality",
    "load shipped latency",
    "refuse 1 GiB bomb (sklearn-quality)",
    "refuse 1 GiB bomb (latency)",
    "refuse 1 GiB bomb (torch-quality)",
    "np.load of the bomb, unguarded",
)
_SHIPPED = {"sklearn-quality": "default", "latency": "default-latency"}


def _bomb(fmt: str, folder: Path) -> Path:
    """The model of format ``fmt`` in ``folder`` with its 1 GiB member planted (JSON path)."""
    make, _, field = FORMATS[fmt]
    json_path = make(folder)
    data, crc, size = gib_npy_member()
    plant_member(json_path, field, (f"{field}.npy", data, zipfile.ZIP_DEFLATED, crc, size))
    return json_path


def _prepare(case: str, folder: Path) -> tuple[Callable[[], str], Callable[[], object]]:
    """``(the measured call, a warm-up call)`` of ``case``; the call returns its outcome."""
    if case.startswith("load shipped"):
        fmt = case.removeprefix("load shipped ")
        load = FORMATS[fmt][1]
        path = TRAINED_DIR / f"{_SHIPPED[fmt]}.json"
        return lambda: _outcome(load, path), lambda: load(path)
    if case.startswith("refuse"):
        fmt = case[case.index("(") + 1 : -1]
        load = FORMATS[fmt][1]
        path = _bomb(fmt, folder)
        valid = (
            torch_model_file(folder / "valid")
            if fmt == "torch-quality"
            else copy_shipped(_SHIPPED[fmt], folder / "valid")
        )
        return lambda: _outcome(load, path), lambda: load(valid)
    npz = _bomb("sklearn-quality", folder).with_suffix(".npz")
    shipped = TRAINED_DIR / "default.json"
    return lambda: _unguarded(npz), lambda: FORMATS["sklearn-quality"][1](shipped)


def _outcome(load: Callable[[Path], object], path: Path) -> str:
    try:
        load(path)
    except ValueError as exc:
        return "refused: " + str(exc).split(": ", 1)[1][:60]
    return "loaded"


def _unguarded(npz: Path) -> str:
    with np.load(npz, allow_pickle=False) as archive:
        value = np.array(archive["value"])
    return f"inflated {value.nbytes / 2**30:.2f} GiB"


def measure(case: str, repeats: int) -> dict[str, object]:
    """Time and memory of ``case`` in this process (run in a fresh one by :func:`main`)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "valid").mkdir()
        call, warm_up = _prepare(case, folder)
        warm_up()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        outcome = call()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return {
        "case": case,
        "outcome": outcome,
        "median_ms": 1e3 * statistics.median(times),
        "tracemalloc_peak_mb": peak / 1e6,
        "peak_rss_growth_mb": rss_growth * 1024 / 1e6,  # ru_maxrss is in KiB on Linux
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # the child's task
    args = parser.parse_args()
    if args.case:
        repeats = 1 if args.case.startswith("np.load") else args.repeats
        print(json.dumps(measure(args.case, repeats)))
        return
    print(f"{'case':40} {'median ms':>10} {'tracemalloc MB':>15} {'peak RSS +MB':>13}  outcome")
    for case in CASES:
        child = subprocess.run(
            [sys.executable, __file__, "--case", case, "--repeats", str(args.repeats)],
            check=True,
            capture_output=True,
            text=True,
        )
        row = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"{row['case']:40} {row['median_ms']:10.1f} {row['tracemalloc_peak_mb']:15.1f} "
            f"{row['peak_rss_growth_mb']:13.1f}  {row['outcome']}"
        )


if __name__ == "__main__":
    main()
