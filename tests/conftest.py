"""Shared paths and fixtures."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTANCES = ROOT / "instances"
SMALL = INSTANCES / "small"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def small_dir() -> Path:
    return SMALL
