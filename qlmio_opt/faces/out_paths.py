"""Where commands write their results, checked before any work starts.

A bad ``--out`` (a file where a folder is needed, a read-only folder, a path through a file) is
refused with exit 2 before a solver runs, instead of failing after minutes of work; so are two
inputs that would write the same output file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from qlmio_opt.domain.errors import InputError, Issue

SOLUTION_SUFFIX = ".solution.json"


def _refuse(option: str, path: Path, problem: str) -> InputError:
    return InputError(Issue("command line", f"{option} {path}: {problem}"))


def _can_write(path: Path) -> bool:
    """Whether this process may create files in the folder ``path`` (or replace the file)."""
    mode = os.W_OK | os.X_OK if path.is_dir() else os.W_OK
    return os.access(path, mode)


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists."""
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _check_creatable_under(option: str, path: Path) -> None:
    """Every missing part of ``path`` can be created: its nearest existing ancestor is a
    writable folder."""
    base = _nearest_existing(path)
    if not base.is_dir():
        raise _refuse(option, path, f"{base} is a file, so no folder can be made under it")
    if not _can_write(base):
        raise _refuse(option, path, f"the folder {base} is not writable")


def writable_dir(path: Path, option: str = "--out") -> Path:
    """Refuse ``path`` unless it is, or can be made as, a writable folder."""
    if path.exists() and not path.is_dir():
        raise _refuse(option, path, "is a file; give a folder")
    if path.is_dir() and not _can_write(path):
        raise _refuse(option, path, "the folder is not writable")
    _check_creatable_under(option, path)
    return path


def writable_file(path: Path, option: str = "--out") -> Path:
    """Refuse ``path`` unless a file can be written there (replacing a file is allowed)."""
    if path.is_dir():
        raise _refuse(option, path, "is a folder; give a file name")
    if path.exists() and not _can_write(path):
        raise _refuse(option, path, "the file is not writable")
    _check_creatable_under(option, path.parent)
    return path


def names_a_folder(out: str, num_inputs: int) -> bool:
    """Whether ``--out`` means a folder: several inputs, an existing folder, or a trailing
    slash."""
    return num_inputs > 1 or Path(out).is_dir() or out.endswith(("/", os.sep))


def solution_targets(files: Sequence[Path], out: str | Path | None) -> dict[Path, Path] | None:
    """The solution file each input is written to with ``--out out`` (None without ``--out``).

    One input and a file name: that file. Otherwise ``out`` is a folder and each input ``X.json``
    writes ``X.solution.json`` there; two inputs that would write the same file are refused.
    """
    if out is None:
        return None
    if not names_a_folder(str(out), len(files)):
        return {Path(files[0]): writable_file(Path(out))}
    out = writable_dir(Path(out))
    targets: dict[Path, Path] = {}
    first: dict[Path, Path] = {}
    for file in map(Path, files):
        target = out / f"{file.stem}{SOLUTION_SUFFIX}"
        if target in first and first[target] != file:
            raise _refuse(
                "--out",
                out,
                f"{first[target]} and {file} would both write {target.name}; solve them into "
                "different folders",
            )
        first.setdefault(target, file)
        targets[file] = target
    return targets
