"""The published JSON Schemas of the instance and solution formats.

The ``*.schema.json`` files beside this module are generated from the pydantic models by
``python -m qlmio_opt.domain.schema`` and committed; a test keeps them in sync.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel

SCHEMA_ID = "https://qlmio-opt.example/schema/{kind}-v1.json"
KINDS = ("instance", "solution")


def generate_schema(kind: str) -> dict[str, Any]:
    """Build the schema of ``kind`` ("instance" or "solution") from the models."""
    from qlmio_opt.domain.instance import Instance
    from qlmio_opt.domain.solution import Solution

    models: dict[str, type[BaseModel]] = {"instance": Instance, "solution": Solution}
    if kind not in models:
        raise ValueError(f"unknown schema {kind!r}")
    schema = models[kind].model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID.format(kind=kind),
        **schema,
    }


def schema_text(kind: str) -> str:
    """The shipped schema file's text."""
    return resources.files(__package__).joinpath(f"{kind}.schema.json").read_text("utf-8")


def write_schemas() -> None:
    """Write ``instance.schema.json`` and ``solution.schema.json`` beside this module."""
    folder = Path(__file__).parent
    for kind in KINDS:
        path = folder / f"{kind}.schema.json"
        path.write_text(json.dumps(generate_schema(kind), indent=1) + "\n", encoding="utf-8")
