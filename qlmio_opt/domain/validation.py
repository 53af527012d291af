"""Validating plain data (parsed JSON) into the package's models, with errors that say where.

Every pydantic error becomes an :class:`~qlmio_opt.domain.errors.Issue` whose path reads
``requests[17] (request "r17").images[0].width`` and whose message says what is wrong, in words
a person can act on (``must be >= 1; got -3``).
"""

from __future__ import annotations

import difflib
import json
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from qlmio_opt.domain.errors import InputError, Issue

M = TypeVar("M", bound=BaseModel)
MAX_ISSUES = 25
_LABELLED = {"requests": "request", "nodes": "node", "links": "link"}


def validate_model(
    cls: type[M], data: Any, *, source: str | None = None, context: dict[str, Any] | None = None
) -> M:
    """``cls.model_validate(data)`` with pydantic's errors turned into located issues."""
    _check_format_header(cls, data, source)
    try:
        return cls.model_validate(data, context=context)
    except ValidationError as err:
        issues = [_issue_from_pydantic(e, data, cls) for e in err.errors()]
        raise InputError(_dedupe(issues), source) from None
    except InputError as err:
        raise InputError(_dedupe(err.issues), source) from None


def _check_format_header(cls: type[BaseModel], data: Any, source: str | None) -> None:
    """Catch a wrong file kind or version first: every other message would be noise."""
    expected = cls.model_fields.get("format")
    if expected is None:
        return
    if not isinstance(data, dict):
        raise InputError(Issue("", f"must be a JSON object (got {_type_name(data)})"), source)
    want = expected.default
    got = data.get("format")
    if got != want:
        what = "missing" if got is None else f'"{got}"'
        raise InputError(Issue("format", f'must be "{want}" (got {what})'), source)
    version = data.get("version")
    supported = cls.model_fields["version"].default
    if version != supported:
        raise InputError(
            Issue(
                "version",
                f"unsupported version {json.dumps(version)}; this qlmio-opt reads version "
                f"{supported}",
            ),
            source,
        )


def _dedupe(issues: list[Issue]) -> list[Issue]:
    out: list[Issue] = []
    for issue in issues:
        if issue not in out:
            out.append(issue)
    if len(out) > MAX_ISSUES:
        rest = len(out) - MAX_ISSUES
        out = [*out[:MAX_ISSUES], Issue("", f"... and {rest} more problems")]
    return out


def format_path(loc: tuple, data: Any) -> str:
    """A pydantic location as a JSON path naming the request, node or link.

    ``('requests', 17, 'images', 0, 'width')`` -> ``requests[17] (request "r17").images[0].width``.
    """
    parts: list[str] = []
    node = data
    parent_key: Any = None
    for key in loc:
        if isinstance(key, int):
            label = _LABELLED.get(parent_key)
            ident = None
            if isinstance(node, list) and 0 <= key < len(node):
                node = node[key]
                if label and isinstance(node, dict) and isinstance(node.get("id"), str):
                    # an unprintable id (control characters) would break the one-line message;
                    # the id's own error shows it escaped
                    ident = node["id"] if node["id"].isprintable() else None
            else:
                node = None
            parts[-1] += f"[{key}]" + (f' ({label} "{ident}")' if ident else "")
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
        parent_key = key
    return ".".join(parts)


def _issue_from_pydantic(error: ErrorDetails, data: Any, cls: type[BaseModel]) -> Issue:
    loc = tuple(k for k in error["loc"] if not _is_union_tag(k))
    return Issue(format_path(loc, data), _message(error, loc, cls))


def _is_union_tag(key: Any) -> bool:
    # pydantic adds the member type of a union to the location (e.g. 'float', 'literal['auto']')
    return isinstance(key, str) and (
        key in {"float", "int", "str", "none", "function-after", "tuple"}
        or key.startswith(("literal[", "constrained-", "nullable[", "list[", "tuple["))
    )


def _show(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return f"{value:g}"
    text = json.dumps(value) if isinstance(value, str | bool | int | type(None)) else None
    if text is None:
        text = _type_name(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _message(error: ErrorDetails, loc: tuple, cls: type[BaseModel]) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    got = error.get("input")
    bounds = {
        "greater_than": ("must be > {gt}", "gt"),
        "greater_than_equal": ("must be >= {ge}", "ge"),
        "less_than": ("must be < {lt}", "lt"),
        "less_than_equal": ("must be <= {le}", "le"),
    }
    if kind in bounds:
        template, key = bounds[kind]
        message = template.format(**{key: _show(ctx.get(key))})
        if kind.startswith("less"):
            message += " (an implausibly large value)"
        return f"{message}; got {_show(got)}"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return _unknown_field_message(loc, cls)
    if kind == "finite_number":
        return f"must be a finite number (got {_show(got)})"
    if kind in {"int_type", "int_from_float", "int_parsing"}:
        return f"must be an integer (got {_show(got)})"
    if kind in {"float_type", "float_parsing"}:
        return f"must be a number (got {_show(got)})"
    if kind == "string_type":
        return f"must be a string (got {_show(got)})"
    if kind in {"string_too_short", "too_short"}:
        return "must not be empty"
    if kind in {"string_too_long", "too_long"}:
        return f"is too long (at most {ctx.get('max_length')})"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')} (got {_show(got)})"
    if kind in {"tuple_type", "list_type"}:
        return f"must be a list (got {_show(got)})"
    if kind in {"model_type", "dict_type", "model_attributes_type"}:
        return f"must be an object (got {_show(got)})"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return f"{error['msg']} (got {_show(got)})"


def _unknown_field_message(loc: tuple, cls: type[BaseModel]) -> str:
    name = str(loc[-1]) if loc else "?"
    allowed = _allowed_fields(cls, loc[:-1])
    if not allowed:
        return "unknown field"
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f'; did you mean "{close[0]}"?' if close else f"; allowed: {', '.join(sorted(allowed))}"
    return f"unknown field{hint}"


def _allowed_fields(cls: type[BaseModel], loc: tuple) -> list[str]:
    """Walk the model's annotations along ``loc`` to list the fields allowed there."""
    import typing

    current: Any = cls
    for key in loc:
        if isinstance(key, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(key) or next(
            (f for f in current.model_fields.values() if f.alias == key), None
        )
        if field is None:
            return []
        current = _model_in(field.annotation, typing)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _model_in(annotation: Any, typing: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg, typing)
        if found is not None:
            return found
    return None
