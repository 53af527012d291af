"""What every predictor returns, the interface it follows, and how overrides replace it."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

from qlmio_opt.domain.instance import Instance


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class Predictions:
    """Per request-node pair predictions for one window (arrays of shape ``(R, N)``).

    Attributes
    ----------
    quality
        Probability that the node's model completes the request's task.
    latency_s
        End-to-end latency (window wait + upload + RTT + vision + prefill + decode) on an
        otherwise idle node; the formulation adds congestion when ``congestion`` is true.
    memory_gb
        KV-cache memory the request holds on the node.
    eligible
        False where the pair is impossible (unreachable, modality unsupported, null override).
    upload_bytes
        Bytes each request sends across every link of its path, shape ``(R,)``.
    components
        The latency's parts by name (``wait_s``, ``transfer_s``, ``rtt_s``, ``vision_s``,
        ``prefill_s``, ``decode_s``) plus ``image_tokens`` and ``output_tokens``, each ``(R, N)``.
    congestion
        Whether the formulation should model congestion on top of ``latency_s`` (false when the
        instance's latencies are given as overrides: given values are final).
    source
        Which predictor produced the values (``"analytic"``, ``"overrides"``, ...).
    report
        What the predictor says about these values, as counts by name (e.g. how many pairs a
        learned model kept analytic because they lie outside its training support); a
        solution records them among its stats as ``predictor.<name>``.
    """

    quality: np.ndarray
    latency_s: np.ndarray
    memory_gb: np.ndarray
    eligible: np.ndarray
    upload_bytes: np.ndarray
    components: Mapping[str, np.ndarray] = field(default_factory=dict)
    congestion: bool = True
    source: str = "analytic"
    report: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = self.quality.shape
        for name in ("latency_s", "memory_gb", "eligible"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {shape}")
        for name in ("quality", "latency_s", "memory_gb", "eligible", "upload_bytes"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(
            self, "components", {k: _frozen(v) for k, v in dict(self.components).items()}
        )
        object.__setattr__(self, "report", {k: float(v) for k, v in dict(self.report).items()})

    @property
    def shape(self) -> tuple[int, int]:
        return self.quality.shape


class NotFittedError(ValueError, AttributeError):
    """A model was used before ``fit`` or ``load`` (as scikit-learn's ``NotFittedError``, a
    ``ValueError`` and an ``AttributeError``)."""


class ParamsMixin:
    """``get_params`` / ``set_params`` read from ``__init__``'s signature, as scikit-learn's
    ``BaseEstimator`` has them (so ``sklearn.base.clone`` works), without importing
    scikit-learn (over a second) when the package is imported.

    The classes using it follow scikit-learn's estimator contract: ``__init__`` stores every
    argument unchanged under its own name and nothing else, ``fit`` validates the settings and
    returns ``self``, learned attributes end in ``_``, randomness comes from ``random_state``,
    and use before ``fit`` raises :class:`NotFittedError`. Their ``fit`` takes a bench table (or
    nothing, or a table and a model), not ``(X, y)`` arrays, so scikit-learn's
    ``check_estimator`` does not apply; ``tests/predictors/test_estimator_contract.py`` checks
    the rest.
    """

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        params = signature.parameters.values()
        return sorted(p.name for p in params if p.name != "self" and p.kind in plain)

    @classmethod
    def _in_init_order(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """``settings`` ordered as ``__init__`` lists them (how model files record them)."""
        order = list(inspect.signature(cls.__init__).parameters)
        return {k: settings[k] for k in sorted(settings, key=order.index)}

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The settings given to ``__init__``; with ``deep``, also those of any setting that has
        settings of its own, as ``<name>__<setting>``."""
        out: dict[str, Any] = {}
        for name in self._param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params: Any) -> Self:
        """Change settings by name (``<name>__<setting>`` for a nested one); unknown names are
        refused with a ``ValueError`` naming the valid ones."""
        valid = self._param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"{type(self).__name__} has no setting {name!r}; valid: {', '.join(valid)}"
                )
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self


@runtime_checkable
class Predictor(Protocol):
    """The scikit-learn-like contract of every predictor.

    Settings go in ``__init__``; ``fit`` learns (a no-op for analytic predictors) and returns
    ``self``; ``predict`` maps a validated instance to :class:`Predictions`.
    """

    def fit(self, data=None, y=None) -> Predictor: ...

    def predict(self, instance: Instance) -> Predictions: ...


def structural_eligibility(instance: Instance) -> np.ndarray:
    """``(R, N)``: the node is reachable from the request's site and accepts its inputs."""
    catalog = instance.resolved_catalog
    site_index = {s: i for i, s in enumerate(instance.network.sites)}
    sites = np.array([site_index[r.site] for r in instance.requests], dtype=np.int64)
    reachable = ~np.isnan(instance.network_graph.rtt_ms_matrix())[sites]  # (R, N)
    has_images = np.array([bool(r.images) for r in instance.requests], dtype=bool)
    takes_images = np.array(
        ["image" in (n.modalities or catalog.model(n.model).modalities) for n in instance.nodes],
        dtype=bool,
    )
    return reachable & (takes_images[None, :] | ~has_images[:, None])


def apply_overrides(instance: Instance, predictions: Predictions | None) -> Predictions:
    """Replace predicted matrices by the instance's overrides, where it has them."""
    ov = instance.overrides
    if ov is None:
        if predictions is None:
            raise ValueError("no predictions and no overrides")
        return predictions
    shape = (len(instance.requests), len(instance.nodes))
    base = predictions
    latency = (
        np.array([[np.nan if v is None else v for v in row] for row in ov.latency_s], dtype=float)
        if ov.latency_s is not None
        else None
    )
    if latency is not None:
        latency = latency.reshape(shape)
    quality = np.array(ov.quality, dtype=float).reshape(shape) if ov.quality is not None else None
    memory = (
        np.array(ov.memory_gb, dtype=float).reshape(shape) if ov.memory_gb is not None else None
    )
    if base is None and (latency is None or quality is None or memory is None):
        raise ValueError("partial overrides need a predictor for the rest")
    eligible = base.eligible.copy() if base is not None else structural_eligibility(instance)
    if latency is not None:
        eligible &= ~np.isnan(latency)
        latency = np.where(np.isnan(latency), np.inf, latency)
    upload = base.upload_bytes if base is not None else _upload_bytes(instance)
    return Predictions(
        quality=_given_or_predicted(quality, base, "quality"),
        latency_s=_given_or_predicted(latency, base, "latency_s"),
        memory_gb=_given_or_predicted(memory, base, "memory_gb"),
        eligible=eligible,
        upload_bytes=upload,
        components={} if latency is not None else (base.components if base else {}),
        congestion=latency is None and (base.congestion if base else False),
        source="overrides" if base is None else f"{base.source}+overrides",
        report=base.report if base is not None and latency is None else {},
    )


def _given_or_predicted(
    given: np.ndarray | None, base: Predictions | None, name: str
) -> np.ndarray:
    """The override ``given`` if there is one, else the predictor's matrix ``name``."""
    if given is not None:
        return given
    if base is None:
        raise ValueError("partial overrides need a predictor for the rest")
    return getattr(base, name)


def _upload_bytes(instance: Instance) -> np.ndarray:
    return np.array([r.upload_bytes for r in instance.requests], dtype=float)


def needs_predictor(instance: Instance) -> bool:
    """False when overrides give latency, quality and memory for every pair."""
    ov = instance.overrides
    return ov is None or ov.latency_s is None or ov.quality is None or ov.memory_gb is None
