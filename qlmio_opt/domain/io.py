"""Reading and writing instances and solutions, with errors that say where and what.

Every error becomes an :class:`~qlmio_opt.domain.errors.InputError` whose lines read
``FILE: requests[17].images[0].width (request "r17"): must be > 0 (got -3)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.errors import InputError, Issue
from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.solution import Solution
from qlmio_opt.domain.validation import format_path, validate_model


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; unreadable or malformed files raise :class:`InputError`.

    Stricter than :func:`json.loads`: a key repeated within one object, nesting deeper than the
    parser's recursion limit and integers longer than Python's digit limit are all refused with a
    message naming the file (and the object's JSON path for a repeated key). ``NaN`` and
    ``Infinity`` parse, and the models refuse them naming their field.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(Issue("", "file not found"), source) from None
    except IsADirectoryError:
        raise InputError(Issue("", "is a directory, not a JSON file"), source) from None
    except UnicodeDecodeError as err:
        raise InputError(Issue("", f"not UTF-8 text ({err.reason})"), source) from None
    except OSError as err:
        raise InputError(Issue("", f"cannot be read ({err.strerror})"), source) from None
    return parse_json(text, source)


class _Repeated(dict):
    """An object in which a key appeared more than once (found and reported after parsing)."""

    repeated: str = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            marked = _Repeated(pairs)
            marked.repeated = key
            return marked
        out[key] = value
    return out


def parse_json(text: str, source: str | None = None) -> Any:
    """Parse JSON text with the rules of :func:`read_json`; ``source`` names it in errors."""
    if not text.strip():
        raise InputError(Issue("", "file is empty"), source)
    try:
        # NaN and Infinity parse (as json.loads does) so that validation names their field
        data = json.loads(text, object_pairs_hook=_pairs)
    except json.JSONDecodeError as err:
        truncated = err.pos >= len(text.rstrip()) - 1 or err.msg.startswith("Unterminated")
        hint = " (the file looks truncated)" if truncated else ""
        raise InputError(
            Issue("", f"not valid JSON: {err.msg} (line {err.lineno}, column {err.colno}){hint}"),
            source,
        ) from None
    except RecursionError:
        raise InputError(
            Issue("", "not valid input: arrays or objects nest too deep"), source
        ) from None
    except ValueError as err:  # an integer past Python's digit limit
        message = str(err).split(";")[0]
        raise InputError(Issue("", f"not valid input: {message}"), source) from None
    repeated = _find_repeated(data)
    if repeated is not None:
        where, key = repeated
        raise InputError(
            Issue(
                where, f'key "{key}" appears more than once in this object (keys must be unique)'
            ),
            source,
        )
    return data


def _find_repeated(data: Any) -> tuple[str, str] | None:
    """The JSON path of the first object with a repeated key, and the key; None if none.

    Iterative, so a document nested as deep as the parser allows cannot exhaust the stack.
    """
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _Repeated):
            return format_path(path, data) or "(top level)", node.repeated
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        else:
            continue
        stack.extend((value, (*path, key)) for key, value in reversed(items))
    return None


def read_instance(path: str | Path, *, catalog: Catalog | None = None) -> Instance:
    """Read and validate an instance file.

    Parameters
    ----------
    path
        A ``qlmio-opt/instance`` JSON file.
    catalog
        The catalog to resolve models and devices against (default: the shipped one).
    """
    return Instance.from_dict(read_json(path), catalog=catalog, source=str(path))


def write_instance(instance: Instance, path: str | Path) -> None:
    _write_json(instance.to_dict(), path)


def read_solution(path: str | Path) -> Solution:
    """Read and validate a solution file (``qlmio-opt/solution``)."""
    return validate_model(Solution, read_json(path), source=str(path))


def write_solution(solution: Solution, path: str | Path) -> None:
    _write_json(solution.to_dict(), path)


def _write_json(data: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
