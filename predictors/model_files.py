"""What every saved learned model shares: file paths, JSON-safe metadata, the SHA-256 link.

A model is two files, ``<stem>.json`` (metadata) and ``<stem>.npz`` (plain arrays). The JSON
names the ``.npz`` and records its SHA-256, so changed arrays, or arrays of another model, are
refused on load. Each model module checks its own fields; this module holds only the parts
they all share.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["json_safe", "model_paths", "sibling_path", "verify_npz", "write_model_json"]


def model_paths(path: str | Path) -> tuple[Path, Path]:
    """``(<stem>.json, <stem>.npz)`` for a stem, or for either file (its suffix is dropped)."""
    p = Path(path)
    if p.suffix in (".json", ".npz"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".npz")


def sibling_path(path: str | Path, tag: str) -> Path:
    """``<stem>-<tag>.json`` beside a model given by its stem or either file (the latency model
    and the selection calibration saved beside a quality model)."""
    p = Path(path)
    if p.suffix in (".json", ".npz"):
        p = p.with_suffix("")
    return p.with_name(f"{p.name}-{tag}.json")


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars made plain and non-finite floats made ``None``."""
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_model_json(json_path: Path, npz_path: Path, meta: Mapping[str, Any]) -> None:
    """Write ``meta`` plus the ``.npz``'s name and SHA-256 (the ``.npz`` is written already)."""
    record = {
        **meta,
        "npz_file": npz_path.name,
        "npz_sha256": hashlib.sha256(npz_path.read_bytes()).hexdigest(),
    }
    json_path.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def verify_npz(json_path: Path, npz_path: Path, recorded: str) -> None:
    """Refuse an ``.npz`` whose SHA-256 is not the one its JSON recorded.

    Raises
    ------
    FileNotFoundError
        If the ``.npz`` is missing.
    ValueError
        Naming the JSON file and its field ``npz_sha256``, if the digests differ.
    """
    if not npz_path.is_file():
        raise FileNotFoundError(f"{npz_path}: no such model file")
    digest = hashlib.sha256(npz_path.read_bytes()).hexdigest()
    if digest != recorded:
        raise ValueError(
            f"{json_path}: field 'npz_sha256': {npz_path.name} has SHA-256 {digest}, not the "
            "recorded one (the arrays were changed or belong to another model)"
        )
