"""Calibrated catalogs of models, devices and task families.

Every shipped value carries its public source (tags in ``data/sources.toml``), or says it is
derived from sourced values or an assumption, and why.

>>> from qlmio_opt.domain.catalog import default_catalog
>>> cat = default_catalog()
>>> cat.model("qwen2-vl-7b").image_tokens.tokens(448, 448)
256
>>> round(cat.device("a100").decode_tok_s(cat.model("qwen2-vl-7b")))
94
"""

from qlmio_opt.domain.catalog.catalog import Catalog
from qlmio_opt.domain.catalog.image_tokens import ImageTokenRule
from qlmio_opt.domain.catalog.load import default_catalog, load_catalog
from qlmio_opt.domain.catalog.specs import (
    TASK_FAMILIES,
    DeviceSpec,
    Measurement,
    ModelSpec,
    TaskSpec,
)

__all__ = [
    "TASK_FAMILIES",
    "Catalog",
    "DeviceSpec",
    "ImageTokenRule",
    "Measurement",
    "ModelSpec",
    "TaskSpec",
    "default_catalog",
    "load_catalog",
]
