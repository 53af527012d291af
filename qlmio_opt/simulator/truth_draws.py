"""Order-independent random draws keyed by (world seed, request id, tag).

Every hidden property of a request (its difficulty, its output length, whether a given model
completes it) is drawn from a hash of the world's seed, the request's id and what is drawn, so a
request's truth does not depend on which other requests exist or in which order they are seen:
the same request in a replay, in the benchmark dataset and in the oracle has the same truth.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from scipy.special import ndtri

_SCALE = 2.0**-64


def uniforms(seed: int, ids: Sequence[str], tag: str) -> np.ndarray:
    """One uniform in (0, 1) per id, a pure function of ``(seed, id, tag)``."""
    out = np.empty(len(ids))
    prefix = f"{int(seed)}\x1f{tag}\x1f".encode()
    for i, ident in enumerate(ids):
        digest = hashlib.blake2b(prefix + ident.encode(), digest_size=8).digest()
        out[i] = (int.from_bytes(digest, "little") + 0.5) * _SCALE
    return out


def normals(seed: int, ids: Sequence[str], tag: str) -> np.ndarray:
    """One standard normal per id, a pure function of ``(seed, id, tag)``."""
    return ndtri(uniforms(seed, ids, tag))
