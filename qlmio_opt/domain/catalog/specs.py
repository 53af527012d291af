"""Immutable catalog entries: models, devices, task families and published measurements.

Instances are built and validated by :mod:`qlmio_opt.domain.catalog.build`; constructing them
directly skips validation (use :meth:`Catalog.with_entries` for user input).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from qlmio_opt.domain.catalog import throughput
from qlmio_opt.domain.catalog.image_tokens import ImageTokenRule

__all__ = ["TASK_FAMILIES", "DeviceSpec", "Measurement", "ModelSpec", "TaskSpec"]

TASK_FAMILIES: tuple[str, ...] = (
    "ocr",
    "document",
    "chart",
    "general-vqa",
    "reasoning",
    "captioning",
)


def _frozen(mapping: Mapping) -> Mapping:
    return mapping if isinstance(mapping, MappingProxyType) else MappingProxyType(dict(mapping))


@dataclass(frozen=True, eq=True)
class ModelSpec:
    """A multimodal LLM: size, memory, image-token rule and published accuracy.

    Parameters
    ----------
    key
        Catalog key, lower-case and hyphenated (``qwen2-vl-7b``).
    params_b, llm_params_b, vision_params_b
        Total, language-model and vision-encoder parameters, in billions.
    weights_gb
        bf16 weight memory (the checkpoint size as published).
    kv_bytes_per_token
        fp16 KV-cache bytes per token (2 x layers x KV heads x head dim x 2 bytes).
    image_tokens
        How many LLM tokens an image costs (:class:`ImageTokenRule`).
    vision_patches_per_token
        Vision-encoder patches per LLM image token (encoder work per image token).
    accuracy
        Probability of completing a task of each family, at the family's reference image
        size (see :class:`TaskSpec`).
    sources
        Field name (dotted for sub-fields, e.g. ``accuracy.ocr``) -> where the value comes from.
    """

    key: str
    display_name: str
    family: str
    params_b: float
    llm_params_b: float
    vision_params_b: float
    weights_gb: float
    kv_bytes_per_token: int
    modalities: tuple[str, ...]
    image_tokens: ImageTokenRule
    vision_patches_per_token: float
    accuracy: Mapping[str, float]
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "accuracy", _frozen(self.accuracy))
        object.__setattr__(self, "sources", _frozen(self.sources))

    __hash__ = None  # type: ignore[assignment]  # holds mappings


@dataclass(frozen=True, eq=True)
class Measurement:
    """A published throughput figure on a device, used to calibrate and check the roofline.

    Parameters
    ----------
    model
        The model that was measured (free text, e.g. ``"Llama-2-7B"``).
    model_params_b
        Its parameters in billions (the LLM's, for prefill).
    weights_gb
        Weight memory that run loaded (4-bit runs load far less than bf16).
    precision, engine
        As published (``"q4f16"``, ``"MLC-LLM"``, ``"vLLM"``, ``"HF transformers"`` ...).
    metric
        ``"decode_tok_s"`` or ``"prefill_tok_s"``.
    value
        The published figure.
    source
        Source tag and detail.
    lower_bound
        The run is known to be slower than a serving engine (HF transformers, or an engine
        shown slower on the same device in the same source): the roofline must be at least
        this fast, not match it.
    outlier
        Listed for completeness but not used or tested (the note says why).
    note
        Why the point is a lower bound or an outlier.
    """

    model: str
    model_params_b: float
    weights_gb: float
    precision: str
    engine: str
    metric: str
    value: float
    source: str
    lower_bound: bool = False
    outlier: bool = False
    note: str = ""


DEFAULT_MAX_BATCHED_TOKENS = 2048
"""Token budget per step of a chunked-prefill engine where the device catalog gives none:
vLLM V1's default for its OpenAI API server on every GPU except those of 70 GiB or more other
than the A100 (vllm/engine/arg_utils.py, ``EngineArgs.get_batch_defaults``); those (H100-class)
get 8,192, which the catalog states per device."""


@dataclass(frozen=True, eq=True)
class DeviceSpec:
    """A server (one or more GPUs) with a roofline throughput model.

    Decode is memory-bound, prefill and vision encoding compute-bound::

        decode tok/s  = decode_efficiency * memory_bandwidth_gbs * num_gpus
                        * parallel_efficiency / model.weights_gb
        prefill tok/s = prefill_tflops * 1e12 * num_gpus * parallel_efficiency
                        / (2 * model.llm_params_b * 1e9)
        vision patches/s = same with model.vision_params_b

    ``fixed_decode_tok_s`` / ``fixed_prefill_tok_s`` replace the roofline (hosted APIs).
    ``max_batched_tokens`` is the serving engine's token budget per step on this device when
    chunked prefill is on (default :data:`DEFAULT_MAX_BATCHED_TOKENS`).

    Parameters
    ----------
    tier_hint
        ``"edge"`` or ``"cloud"``: where such a device usually sits.
    memory_gb
        Total memory of all GPUs (unified memory on Jetson).
    memory_bandwidth_gbs
        Per-GPU memory bandwidth, GB/s.
    decode_efficiency
        Fraction of bandwidth achieved in decode (fitted to published measurements).
    prefill_tflops
        Effective dense FP16 TFLOP/s per GPU achieved in prefill.
    parallel_efficiency
        Tensor-parallel scaling efficiency (1.0 for one GPU).
    usable_memory_fraction, reserved_gb
        Memory a serving engine may use, and what the OS / activations keep.
    """

    key: str
    display_name: str
    tier_hint: str
    num_gpus: int
    memory_gb: float
    memory_bandwidth_gbs: float
    decode_efficiency: float
    prefill_tflops: float
    parallel_efficiency: float
    default_max_concurrency: int
    usable_memory_fraction: float
    reserved_gb: float
    fixed_decode_tok_s: float | None = None
    fixed_prefill_tok_s: float | None = None
    max_batched_tokens: int | None = None
    measurements: tuple[Measurement, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "measurements", tuple(self.measurements))
        object.__setattr__(self, "sources", _frozen(self.sources))

    __hash__ = None  # type: ignore[assignment]  # holds mappings

    @property
    def engine_token_budget(self) -> int:
        """Tokens a chunked-prefill engine batches per step on this device (catalog value, or
        :data:`DEFAULT_MAX_BATCHED_TOKENS`)."""
        return self.max_batched_tokens or DEFAULT_MAX_BATCHED_TOKENS

    def decode_tok_s(self, model: ModelSpec) -> float:
        """Single-stream decode tokens per second of ``model`` on this device."""
        if self.fixed_decode_tok_s is not None:
            return self.fixed_decode_tok_s
        return throughput.decode_tok_s(
            self.decode_efficiency,
            self.memory_bandwidth_gbs,
            self.num_gpus,
            self.parallel_efficiency,
            model.weights_gb,
        )

    def prefill_tok_s(self, model: ModelSpec) -> float:
        """Prefill (prompt) tokens per second of ``model`` on this device."""
        if self.fixed_prefill_tok_s is not None:
            return self.fixed_prefill_tok_s
        return throughput.compute_tok_s(
            self.prefill_tflops, self.num_gpus, self.parallel_efficiency, model.llm_params_b
        )

    def vision_tok_s(self, model: ModelSpec) -> float:
        """Vision-encoder patches per second of ``model`` on this device."""
        return throughput.compute_tok_s(
            self.prefill_tflops, self.num_gpus, self.parallel_efficiency, model.vision_params_b
        )

    def free_memory_gb(self, model: ModelSpec) -> float:
        """Memory left for KV cache after ``model``'s weights; negative = does not fit."""
        return self.memory_gb * self.usable_memory_fraction - self.reserved_gb - model.weights_gb


@dataclass(frozen=True, eq=True)
class TaskSpec:
    """A task family: benchmarks behind its accuracy, typical output and resolution effect.

    Parameters
    ----------
    benchmarks
        Benchmarks whose published scores define the family's accuracy.
    typical_output_tokens
        Typical answer length.
    resolution_exponent
        beta in ``quality ~ accuracy * (seen_pixels / reference_seen_pixels) ** beta``.
    reference_width, reference_height
        Typical benchmark image size: the catalog accuracy holds at this size.
    """

    key: str
    display_name: str
    benchmarks: tuple[str, ...]
    typical_output_tokens: int
    resolution_exponent: float
    reference_width: int
    reference_height: int
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "benchmarks", tuple(self.benchmarks))
        object.__setattr__(self, "sources", _frozen(self.sources))

    __hash__ = None  # type: ignore[assignment]  # holds mappings
