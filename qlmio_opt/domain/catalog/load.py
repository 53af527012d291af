"""Reading the shipped catalog and user TOML files."""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any

from qlmio_opt.domain.catalog.catalog import Catalog
from qlmio_opt.domain.errors import CatalogError, InputError, Issue

__all__ = ["default_catalog", "load_catalog", "read_catalog_toml"]

SECTIONS = ("models", "devices", "tasks", "sources")
_SHIPPED = ("tasks.toml", "models.toml", "devices.toml", "sources.toml")


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CatalogError(Issue("", f"invalid TOML: {err}"), source=source) from None
    unknown = [k for k in doc if k not in SECTIONS]
    if unknown:
        issues = [
            Issue(k, f"unknown table (expected one of {', '.join(SECTIONS)})") for k in unknown
        ]
        raise CatalogError(issues, source=source)
    return doc


def read_catalog_toml(path: str | PathLike[str]) -> dict[str, Any]:
    """Parse a catalog TOML file into plain data (``models``, ``devices``, ``tasks``, ``sources``).

    Raises
    ------
    CatalogError
        Naming the file when it cannot be read, is not valid TOML or has unknown tables.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CatalogError(
            Issue("", f"cannot read catalog file: {err}"), source=str(path)
        ) from None
    return _parse(text, str(path))


def _merge_doc(base: Catalog, doc: Mapping[str, Any], source: str, *, strict: bool) -> Catalog:
    try:
        return base.with_entries(
            doc.get("models"),
            doc.get("devices"),
            doc.get("tasks"),
            sources=doc.get("sources"),
            require_sources=strict,
        )
    except InputError as err:
        raise CatalogError(err.issues, source=source) from None


def _read_shipped(name: str) -> dict[str, Any]:
    text = (
        resources.files("qlmio_opt.domain.catalog")
        .joinpath("data", name)
        .read_text(encoding="utf-8")
    )
    return _parse(text, f"qlmio_opt/domain/catalog/data/{name}")


@functools.cache
def default_catalog() -> Catalog:
    """The shipped catalog (cached). Every shipped value must carry a source."""
    catalog = Catalog({}, {}, {}, {})
    for name in _SHIPPED:
        catalog = _merge_doc(catalog, _read_shipped(name), name, strict=True)
    return catalog


def load_catalog(*toml_paths: str | PathLike[str]) -> Catalog:
    """The default catalog with user TOML files merged in order (later files win).

    User files have the layout of the shipped ones (``[models.KEY]``, ``[devices.KEY]``,
    ``[tasks.KEY]``, optionally ``[sources]``); fields without a source are marked
    ``"user-supplied"``.

    Raises
    ------
    CatalogError
        Naming the file and the path of every problem.
    """
    catalog = default_catalog()
    for path in toml_paths:
        catalog = _merge_doc(catalog, read_catalog_toml(path), str(path), strict=False)
    return catalog
