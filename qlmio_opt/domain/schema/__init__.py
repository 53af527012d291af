"""The published JSON Schemas of the instance and solution formats.

The ``*.schema.json`` files beside this module are generated from the pydantic models by
``python -m qlmio_opt.domain.schema`` and committed; a test keeps them in sync.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCHEMA_ID = "https://qlmio-opt.example/schema/{kind}-v1.json"


def generate_schema(kind: str) -> dict[str, Any]:
    """Build the schema of ``kind`` ("instance" or "solution") from the models."""
    if kind == "instance":
        from qlmio_opt.domain.instance import Instance as model
    elif kind == "solution":
        from qlmio_opt.domain.solution import Solution as model
    else:
        raise ValueError(f"unknown schema {kind!r}")
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID.format(kind=kind),
        **schema,
    }


def schema_text(kind: str) -> str:
    """The shipped schema file's text."""
    return resources.files(__package__).joinpath(f"{kind}.schema.json").read_text("utf-8")


def write_schemas() -> None:
    folder = resources.files(__package__)
    for kind in ("instance", "solution"):
        path = folder.joinpath(f"{kind}.schema.json")
        path.write_text(json.dumps(generate_schema(kind), indent=1) + "\n", encoding="utf-8")
