"""Plain data (parsed TOML or JSON) -> validated catalog entries, with field-by-field merging.

An entry that already exists is updated field by field (``accuracy``, ``image_tokens`` and
``sources`` key by key; ``measurements`` as a whole list); a new entry must be complete.
Every problem is collected as an :class:`~qlmio_opt.domain.errors.Issue` whose path names the entry
and the field, e.g. ``models.my-model.weights_gb``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from qlmio_opt.domain.catalog import fields as f
from qlmio_opt.domain.catalog.image_tokens import RULE_KINDS, ImageTokenRule
from qlmio_opt.domain.catalog.specs import DeviceSpec, Measurement, ModelSpec, TaskSpec
from qlmio_opt.domain.errors import CatalogError, Issue
from qlmio_opt.domain.types import check_id

__all__ = ["USER_SOURCE", "merge_section", "to_raw"]

USER_SOURCE = "user-supplied"

# Plausible ranges of catalog numbers, each well beyond the shipped catalog's extremes (in
# brackets). They keep the predictors' arithmetic finite and meaningful: an inline
# ``kv_bytes_per_token = 1e300`` or ``prefill_tflops = 1e-300`` is refused with its range instead
# of turning latencies and memory into inf or NaN. The throughput divisors (parameters, weights,
# bandwidth, TFLOP/s, efficiencies, fixed rates) start at 1e-3 so a latency stays finite.
PARAMS_B = f.number_in(1e-3, 1e5)  # 1 M .. 100 T parameters [0.3 .. 200 B]
WEIGHTS_GB = f.number_in(1e-3, 1e5)  # 1 MB .. 100 TB [1.7 .. 400 GB]
# per token [12,288 .. 819,200]; GPT-3 175B (96 layers, no grouped-query attention) needs 4.7 MB
KV_BYTES_PER_TOKEN = f.integer_in(1, 100_000_000)
PATCHES_PER_TOKEN = f.number_in(1e-3, 1e3)  # [1 .. 16]
NUM_GPUS = f.integer_in(1, 1024)  # [1 .. 8]; serving groups span 8-64 GPUs
DEVICE_MEMORY_GB = f.number_in(1e-3, 1e6)  # all GPUs together [8 .. 640]
MEMORY_BANDWIDTH_GBS = f.number_in(1e-3, 1e6)  # per GPU [68 .. 3,350]; B200: 8,000
FRACTION = f.number_in(1e-3, 1.0)  # efficiencies and the usable memory share [0.71 .. 1.0]
PREFILL_TFLOPS = f.number_in(1e-3, 1e6)  # per GPU [6.4 .. 676]; B200 dense FP16: ~2,250
MAX_CONCURRENCY = f.integer_in(1, 1_000_000)  # [4 .. 256]; as a node's max_concurrency
RESERVED_GB = f.number_in(0.0, 1e6)  # [1.5 .. 12]
TOKENS_PER_S = f.number_in(1e-3, 1e9)  # fixed rates and measurements [2.3 .. 14,723]
BATCHED_TOKENS = f.integer_in(16, 10_000_000)  # an engine's token budget per step [2,048 .. 8,192]
OUTPUT_TOKENS = f.integer_in(1, 1_000_000)  # [16 .. 256]; as a request's max_output_tokens
RESOLUTION_EXPONENT = f.number_in(0.0, 10.0)  # [0.05 .. 0.25]
REFERENCE_PX = f.integer_in(1, 100_000)  # [480 .. 2,200]; as an image's width and height

MODEL_FIELDS: dict[str, f.Checker] = {
    "display_name": f.text,
    "family": f.text,
    "params_b": PARAMS_B,
    "llm_params_b": PARAMS_B,
    "vision_params_b": PARAMS_B,
    "weights_gb": WEIGHTS_GB,
    "kv_bytes_per_token": KV_BYTES_PER_TOKEN,
    "modalities": f.modalities,
    "vision_patches_per_token": PATCHES_PER_TOKEN,
}
DEVICE_FIELDS: dict[str, f.Checker] = {
    "display_name": f.text,
    "tier_hint": f.tier,
    "num_gpus": NUM_GPUS,
    "memory_gb": DEVICE_MEMORY_GB,
    "memory_bandwidth_gbs": MEMORY_BANDWIDTH_GBS,
    "decode_efficiency": FRACTION,
    "prefill_tflops": PREFILL_TFLOPS,
    "parallel_efficiency": FRACTION,
    "default_max_concurrency": MAX_CONCURRENCY,
    "usable_memory_fraction": FRACTION,
    "reserved_gb": RESERVED_GB,
}
DEVICE_OPTIONAL: dict[str, f.Checker] = {
    "fixed_decode_tok_s": TOKENS_PER_S,
    "fixed_prefill_tok_s": TOKENS_PER_S,
    "max_batched_tokens": BATCHED_TOKENS,
}
MEASUREMENT_FIELDS: dict[str, f.Checker] = {
    "model": f.text,
    "model_params_b": PARAMS_B,
    "weights_gb": WEIGHTS_GB,
    "precision": f.text,
    "engine": f.text,
    "metric": f.metric,
    "value": TOKENS_PER_S,
    "source": f.text,
}
MEASUREMENT_OPTIONAL: dict[str, f.Checker] = {
    "lower_bound": f.boolean,
    "outlier": f.boolean,
    "note": f.text,
}
TASK_FIELDS: dict[str, f.Checker] = {
    "display_name": f.text,
    "benchmarks": f.text_list,
    "typical_output_tokens": OUTPUT_TOKENS,
    "resolution_exponent": RESOLUTION_EXPONENT,
    "reference_width": REFERENCE_PX,
    "reference_height": REFERENCE_PX,
}
TABLES = frozenset({"image_tokens", "accuracy", "sources"})


# -- spec -> plain data ----------------------------------------------------------------------
def to_raw(spec: ModelSpec | DeviceSpec | TaskSpec) -> dict[str, Any]:
    """The plain-data form of an entry (the inverse of building it)."""
    if isinstance(spec, ModelSpec):
        raw: dict[str, Any] = {name: getattr(spec, name) for name in MODEL_FIELDS}
        raw["modalities"] = list(spec.modalities)
        raw["image_tokens"] = {"rule": spec.image_tokens.kind, **spec.image_tokens.params}
        raw["accuracy"] = dict(spec.accuracy)
    elif isinstance(spec, DeviceSpec):
        raw = {name: getattr(spec, name) for name in DEVICE_FIELDS}
        raw.update({n: getattr(spec, n) for n in DEVICE_OPTIONAL if getattr(spec, n) is not None})
        raw["measurements"] = [
            {n: getattr(m, n) for n in MEASUREMENT_FIELDS}
            | {n: getattr(m, n) for n in MEASUREMENT_OPTIONAL if getattr(m, n)}
            for m in spec.measurements
        ]
    else:
        raw = {name: getattr(spec, name) for name in TASK_FIELDS}
        raw["benchmarks"] = list(spec.benchmarks)
    raw["sources"] = dict(spec.sources)
    return raw


# -- merging -----------------------------------------------------------------------------------
def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """Update ``base`` with ``update``; return the result and the (dotted) fields touched."""
    merged = dict(base)
    touched: set[str] = set()
    for name, value in update.items():
        old = base.get(name)
        if name == "image_tokens" and isinstance(value, Mapping) and isinstance(old, Mapping):
            if "rule" in value and value["rule"] != old.get("rule"):
                merged[name] = dict(value)  # a different rule: its parameters start afresh
                touched.add(name)
            else:
                merged[name] = {**old, **value}
                touched.update(f"{name}.{k}" for k in value)
        elif name in TABLES and isinstance(value, Mapping) and isinstance(old, Mapping):
            merged[name] = {**old, **value}
            if name != "sources":
                touched.update(f"{name}.{k}" for k in value)
        else:
            merged[name] = value
            if name != "sources":
                touched.add(name)
    return merged, touched


def _source_keys(raw: Mapping[str, Any]) -> set[str]:
    """The fields of ``raw`` that need a source (dotted for accuracy entries)."""
    keys = {k for k in raw if k not in ("sources", "measurements", "accuracy")}
    accuracy = raw.get("accuracy")
    if isinstance(accuracy, Mapping):
        keys.update(f"accuracy.{t}" for t in accuracy)
    return keys


def _sources(
    raw: Mapping[str, Any],
    touched: set[str],
    path: str,
    issues: list[Issue],
    require: bool,
) -> dict[str, str]:
    given = raw.get("sources", {})
    if not isinstance(given, Mapping):
        issues.append(Issue(f"{path}.sources", "must be a table of field -> source text"))
        return {}
    out: dict[str, str] = {}
    for name, text in given.items():
        if f.text(text, f"{path}.sources.{name}", issues) is not f.INVALID:
            out[name] = text
    needed = _source_keys(raw)
    for name in touched:
        # A user's change replaces the shipped source (``touched`` excludes fields the user
        # gave a source for).
        if name == "image_tokens":
            for stale in [k for k in out if k.startswith("image_tokens.")]:
                del out[stale]
        out[name] = USER_SOURCE
    known_prefixes = ("accuracy.", "image_tokens.")
    for name in out:
        if name not in needed and not name.startswith(known_prefixes):
            issues.append(Issue(f"{path}.sources.{name}", "source given for an unknown field"))
    for name in sorted(needed):
        has = name in out or (name == "image_tokens" and any(k.startswith(name) for k in out))
        if not has:
            if require:
                issues.append(Issue(f"{path}.sources.{name}", "required source missing"))
            else:
                out[name] = USER_SOURCE
    return out


def _check_fields(
    raw: Mapping[str, Any],
    required: Mapping[str, f.Checker],
    optional: Mapping[str, f.Checker],
    tables: frozenset[str],
    path: str,
    issues: list[Issue],
) -> dict[str, Any] | None:
    known = [*required, *optional, *sorted(tables)]
    out: dict[str, Any] = {}
    n_before = len(issues)
    for name in raw:
        if name not in required and name not in optional and name not in tables:
            issues.append(Issue(f"{path}.{name}", f"unknown field (known: {', '.join(known)})"))
    for name, check in required.items():
        if name not in raw:
            issues.append(Issue(f"{path}.{name}", "required field missing"))
        else:
            out[name] = check(raw[name], f"{path}.{name}", issues)
    for name, check in optional.items():
        if name in raw and raw[name] is not None:
            out[name] = check(raw[name], f"{path}.{name}", issues)
    return out if len(issues) == n_before else None


def _rule(raw: Any, path: str, issues: list[Issue]) -> ImageTokenRule | None:
    if raw is None:
        issues.append(Issue(path, "required field missing"))
        return None
    if not isinstance(raw, Mapping):
        issues.append(Issue(path, 'must be a table such as {rule = "patch", max_tokens = 1280}'))
        return None
    params = {k: v for k, v in raw.items() if k != "rule"}
    if "rule" not in raw:
        issues.append(Issue(f"{path}.rule", f"required field missing (one of {list(RULE_KINDS)})"))
        return None
    try:
        return ImageTokenRule(str(raw["rule"]), params)
    except CatalogError as err:
        issues.extend(Issue(f"{path}.{i.path}", i.message) for i in err.issues)
        return None


def _accuracy(
    raw: Any, tasks: tuple[str, ...], path: str, issues: list[Issue]
) -> dict[str, float] | None:
    if not isinstance(raw, Mapping):
        issues.append(Issue(path, "required table of task family -> probability missing"))
        return None
    n_before = len(issues)
    out: dict[str, float] = {}
    for task, value in raw.items():
        if task not in tasks:
            issues.append(Issue(f"{path}.{task}", f"unknown task (known: {', '.join(tasks)})"))
        else:
            out[task] = f.probability(value, f"{path}.{task}", issues)
    for task in tasks:
        if task not in raw:
            issues.append(Issue(f"{path}.{task}", "required field missing (one per task family)"))
    return out if len(issues) == n_before else None


def build_model(
    key: str, raw: Mapping[str, Any], touched: set[str], ctx: BuildContext
) -> ModelSpec | None:
    """The model ``key`` from plain data, or None with its problems in ``ctx.issues``."""
    path = f"{ctx.prefix}models.{key}"
    issues = ctx.issues
    n_before = len(issues)
    values = _check_fields(raw, MODEL_FIELDS, {}, TABLES, path, issues)
    rule = _rule(raw.get("image_tokens"), f"{path}.image_tokens", issues)
    accuracy = _accuracy(raw.get("accuracy"), ctx.tasks, f"{path}.accuracy", issues)
    sources = _sources(raw, touched, path, issues, ctx.require_sources)
    # each part that is None has added its issue; checked apart so the types say it
    if values is None or rule is None or accuracy is None or len(issues) != n_before:
        return None
    return ModelSpec(key=key, image_tokens=rule, accuracy=accuracy, sources=sources, **values)


def _measurements(raw: Any, path: str, issues: list[Issue]) -> tuple[Measurement, ...] | None:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        issues.append(Issue(path, "must be a list of tables"))
        return None
    out = []
    for idx, item in enumerate(raw):
        where = f"{path}[{idx}]"
        if not isinstance(item, Mapping):
            issues.append(Issue(where, "must be a table"))
            continue
        values = _check_fields(
            item, MEASUREMENT_FIELDS, MEASUREMENT_OPTIONAL, frozenset(), where, issues
        )
        if values is None:
            continue
        flagged = values.get("lower_bound", False) or values.get("outlier", False)
        if values.get("lower_bound") and values.get("outlier"):
            issues.append(Issue(f"{where}.outlier", "a point is a lower bound or an outlier"))
        elif flagged and not values.get("note"):
            issues.append(Issue(f"{where}.note", "required when lower_bound or outlier is set"))
        else:
            out.append(Measurement(**values))
    return tuple(out) if len(out) == len(raw) else None


def build_device(
    key: str, raw: Mapping[str, Any], touched: set[str], ctx: BuildContext
) -> DeviceSpec | None:
    """The device ``key`` from plain data, or None with its problems in ``ctx.issues``."""
    path = f"{ctx.prefix}devices.{key}"
    issues = ctx.issues
    n_before = len(issues)
    tables = frozenset({"measurements", "sources"})
    values = _check_fields(raw, DEVICE_FIELDS, DEVICE_OPTIONAL, tables, path, issues)
    measurements = _measurements(raw.get("measurements"), f"{path}.measurements", issues)
    sources = _sources(raw, touched, path, issues, ctx.require_sources)
    if values is not None and values["num_gpus"] == 1 and values["parallel_efficiency"] != 1.0:
        issues.append(Issue(f"{path}.parallel_efficiency", "must be 1.0 for a single GPU"))
    if values is None or measurements is None or len(issues) != n_before:
        return None
    return DeviceSpec(key=key, measurements=measurements, sources=sources, **values)


def build_task(
    key: str, raw: Mapping[str, Any], touched: set[str], ctx: BuildContext
) -> TaskSpec | None:
    """The task family ``key`` from plain data, or None with its problems in ``ctx.issues``."""
    path = f"{ctx.prefix}tasks.{key}"
    n_before = len(ctx.issues)
    values = _check_fields(raw, TASK_FIELDS, {}, frozenset({"sources"}), path, ctx.issues)
    sources = _sources(raw, touched, path, ctx.issues, ctx.require_sources)
    if values is None or len(ctx.issues) != n_before:
        return None
    return TaskSpec(key=key, sources=sources, **values)


class BuildContext:
    """What building one section needs: path prefix, issue list, task keys, strictness."""

    def __init__(
        self, prefix: str, tasks: tuple[str, ...] = (), require_sources: bool = False
    ) -> None:
        self.prefix = prefix
        self.tasks = tasks
        self.require_sources = require_sources
        self.issues: list[Issue] = []


Builder = Callable[[str, Mapping[str, Any], set[str], BuildContext], Any]
_BUILDERS: dict[str, Builder] = {
    "models": build_model,
    "devices": build_device,
    "tasks": build_task,
}


def _key_problem(key: Any) -> str | None:
    """Why ``key`` cannot name a catalog entry (nodes refer to it as an id), or None."""
    if not isinstance(key, str) or not key.strip():
        return "entry keys must be non-empty strings"
    try:
        check_id(key)
    except ValueError as err:
        return str(err)
    return None


def merge_section(
    section: str,
    base: Mapping[str, Any],
    updates: Mapping[str, Any] | None,
    ctx: BuildContext,
) -> dict[str, Any]:
    """Merge ``updates`` into the entries of one section; problems go to ``ctx.issues``."""
    out = dict(base)
    if updates is None:
        return out
    if not isinstance(updates, Mapping):
        ctx.issues.append(Issue(f"{ctx.prefix}{section}", "must be a table of entries"))
        return out
    build = _BUILDERS[section]
    for key, update in updates.items():
        problem = _key_problem(key)
        if problem is not None:
            # the key itself is not printed raw: it may hold a newline or a terminal escape
            ctx.issues.append(Issue(f"{ctx.prefix}{section}", f"entry key {key!r}: {problem}"))
            continue
        path = f"{ctx.prefix}{section}.{key}"
        if not isinstance(update, Mapping):
            ctx.issues.append(Issue(path, "must be a table of fields"))
            continue
        if key in base:
            raw, touched = _merge(to_raw(base[key]), update)
            user_sources = update.get("sources")
            if isinstance(user_sources, Mapping):
                touched -= set(user_sources)
        else:
            raw, touched = dict(update), set()
        spec = build(key, raw, touched, ctx)
        if spec is not None:
            out[key] = spec
    return out
