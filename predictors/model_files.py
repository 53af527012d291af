"""What every saved learned model shares: file paths, JSON-safe metadata, the safe readers.

A model is two files, ``<stem>.json`` (metadata) and ``<stem>.npz`` (plain arrays). The JSON
names the ``.npz`` and records its SHA-256, so changed arrays, or arrays of another model, are
refused on load. Each model format describes its JSON as a pydantic model (frozen, strict: no
``"1"`` for ``1`` nor ``true`` for ``1``, unknown fields refused, no NaN or infinity) built on
:class:`FileModel` and :class:`ArraysFile`; this module holds the parts they all share, and the
readers every model file goes through:

- :func:`read_model_json` refuses a metadata file above :data:`MAX_JSON_BYTES` before reading
  it, and one nested deeper than :data:`MAX_JSON_DEPTH` (the parser's own recursion limit
  included) after; :func:`read_header` then validates it against the format's model and names
  the file and the field of every problem (``FILE: field 'settings.max_iter': problem``);
- :func:`read_npz` checks, in this order and before inflating anything, the ``.npz``'s size on
  disk (:data:`MAX_NPZ_BYTES`), its SHA-256 against the JSON, and the archive's central
  directory: every member a flat ``<field>.npy`` of a field the model expects, stored or
  deflated (the two methods numpy writes), declaring no more uncompressed bytes than its
  :class:`ArraySpec` allows and no absurd compression ratio (:data:`MAX_COMPRESSION_RATIO`),
  and all of them together within :data:`MAX_NPZ_BYTES`. Then, member by member, it reads the
  ``.npy`` header alone (dtype and shape checked against the spec, data length against the
  directory) and only then the array, with ``numpy.load(allow_pickle=False)``.

:mod:`zipfile` never hands out more bytes of a member than the directory declares, so the
declared sizes bound what any member can inflate to. Nothing read is ever executed.
"""

from __future__ import annotations

import hashlib
import json
import math
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any, TypeVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "MAX_COMPRESSION_RATIO",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_NPZ_BYTES",
    "ArraySpec",
    "ArraysFile",
    "FileModel",
    "json_safe",
    "model_paths",
    "read_header",
    "read_model_json",
    "read_npz",
    "settings_problems",
    "sibling_path",
    "validated",
    "verify_npz",
    "write_model_json",
    "write_npz",
]

MAX_JSON_BYTES = 1 << 20
"""Largest model metadata file read (1 MiB): 350x the largest shipped one (``default.json``,
2,979 bytes) and 330x a trained torch model's (3,174 bytes, ``tests/predictors`` settings)."""

MAX_JSON_DEPTH = 32
"""Deepest nesting of objects and lists accepted in model metadata: the shipped files nest 3
levels deep; 32 is far from Python's recursion limit (1,000), which the parser also guards."""

MAX_NPZ_BYTES = 64 << 20
"""Hard cap on a model's arrays (64 MiB, on disk and uncompressed in total): 300x the largest
shipped model's (``default-latency.npz``, 223,512 bytes) and 450x a torch model at its default
settings (about 0.15 MB). Where a model's JSON says how large its arrays are, the bound is that
size (:class:`ArraySpec`); this cap applies on top and where it cannot say."""

MAX_COMPRESSION_RATIO = 200
"""Largest uncompressed/compressed size ratio of a member: models are saved uncompressed
(``numpy.savez``, ratio 1); ``numpy.savez_compressed`` reaches 39 at most on the shipped
arrays (``left`` of ``default.npz``), deflate's ceiling is about 1,032 (zeros)."""

NPY_HEADER_BYTES = 16_384
"""Allowance for a member's ``.npy`` header on top of its data: numpy refuses headers above
10,000 bytes (``max_header_size``) and writes 128 bytes for these arrays."""

_MAX_ITEMSIZE = 8
"""No field of a saved model is wider than float64/int64."""

_NUMPY_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
"""What ``numpy.savez`` / ``savez_compressed`` write; :mod:`zipfile` inflates bzip2 and lzma
members in one unbounded call, so those are refused."""


@dataclass(frozen=True)
class ArraySpec:
    """What one ``.npz`` member may hold, known from the model's JSON before it is read.

    Parameters
    ----------
    kinds
        Accepted numpy dtype kinds (``"f"``, ``"iu"``, ``"biu"``, ...).
    shape
        The expected shape, ``None`` for an axis of any length.
    max_elements
        Bound on the element count when an axis is free; ``None``: :data:`MAX_NPZ_BYTES` only.
    """

    kinds: str
    shape: tuple[int | None, ...]
    max_elements: int | None = None

    def element_bound(self) -> int | None:
        """The most elements the member may hold (``None``: no bound from the JSON)."""
        sizes = [s for s in self.shape if s is not None]
        if len(sizes) == len(self.shape):
            return math.prod(sizes)
        return self.max_elements

    def byte_bound(self) -> int:
        """The most uncompressed bytes the member may declare (header included)."""
        n = self.element_bound()
        if n is None:
            return MAX_NPZ_BYTES
        return min(MAX_NPZ_BYTES, NPY_HEADER_BYTES + n * _MAX_ITEMSIZE)

    def shape_text(self) -> str:
        """The shape for messages, ``any`` for a free axis."""
        parts = ["any" if s is None else str(s) for s in self.shape]
        return f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"


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
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_npz(npz_path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` uncompressed (``numpy.savez``), each C-contiguous."""
    # typed Any: numpy's stub would bind a str-keyed mapping to savez's allow_pickle flag
    members: dict[str, Any] = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    with open(npz_path, "wb") as fh:
        np.savez(fh, **members)


def write_model_json(
    json_path: Path, npz_path: Path, meta: Mapping[str, Any], schema: type[FileModel]
) -> None:
    """Write ``meta`` plus the ``.npz``'s name and SHA-256 (the ``.npz`` is written already),
    after checking that the record passes ``schema`` (what the loader will read back).

    Raises
    ------
    ValueError
        Naming the field, if the record would not load (nothing is written then).
    """
    record = json_safe(
        {
            **meta,
            "npz_file": npz_path.name,
            "npz_sha256": hashlib.sha256(npz_path.read_bytes()).hexdigest(),
        }
    )
    validated(schema, record, f"{json_path} (not written)")
    json_path.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n", encoding="utf-8")


# -- the JSON's fields -----------------------------------------------------------------------
class FileModel(BaseModel):
    """Base of every model file's JSON (and of the settings it records): frozen, strict (no
    coercion: ``"1"`` is not 1, ``true`` is not 1, ``1.5`` is not an integer), unknown fields
    refused, no NaN or infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


def _bare_file_name(name: str) -> str:
    if not name or Path(name).name != name:
        raise ValueError(f"must be a bare file name next to the JSON; got {name!r}")
    return name


class ArraysFile(FileModel):
    """The fields of every model whose numbers are in an ``.npz`` beside its JSON."""

    package_version: str
    metrics: dict[str, Any]
    npz_file: Annotated[str, AfterValidator(_bare_file_name)]
    npz_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


ModelT = TypeVar("ModelT", bound=FileModel)

_MAX_PROBLEMS = 10
"""Problems named in one refusal (a file of garbage would otherwise list every field)."""


def settings_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """``(field, problem)`` of every error pydantic found, the field as a dotted path; only
    those of ``format`` and ``version`` if the file is of another format or version (its other
    fields would say nothing useful)."""
    out = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"]) or "(top level)"
        if err["type"] == "missing":
            problem = "missing"
        elif err["type"] == "extra_forbidden":
            problem = "unexpected field"
        elif err["type"] == "value_error":  # the project's own checks say what they saw
            problem = err["msg"].removeprefix("Value error, ")
        else:
            shown = repr(err.get("input"))
            problem = f"{err['msg']}; got {shown if len(shown) <= 60 else shown[:57] + '...'}"
        out.append((field, problem))
    kind = [(f, p) for f, p in out if f in ("format", "version")]
    return (kind or out)[:_MAX_PROBLEMS]


def validated(schema: type[ModelT], data: Any, source: str | Path | None = None) -> ModelT:
    """``data`` checked by ``schema``: a model file's JSON (``source``, its path) or, without a
    source, an estimator's settings as ``fit`` checks them (numpy scalars and tuples taken as
    plain numbers and lists).

    Raises
    ------
    ValueError
        One line per problem: ``SOURCE: field 'settings.max_iter': problem`` (a file) or
        ``max_iter: problem`` (settings).
    """
    try:
        return schema.model_validate(data if source is not None else json_safe(dict(data)))
    except ValidationError as exc:
        problems = settings_problems(exc)
        lines = [f"{source}: field '{f}': {p}" if source else f"{f}: {p}" for f, p in problems]
        raise ValueError("\n".join(lines)) from None


def read_header(path: Path, schema: type[ModelT]) -> ModelT:
    """The JSON of a model file (:func:`read_model_json`) validated by ``schema``
    (:func:`validated`); ``FileNotFoundError`` if it is missing."""
    return validated(schema, read_model_json(path), path)


# -- the JSON side ---------------------------------------------------------------------------
def read_model_json(path: Path) -> dict[str, Any]:
    """The JSON object of a model metadata file, size and nesting bounded.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        Naming the file, if it is larger than :data:`MAX_JSON_BYTES`, not UTF-8 JSON, nested
        deeper than :data:`MAX_JSON_DEPTH` or not an object at the top level.
    """
    try:
        status = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such model file") from None
    if not stat.S_ISREG(status.st_mode):  # a FIFO or device would block or never end
        raise ValueError(f"{path}: not a regular file")
    size = status.st_size
    if size > MAX_JSON_BYTES:
        raise ValueError(f"{path}: {size} bytes, above the {MAX_JSON_BYTES}-byte model JSON cap")
    with path.open("rb") as fh:
        raw = fh.read(MAX_JSON_BYTES + 1)  # the file may have grown since stat
    if len(raw) > MAX_JSON_BYTES:
        raise ValueError(f"{path}: above the {MAX_JSON_BYTES}-byte model JSON cap")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to parse") from None
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    if _nesting_exceeds(meta, MAX_JSON_DEPTH):
        raise ValueError(f"{path}: JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return meta


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether objects and lists in ``value`` nest deeper than ``limit`` (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list):
            continue
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return False


# -- the arrays side -------------------------------------------------------------------------
def verify_npz(json_path: Path, npz_path: Path, recorded: str) -> None:
    """Refuse an ``.npz`` above :data:`MAX_NPZ_BYTES` on disk or whose SHA-256 is not the one
    its JSON recorded (hashed in chunks: nothing of the archive is parsed).

    Raises
    ------
    FileNotFoundError
        If the ``.npz`` is missing.
    ValueError
        Naming the ``.npz`` if it is too large; naming the JSON file and its field
        ``npz_sha256`` if the digests differ.
    """
    if not npz_path.is_file():
        raise FileNotFoundError(f"{npz_path}: no such model file")
    size = npz_path.stat().st_size
    if size > MAX_NPZ_BYTES:
        raise ValueError(f"{npz_path}: {size} bytes, above the {MAX_NPZ_BYTES}-byte model cap")
    with npz_path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    if digest != recorded:
        raise ValueError(
            f"{json_path}: field 'npz_sha256': {npz_path.name} has SHA-256 {digest}, not the "
            "recorded one (the arrays were changed or belong to another model)"
        )


def read_npz(
    json_path: Path, npz_path: Path, recorded: str, specs: Mapping[str, ArraySpec]
) -> dict[str, np.ndarray]:
    """The arrays of a model's ``.npz``: hash first, then the directory, then each member.

    Parameters
    ----------
    json_path, npz_path
        The model's metadata file (named in a hash error) and its archive.
    recorded
        The SHA-256 the JSON recorded.
    specs
        Every field the archive must hold and what it may hold (no other field is accepted).

    Raises
    ------
    FileNotFoundError
        If the ``.npz`` is missing.
    ValueError
        Naming the file and the field, if anything is refused (see the module docstring).
    """
    verify_npz(json_path, npz_path, recorded)
    try:
        archive = zipfile.ZipFile(npz_path)
    except Exception as exc:  # pickle, truncated zip, garbage: all refused the same way
        raise ValueError(f"{npz_path}: not an .npz archive of plain arrays ({exc})") from None
    with archive:
        members = _checked_directory(npz_path, archive.infolist(), specs)
        return {
            field: _read_member(npz_path, archive, members[field], field, spec)
            for field, spec in specs.items()
        }


def _checked_directory(
    path: Path, infos: list[zipfile.ZipInfo], specs: Mapping[str, ArraySpec]
) -> dict[str, zipfile.ZipInfo]:
    """The archive's entries by field, every one checked from the central directory alone."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        field = _member_field(path, info.filename)
        if field in members:
            raise ValueError(f"{path}: field '{field}': appears twice in the archive")
        members[field] = info
    for field in specs:
        if field not in members:
            raise ValueError(f"{path}: field '{field}': missing")
    for field in members:
        if field not in specs:
            raise ValueError(f"{path}: field '{field}': unexpected")
    for field, spec in specs.items():
        _check_entry(path, field, members[field], spec)
    total = sum(info.file_size for info in members.values())
    bound = min(MAX_NPZ_BYTES, sum(spec.byte_bound() for spec in specs.values()))
    if total > bound:
        raise ValueError(
            f"{path}: members declare {total} bytes uncompressed in all, above the {bound} "
            f"the model's JSON allows (hard cap {MAX_NPZ_BYTES})"
        )
    for field in specs:
        _check_ratio(path, field, members[field])
    return members


def _member_field(path: Path, name: str) -> str:
    """The field a member name ``<field>.npy`` holds; other names are refused."""
    if "/" in name or "\\" in name:
        raise ValueError(f"{path}: field '{name}': a nested path, not a flat .npy member")
    if not name.endswith(".npy") or len(name) == len(".npy"):
        raise ValueError(f"{path}: field '{name}': not an .npy member")
    return name[: -len(".npy")]


def _check_entry(path: Path, field: str, info: zipfile.ZipInfo, spec: ArraySpec) -> None:
    """Refuse a member from its directory entry: method, encryption, declared size."""

    def fail(problem: str) -> ValueError:
        return ValueError(f"{path}: field '{field}': {problem}")

    if info.compress_type not in _NUMPY_METHODS:
        raise fail(f"compression method {info.compress_type} (numpy writes stored or deflated)")
    if info.flag_bits & 0x1:
        raise fail("encrypted")
    bound = spec.byte_bound()
    if info.file_size > bound:
        raise fail(
            f"declares {info.file_size} bytes uncompressed, above the {bound} its shape "
            f"{spec.shape_text()} allows"
        )


def _check_ratio(path: Path, field: str, info: zipfile.ZipInfo) -> None:
    """Refuse a member that claims to inflate more than any real array compresses."""
    ratio = info.file_size / max(info.compress_size, 1)
    if ratio > MAX_COMPRESSION_RATIO:
        raise ValueError(
            f"{path}: field '{field}': inflates {ratio:.0f}-fold, above the "
            f"{MAX_COMPRESSION_RATIO}-fold any real array reaches"
        )


def _read_member(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, field: str, spec: ArraySpec
) -> np.ndarray:
    """One member: its ``.npy`` header checked against ``spec`` first, then its array."""
    try:
        with archive.open(info) as fh:
            shape, dtype, data_start = _npy_header(fh)
    except Exception as exc:  # a corrupt stream fails in zlib, zipfile or numpy alike
        raise ValueError(f"{path}: field '{field}': no readable .npy header ({exc})") from None
    _check_header(path, field, spec, shape, dtype, info.file_size - data_start)
    try:
        with archive.open(info) as fh:
            array = np.load(fh, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: field '{field}': unreadable ({exc})") from None
    if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
        raise ValueError(f"{path}: field '{field}': does not match its own .npy header")
    return array


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, offset of the data)`` from the start of an ``.npy`` stream."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f".npy format version {version} (numpy writes 1.0 or 2.0 for these)")
    return shape, dtype, fh.tell()


def _check_header(
    path: Path,
    field: str,
    spec: ArraySpec,
    shape: tuple[int, ...],
    dtype: np.dtype,
    data_bytes: int,
) -> None:
    """Refuse a member whose header promises another array than the spec, or other bytes."""

    def fail(problem: str) -> ValueError:
        return ValueError(f"{path}: field '{field}': {problem}")

    if dtype.hasobject:
        raise fail("holds Python objects (would need pickle), refused")
    if dtype.fields is not None or dtype.subdtype is not None:
        raise fail(f"structured dtype {dtype}, expected plain numbers")
    if dtype.kind not in spec.kinds or dtype.itemsize > _MAX_ITEMSIZE:
        raise fail(f"dtype {dtype}, expected kind {'/'.join(spec.kinds)} of at most 8 bytes")
    if len(shape) != len(spec.shape) or any(
        want is not None and want != got for want, got in zip(spec.shape, shape, strict=True)
    ):
        raise fail(f"has shape {shape}, expected {spec.shape_text()}")
    count = math.prod(shape)
    bound = spec.element_bound()
    if bound is not None and count > bound:
        raise fail(f"has {count} elements, above the {bound} the model's JSON allows")
    if count * dtype.itemsize != data_bytes:
        raise fail(
            f"its header promises {count * dtype.itemsize} bytes of data, the archive holds "
            f"{data_bytes}"
        )
