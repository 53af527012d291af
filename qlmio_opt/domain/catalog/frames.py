"""Catalog tables as pandas DataFrames, for the ``qlmio-opt catalog`` command and notebooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from qlmio_opt.domain.catalog.catalog import Catalog

__all__ = ["REFERENCE_MODELS", "devices_frame", "models_frame", "tasks_frame"]

REFERENCE_MODELS: tuple[tuple[str, str], ...] = (
    ("2b", "qwen2-vl-2b"),
    ("7b", "qwen2-vl-7b"),
    ("72b", "qwen2-vl-72b"),
)
"""Size label -> model used for the "throughput per model size" columns of devices_frame."""

# An example image (a 1024x768 photo) for the image-token column.
_EXAMPLE_IMAGE = (1024, 768)


def models_frame(catalog: Catalog) -> pd.DataFrame:
    """One row per model: size, memory, image tokens of a 1024x768 image, accuracy."""
    rows = []
    for key, m in catalog.models.items():
        row = {
            "model": key,
            "display_name": m.display_name,
            "family": m.family,
            "params_b": m.params_b,
            "weights_gb": m.weights_gb,
            "kv_kib_per_token": m.kv_bytes_per_token / 1024,
            "image_rule": m.image_tokens.kind,
            "tokens_1024x768": m.image_tokens.tokens(*_EXAMPLE_IMAGE),
        }
        row.update({f"acc_{t}": m.accuracy.get(t, np.nan) for t in catalog.tasks})
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def devices_frame(catalog: Catalog) -> pd.DataFrame:
    """One row per device: memory, bandwidth, fitted efficiencies and reference throughputs.

    ``decode_tok_s_<size>`` / ``prefill_tok_s_<size>`` are the roofline rates of the
    reference models in :data:`REFERENCE_MODELS` (NaN where the model's weights do not fit).
    """
    refs = [(size, catalog.models[key]) for size, key in REFERENCE_MODELS if key in catalog.models]
    rows = []
    for key, d in catalog.devices.items():
        row = {
            "device": key,
            "display_name": d.display_name,
            "tier_hint": d.tier_hint,
            "num_gpus": d.num_gpus,
            "memory_gb": d.memory_gb,
            "bandwidth_gbs": d.memory_bandwidth_gbs,
            "decode_efficiency": d.decode_efficiency,
            "prefill_tflops": d.prefill_tflops,
            "anchors": len(d.measurements),
        }
        for size, model in refs:
            fits = d.free_memory_gb(model) > 0
            row[f"decode_tok_s_{size}"] = d.decode_tok_s(model) if fits else np.nan
        for size, model in refs:
            fits = d.free_memory_gb(model) > 0
            row[f"prefill_tok_s_{size}"] = d.prefill_tok_s(model) if fits else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("device")


def tasks_frame(catalog: Catalog) -> pd.DataFrame:
    """One row per task family."""
    rows = [
        {
            "task": key,
            "display_name": t.display_name,
            "benchmarks": ", ".join(t.benchmarks) or "-",
            "typical_output_tokens": t.typical_output_tokens,
            "resolution_exponent": t.resolution_exponent,
            "reference_size": f"{t.reference_width}x{t.reference_height}",
        }
        for key, t in catalog.tasks.items()
    ]
    return pd.DataFrame(rows).set_index("task")
