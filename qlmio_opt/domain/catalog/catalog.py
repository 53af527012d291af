"""The :class:`Catalog`: models, devices and task families, looked up by key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from qlmio_opt.domain.catalog.build import BuildContext, merge_section
from qlmio_opt.domain.catalog.specs import DeviceSpec, ModelSpec, TaskSpec
from qlmio_opt.domain.errors import CatalogError, Issue

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Catalog"]


def _proxy(mapping: Mapping) -> Mapping:
    return mapping if isinstance(mapping, MappingProxyType) else MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Catalog:
    """Immutable set of catalog entries.

    Parameters
    ----------
    models, devices, tasks
        Entries by key.
    sources
        Source tag (``S5``) -> full citation.

    Examples
    --------
    >>> from qlmio_opt.domain.catalog import default_catalog
    >>> cat = default_catalog()
    >>> cat.model("qwen2-vl-7b").kv_bytes_per_token
    57344
    """

    models: Mapping[str, ModelSpec]
    devices: Mapping[str, DeviceSpec]
    tasks: Mapping[str, TaskSpec]
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("models", "devices", "tasks", "sources"):
            object.__setattr__(self, name, _proxy(getattr(self, name)))

    __hash__ = None  # type: ignore[assignment]  # holds mappings

    # -- lookups -------------------------------------------------------------------------------
    def model(self, key: str) -> ModelSpec:
        """The model ``key``; raises :class:`CatalogError` listing the known keys."""
        return self._lookup("model", self.models, key)

    def device(self, key: str) -> DeviceSpec:
        """The device ``key``; raises :class:`CatalogError` listing the known keys."""
        return self._lookup("device", self.devices, key)

    def task(self, key: str) -> TaskSpec:
        """The task family ``key``; raises :class:`CatalogError` listing the known keys."""
        return self._lookup("task", self.tasks, key)

    @staticmethod
    def _lookup(kind: str, table: Mapping[str, Any], key: str) -> Any:
        try:
            return table[key]
        except (KeyError, TypeError):
            known = ", ".join(sorted(table))
            raise CatalogError(
                Issue(f"{kind}s.{key}", f'unknown {kind} "{key}"; known: {known}')
            ) from None

    # -- merging -------------------------------------------------------------------------------
    def with_entries(
        self,
        models: Mapping[str, Mapping[str, Any]] | None = None,
        devices: Mapping[str, Mapping[str, Any]] | None = None,
        tasks: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        path_prefix: str = "",
        sources: Mapping[str, str] | None = None,
        require_sources: bool = False,
    ) -> Catalog:
        """A new catalog with entries added or updated from plain data.

        An existing key is updated field by field (``accuracy``, ``image_tokens`` and
        ``sources`` key by key); a new key must give every required field. Fields changed
        without a source get the source ``"user-supplied"``, unless ``require_sources``.

        Parameters
        ----------
        models, devices, tasks
            Entries by key, in the layout of the shipped TOML files.
        path_prefix
            Put in front of every error path (e.g. ``"catalog."`` inside an instance).
        sources
            Extra source tags -> citation.
        require_sources
            Refuse a value without a source instead (the shipped catalog's rule).

        Raises
        ------
        CatalogError
            Listing every invalid or missing value with its path, e.g.
            ``models.my-model.weights_gb: must be a positive finite number (got -1)``.
        """
        ctx = BuildContext(path_prefix, require_sources=require_sources)
        new_tasks = merge_section("tasks", self.tasks, tasks, ctx)
        ctx.tasks = tuple(new_tasks)
        new_models = merge_section("models", self.models, models, ctx)
        new_devices = merge_section("devices", self.devices, devices, ctx)
        for key, model in new_models.items():
            for task in ctx.tasks:
                if task not in model.accuracy and (not models or key not in models):
                    ctx.issues.append(
                        Issue(
                            f"{path_prefix}models.{key}.accuracy.{task}",
                            f'required field missing (task "{task}" is in the catalog)',
                        )
                    )
        new_sources = dict(self.sources)
        if sources is not None:
            if not isinstance(sources, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in sources.items()
            ):
                ctx.issues.append(Issue(f"{path_prefix}sources", "must map tags to strings"))
            else:
                new_sources.update(sources)
        if ctx.issues:
            raise CatalogError(ctx.issues)
        return Catalog(new_models, new_devices, new_tasks, new_sources)

    # -- tables for people ---------------------------------------------------------------------
    def models_frame(self) -> pd.DataFrame:
        """Models as a pandas DataFrame (one row per model)."""
        from qlmio_opt.domain.catalog.frames import models_frame

        return models_frame(self)

    def devices_frame(self) -> pd.DataFrame:
        """Devices with roofline decode / prefill tok/s for reference 2B, 7B and 72B models."""
        from qlmio_opt.domain.catalog.frames import devices_frame

        return devices_frame(self)

    def tasks_frame(self) -> pd.DataFrame:
        """Task families as a pandas DataFrame."""
        from qlmio_opt.domain.catalog.frames import tasks_frame

        return tasks_frame(self)
