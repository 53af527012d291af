"""benchmarks/service_load.py and service_windowing.py at a tiny size: each starts the real
service on loopback, drives it with both client libraries and reads every window or request
back as answered and counted."""

import re
import subprocess
import sys

import pytest
from conftest import ROOT

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def run_benchmark(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("http_client", ["stdlib", "httpx"])
def test_service_load_answers_and_counts_every_window(http_client):
    out = run_benchmark(
        "service_load.py",
        "--sizes", "3", "--windows", "6", "--clients", "2", "--http-client", http_client,
    )  # fmt: skip
    assert f"clients' HTTP: {http_client}" in out
    # "size windows answered counted ..." then the size's row
    row = re.search(r"^\s*3\s+6\s+(\d+)\s+(\d+)\s", out, re.MULTILINE)
    assert row is not None, out
    assert row.group(1) == row.group(2) == "6"


def test_service_windowing_answers_and_counts_every_request():
    out = run_benchmark(
        "service_windowing.py", "--requests", "6", "--clients", "2", "--window-s", "0.2"
    )
    # "requests answered counted windows ..." then the row
    row = re.search(r"^\s*6\s+(\d+)\s+(\d+)\s+(\d+)\s", out, re.MULTILINE)
    assert row is not None, out
    assert row.group(1) == row.group(2) == "6" and int(row.group(3)) >= 1
