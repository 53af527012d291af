"""Read-only containers for data that frozen dataclasses and pydantic models hold.

A frozen dataclass or model stops its attributes from being rebound, not the dicts and arrays
they point to from being changed in place. These helpers close that gap:

- :class:`FrozenDict` is a ``dict`` that refuses every change. It stays a ``dict`` on purpose:
  pydantic serialises it as one, ``json.dumps`` writes it, ``pickle`` (used by the parallel
  workers) round-trips it, and ``isinstance(value, dict)`` checks keep working, none of which
  holds for :class:`types.MappingProxyType`.
- :func:`freeze` turns JSON-like data (dicts, lists) into nested :class:`FrozenDict` and tuples.
- :func:`read_only` returns a read-only view of a numpy array.
"""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar

import numpy as np

__all__ = ["FrozenDict", "freeze", "read_only"]

K = TypeVar("K")
V = TypeVar("V")


class FrozenDict(dict[K, V]):
    """A ``dict`` that cannot be changed after it is made; copy it with ``dict(...)`` to edit."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is read-only; copy it with dict(...) to change it")

    __setitem__ = _refuse
    __delitem__ = _refuse
    __ior__ = _refuse
    clear = _refuse
    pop = _refuse
    popitem = _refuse
    setdefault = _refuse
    update = _refuse

    def __reduce__(self) -> tuple[type[FrozenDict[K, V]], tuple[dict[K, V]]]:
        # unpickling a dict subclass sets its items one by one, which this class refuses
        return (type(self), (dict(self),))


def freeze(value: Any) -> Any:
    """JSON-like data with every dict made a :class:`FrozenDict` and every list a tuple."""
    if isinstance(value, dict):
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


def read_only(array: np.ndarray) -> np.ndarray:
    """A view of ``array`` that cannot be written through (the array itself is untouched)."""
    view = array.view()
    view.flags.writeable = False
    return view
