"""Safe model files: every format's hash is checked before its archive is opened, nothing is
inflated past what the model's JSON allows, and hostile JSON metadata is refused cleanly.

The valid starting points are the shipped models (copied to a temporary folder) and a
torch-format model written by :meth:`TorchQualityModel.save` from arrays made here: loading a
torch-format model needs no torch. The one model trained is the small latency model under load
of ``shared_fits`` (no such model is shipped).
"""

from __future__ import annotations

import hashlib
import io
import json
import resource
import shutil
import struct
import tracemalloc
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from shared_fits import load_latency_model

from qlmio_opt.domain.catalog import default_catalog
from qlmio_opt.faces.cli import main
from qlmio_opt.predictors import TRAINED_DIR, model_files
from qlmio_opt.predictors.learned import LearnedPredictor, load_quality_model
from qlmio_opt.predictors.learned_features import FeatureSpec
from qlmio_opt.predictors.learned_latency import LatencyFile, LearnedLatencyModel
from qlmio_opt.predictors.learned_load_latency import LoadLatencyModel
from qlmio_opt.predictors.learned_quality import LearnedQualityModel, SklearnQualityFile
from qlmio_opt.predictors.learned_torch import TorchQualityModel
from qlmio_opt.predictors.model_files import MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_NPZ_BYTES
from qlmio_opt.predictors.selection import SelectionCalibration, SelectionFile

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30
MB = 10**6

# -- an archive whose member inflates to 1 GiB, built without ever holding the 1 GiB ------------
_CHUNK = 1 << 20


def deflated_zeros(header: bytes, n_zeros: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``header`` and ``n_zeros`` zero bytes, and its CRC-32.

    Each 1 MiB of zeros is compressed once and ended by a full flush, which resets the
    compressor: the same block bytes then encode every further MiB, so the stream is the
    header, that block repeated, and the final (empty) block.
    """
    assert n_zeros % _CHUNK == 0
    zeros = bytes(_CHUNK)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(header) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    assert comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH) == block  # the reset holds
    crc = zlib.crc32(header)
    for _ in range(n_zeros // _CHUNK):
        crc = zlib.crc32(zeros, crc)
    return head + block * (n_zeros // _CHUNK) + comp.flush(), crc


def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    """The ``.npy`` header numpy writes for an array of ``shape`` and ``dtype``."""
    out = io.BytesIO()
    d = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(out, d)
    return out.getvalue()


def write_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> None:
    """A plain zip of ``(name, data, method, crc, uncompressed size)`` members, written field by
    field as :mod:`zipfile` lays them out (local headers, central directory, end record), so a
    member's data may be a stream prepared beforehand."""
    body, directory = bytearray(), bytearray()
    for name, data, method, crc, size in members:
        raw = name.encode()
        offset = len(body)
        body += struct.pack(
            "<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, method, 0, 33, crc, len(data), size,
            len(raw), 0,
        )  # fmt: skip
        body += raw + data
        directory += struct.pack(
            "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, method, 0, 33, crc, len(data),
            size, len(raw), 0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        directory += raw
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), len(body), 0
    )
    path.write_bytes(bytes(body + directory + end))


def stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return name, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data)


def gib_npy_member() -> tuple[bytes, int, int]:
    """``(deflate stream, crc, uncompressed size)`` of an ``.npy`` of 2**27 float64 zeros
    (1 GiB inflated, about 1 MB deflated)."""
    header = npy_header((GIB // 8,))
    data, crc = deflated_zeros(header, GIB)
    return data, crc, len(header) + GIB


@pytest.fixture(scope="module")
def gib_member() -> tuple[bytes, int, int]:
    return gib_npy_member()


# -- the three formats ----------------------------------------------------------------------------
def copy_shipped(stem: str, folder: Path) -> Path:
    for suffix in (".json", ".npz"):
        shutil.copy(TRAINED_DIR / f"{stem}{suffix}", folder / f"{stem}{suffix}")
    return folder / f"{stem}.json"


def torch_model_file(folder: Path) -> Path:
    """A torch-format model saved from arrays made here (valid for every check of the loader)."""
    model = TorchQualityModel(hidden_sizes=(16, 8), text_buckets=256, text_dim=4)
    settings = model._settings()
    spec = FeatureSpec.from_catalog(default_catalog(), text_buckets=0)
    rng = np.random.default_rng(0)
    arrays = {
        key: rng.normal(size=shape).astype(np.float32)
        for key, shape in model.npz_shapes(settings, len(spec.names())).items()
        if -1 not in shape
    }
    arrays["feature_scale"] = np.abs(arrays["feature_scale"]) + 0.5
    arrays |= {
        "temperature": np.ones(1),
        "calibration_x": np.array([0.0, 1.0]),
        "calibration_y": np.array([0.0, 1.0]),
    }
    model.settings_, model.feature_spec_, model.feature_names_ = settings, spec, spec.names()
    model.arrays_, model.metrics_, model.training_data_ = arrays, {}, {}
    model.torch_version_ = "none (arrays made by tests/predictors/test_model_files.py)"
    json_path, _ = model.save(folder / "torch-quality")
    return json_path


def load_latency_file(folder: Path) -> Path:
    """The shared small latency model under load, saved in ``folder``."""
    json_path, _ = load_latency_model().save(folder / "load-latency")
    return json_path


FORMATS: dict[str, tuple[Callable[[Path], Path], Callable[[Path], object], str]] = {
    # name: (make the model in a folder, load it, a float field to replace)
    "sklearn-quality": (
        lambda d: copy_shipped("default", d),
        LearnedQualityModel.load,
        "value",
    ),
    "latency": (
        lambda d: copy_shipped("default-latency", d),
        LearnedLatencyModel.load,
        "latency.value",
    ),
    "torch-quality": (torch_model_file, TorchQualityModel.load, "weight_0"),
    "load-latency": (load_latency_file, LoadLatencyModel.load, "rho.value"),
}


@pytest.fixture(params=list(FORMATS))
def fmt(request: pytest.FixtureRequest) -> str:
    return request.param


def _members(npz: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(npz) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _npz_of(json_path: Path) -> Path:
    return json_path.with_name(json.loads(json_path.read_text())["npz_file"])


def _rehash(json_path: Path) -> None:
    """Record the ``.npz``'s present SHA-256 in the JSON, as an attacker holding both would."""
    meta = json.loads(json_path.read_text())
    meta["npz_sha256"] = hashlib.sha256(_npz_of(json_path).read_bytes()).hexdigest()
    json_path.write_text(json.dumps(meta))


def _forbid(monkeypatch: pytest.MonkeyPatch, *targets: tuple[object, str]) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("read before the check that should have refused the file")

    for owner, name in targets:
        monkeypatch.setattr(owner, name, refuse)


# -- the valid files load through the one reader --------------------------------------------------
def test_every_format_loads_member_by_member_through_the_shared_reader(fmt, tmp_path, monkeypatch):
    make, load, _ = FORMATS[fmt]
    json_path = make(tmp_path)
    read: list[str] = []
    member = model_files._read_member

    def spy(path, archive, info, field, spec):
        read.append(field)
        return member(path, archive, info, field, spec)

    monkeypatch.setattr(model_files, "_read_member", spy)
    load(json_path)
    assert sorted(read) == sorted(name[: -len(".npy")] for name in _members(_npz_of(json_path)))


def test_a_compressed_copy_of_a_shipped_model_still_loads(tmp_path):
    json_path = copy_shipped("default", tmp_path)
    original = LearnedQualityModel.load(json_path)
    with np.load(_npz_of(json_path)) as archive:
        arrays = {k: archive[k] for k in archive.files}
    np.savez_compressed(_npz_of(json_path), **arrays)
    _rehash(json_path)
    loaded = LearnedQualityModel.load(json_path)
    np.testing.assert_array_equal(loaded.text_coef_, original.text_coef_)


# -- the hash comes first -------------------------------------------------------------------------
def test_a_tampered_npz_is_refused_before_the_archive_is_opened(fmt, tmp_path, monkeypatch):
    make, load, _ = FORMATS[fmt]
    json_path = make(tmp_path)
    npz = _npz_of(json_path)
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside some member's numbers: still a well-formed zip
    npz.write_bytes(bytes(data))
    _forbid(monkeypatch, (zipfile, "ZipFile"), (np, "load"))
    with pytest.raises(ValueError, match=rf"{json_path.name}: field 'npz_sha256'"):
        load(json_path)


def test_an_npz_above_the_hard_cap_is_refused_before_it_is_hashed(tmp_path, monkeypatch):
    json_path = copy_shipped("default", tmp_path)
    with _npz_of(json_path).open("r+b") as fh:
        fh.truncate(MAX_NPZ_BYTES + 1)  # sparse: no 64 MiB written
    _forbid(monkeypatch, (hashlib, "file_digest"), (zipfile, "ZipFile"))
    with pytest.raises(ValueError, match=rf"default\.npz: {MAX_NPZ_BYTES + 1} bytes, above"):
        LearnedQualityModel.load(json_path)


# -- nothing inflates past what the JSON allows ---------------------------------------------------
def plant_member(json_path: Path, field: str, member: tuple[str, bytes, int, int, int]) -> None:
    """Replace ``field`` of the model's ``.npz`` by ``member`` (others stored) and rehash."""
    npz = _npz_of(json_path)
    others = [stored(n, d) for n, d in _members(npz).items() if n != f"{field}.npy"]
    write_zip(npz, [*others, member])
    _rehash(json_path)


def test_the_zip_bomb_is_real(gib_member, tmp_path):
    data, crc, size = gib_member
    write_zip(tmp_path / "bomb.npz", [("value.npy", data, zipfile.ZIP_DEFLATED, crc, size)])
    assert (tmp_path / "bomb.npz").stat().st_size < 2 * MB
    with zipfile.ZipFile(tmp_path / "bomb.npz") as archive:
        (info,) = archive.infolist()
        assert info.file_size == size > GIB
        with archive.open(info) as fh:
            assert np.lib.format.read_magic(fh) == (1, 0)
            assert np.lib.format.read_array_header_1_0(fh)[0] == (GIB // 8,)
            assert fh.read(4 * _CHUNK) == bytes(4 * _CHUNK)  # it does inflate to zeros


def test_a_zip_bomb_is_refused_by_its_declared_size_without_inflating(fmt, gib_member, tmp_path):
    make, load, field = FORMATS[fmt]
    json_path = make(tmp_path)
    data, crc, size = gib_member
    plant_member(json_path, field, (f"{field}.npy", data, zipfile.ZIP_DEFLATED, crc, size))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"field '{field}': declares {size} bytes"):
            load(json_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert peak < 100 * MB and rss_growth < 100 * MB


def test_a_zip_bomb_is_refused_from_the_directory_alone(fmt, gib_member, tmp_path, monkeypatch):
    make, load, field = FORMATS[fmt]
    json_path = make(tmp_path)
    data, crc, size = gib_member
    plant_member(json_path, field, (f"{field}.npy", data, zipfile.ZIP_DEFLATED, crc, size))
    _forbid(monkeypatch, (zipfile.ZipFile, "open"), (zipfile.ZipFile, "read"), (np, "load"))
    with pytest.raises(ValueError, match=rf"field '{field}': declares {size} bytes"):
        load(json_path)


def test_members_declaring_more_than_the_hard_cap_in_all_are_refused(tmp_path, monkeypatch):
    # calibration_x/_y (isotonic knots) have no size the JSON gives: each passes alone
    json_path = copy_shipped("default", tmp_path)
    npz = _npz_of(json_path)
    n = 40 << 20
    free = {"calibration_x.npy", "calibration_y.npy"}
    header = npy_header((n // 8,))
    data, crc = deflated_zeros(header, n)
    big = [(name, data, zipfile.ZIP_DEFLATED, crc, len(header) + n) for name in sorted(free)]
    write_zip(npz, [*(stored(k, v) for k, v in _members(npz).items() if k not in free), *big])
    _rehash(json_path)
    _forbid(monkeypatch, (zipfile.ZipFile, "open"), (np, "load"))
    with pytest.raises(ValueError, match=r"default\.npz: members declare \d+ bytes .* in all"):
        LearnedQualityModel.load(json_path)


def test_an_absurd_compression_ratio_is_refused(tmp_path):
    json_path = copy_shipped("default", tmp_path)
    with np.load(_npz_of(json_path)) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["text_coef"] = np.zeros_like(arrays["text_coef"])  # valid, but inflates ~600-fold
    np.savez_compressed(_npz_of(json_path), **arrays)
    _rehash(json_path)
    with pytest.raises(ValueError, match=r"field 'text_coef': inflates \d+-fold"):
        LearnedQualityModel.load(json_path)


def test_a_header_promising_a_huge_array_is_refused_before_it_is_allocated(tmp_path, monkeypatch):
    json_path = copy_shipped("default", tmp_path)
    member = npy_header((10**10,)) + bytes(8)  # 80 GB promised, 8 bytes there
    plant_member(json_path, "value", stored("value.npy", member))
    _forbid(monkeypatch, (np, "load"))
    with pytest.raises(ValueError, match=r"field 'value': has 10000000000 elements, above"):
        LearnedQualityModel.load(json_path)


def _rewrite(npz: Path, edit: Callable[[zipfile.ZipFile, dict[str, bytes]], None]) -> None:
    members = _members(npz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name written on purpose
        with zipfile.ZipFile(npz, "w") as archive:
            edit(archive, members)


def _nested(archive, members):
    for name, data in members.items():
        archive.writestr(f"sub/{name}" if name == "value.npy" else name, data)


def _not_npy(archive, members):
    for name, data in members.items():
        archive.writestr("value.txt" if name == "value.npy" else name, data)


def _twice(archive, members):
    for name, data in members.items():
        archive.writestr(name, data)
    archive.writestr("value.npy", members["value.npy"])


def _bzip2(archive, members):
    for name, data in members.items():
        method = zipfile.ZIP_BZIP2 if name == "value.npy" else zipfile.ZIP_STORED
        archive.writestr(name, data, compress_type=method)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_nested, r"field 'sub/value.npy': a nested path"),
        (_not_npy, r"field 'value.txt': not an \.npy member"),
        (_twice, r"field 'value': appears twice"),
        (_bzip2, r"field 'value': compression method 12"),
    ],
)
def test_members_that_numpy_would_not_write_are_refused(edit, message, tmp_path, monkeypatch):
    json_path = copy_shipped("default", tmp_path)
    _rewrite(_npz_of(json_path), edit)
    _rehash(json_path)
    _forbid(monkeypatch, (zipfile.ZipFile, "open"), (np, "load"))
    with pytest.raises(ValueError, match=rf"default\.npz: {message}"):
        LearnedQualityModel.load(json_path)


# -- the JSON side --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stem", "schema"),
    [
        ("default", SklearnQualityFile),
        ("default-latency", LatencyFile),
        ("default-selection", SelectionFile),
    ],
)
def test_the_shipped_json_is_read_field_for_field(stem, schema):
    """Every field of the shipped files is declared and kept as written (no coercion)."""
    path = TRAINED_DIR / f"{stem}.json"
    assert model_files.read_header(path, schema).model_dump() == json.loads(path.read_text())


@pytest.mark.parametrize(
    ("make", "load"),
    [
        (lambda d: copy_shipped("default", d), LearnedLatencyModel.load),
        (lambda d: copy_shipped("default-latency", d), LearnedQualityModel.load),
        (lambda d: copy_shipped("default", d), TorchQualityModel.load),
        (torch_model_file, LearnedQualityModel.load),
        (lambda d: copy_shipped("default-latency", d), LoadLatencyModel.load),
        (load_latency_file, LearnedLatencyModel.load),
    ],
)
def test_a_file_of_another_format_is_refused_by_its_format(make, load, tmp_path):
    json_path = make(tmp_path)
    with pytest.raises(ValueError) as refused:
        load(json_path)
    lines = str(refused.value).splitlines()
    assert lines[0].startswith(f"{json_path}: field 'format': Input should be 'qlmio-opt/")
    assert all(" field 'format'" in line or " field 'version'" in line for line in lines)


def test_a_record_that_would_not_load_is_not_written(tmp_path):
    npz = tmp_path / "m.npz"
    npz.write_bytes(b"arrays")
    meta = json.loads((TRAINED_DIR / "default-latency.json").read_text())
    meta["settings"]["max_iter"] = 0
    with pytest.raises(ValueError, match=r"m\.json \(not written\): field 'settings.max_iter'"):
        model_files.write_model_json(tmp_path / "m.json", npz, meta, LatencyFile)
    assert not (tmp_path / "m.json").exists()


def _selection(folder: Path) -> Path:
    path = folder / "default-selection.json"
    shutil.copy(TRAINED_DIR / path.name, path)
    return path


JSON_LOADERS: dict[str, tuple[Callable[[Path], Path], Callable[[Path], object]]] = {
    "sklearn-quality": FORMATS["sklearn-quality"][:2],
    "latency": FORMATS["latency"][:2],
    "torch-quality": FORMATS["torch-quality"][:2],
    "load-latency": FORMATS["load-latency"][:2],
    "selection": (_selection, SelectionCalibration.load),
    "load_quality_model": (lambda d: copy_shipped("default", d), load_quality_model),
    "LearnedPredictor": (
        lambda d: copy_shipped("default", d),
        lambda p: LearnedPredictor(quality_model_path=p).fit(),
    ),
}


def _deep_json(depth: int) -> str:
    return '{"format": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("loader", list(JSON_LOADERS))
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_deep_json(100_000), "nested too deeply to parse"),  # past the parser's recursion
        (_deep_json(MAX_JSON_DEPTH + 5), f"nested more than {MAX_JSON_DEPTH} levels"),
        ("[1, 2]", "expected a JSON object"),
        ('{"format": ' + "9" * 5000 + "}", "not valid JSON"),  # past Python's digit limit
    ],
)
def test_hostile_json_is_refused_with_a_value_error(loader, text, message, tmp_path):
    make, load = JSON_LOADERS[loader]
    json_path = make(tmp_path)
    json_path.write_text(text)
    with pytest.raises(ValueError, match=rf"{json_path.name}: .*{message}"):
        load(json_path)


@pytest.mark.parametrize("loader", list(JSON_LOADERS))
def test_a_huge_json_is_refused_before_it_is_parsed(loader, tmp_path, monkeypatch):
    make, load = JSON_LOADERS[loader]
    json_path = make(tmp_path)
    json_path.write_text('{"pad": "' + "x" * MAX_JSON_BYTES + '"}')
    _forbid(monkeypatch, (json, "loads"))
    with pytest.raises(ValueError, match=rf"above the {MAX_JSON_BYTES}-byte model JSON cap"):
        load(json_path)


# -- the command line -----------------------------------------------------------------------------
@pytest.mark.parametrize("hostile", ["bomb", "deep-json"])
def test_solve_refuses_a_hostile_model_with_exit_2(hostile, gib_member, tmp_path, capsys):
    json_path = copy_shipped("default", tmp_path)
    if hostile == "bomb":
        data, crc, size = gib_member
        plant_member(json_path, "value", ("value.npy", data, zipfile.ZIP_DEFLATED, crc, size))
    else:
        json_path.write_text(_deep_json(100_000))
    window = str(ROOT / "instances" / "window_042.json")
    assert main(["solve", window, "--predictors", str(json_path)]) == 2
    err = capsys.readouterr().err
    assert "default." in err and "Traceback" not in err
