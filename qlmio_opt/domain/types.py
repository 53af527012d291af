"""Annotated field types shared by the instance and solution models.

Numbers are strict (no strings coerced to numbers, no booleans as numbers) and finite, and each has
a plausibility bound so an absurd value (a 10^9-pixel image, a 10^12 Mbps link) is caught at
load time instead of producing a silently wrong answer. Where a tiny value would make the model's
arithmetic meaningless (a divisor near zero), the lower bound says so too.

Identifiers hold no control characters (Unicode category Cc: they break the one-line error
messages and tables that quote them, and a terminal escape in an id would be sent to the user's
terminal) and no leading or trailing whitespace (``"r0 "`` and ``"r0"`` would look the same in
every message while being different keys).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field, Strict

# Whitespace as ``str.isspace`` sees it, less the control characters (refused on their own):
# space, no-break space, ogham space, en quad .. hair space, line and paragraph separators,
# narrow no-break, medium mathematical and ideographic spaces.
_SPACES = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CONTROLS = r"\x00-\x1f\x7f-\x9f"  # Unicode category Cc
# ``(?!\n)`` after ``$``: Python's ``$`` (used by Python JSON Schema validators) also matches
# before a final newline; ECMA-262's does not, and the lookahead is a no-op there.
ID_PATTERN = rf"^[^{_CONTROLS}{_SPACES}](?:[^{_CONTROLS}]*[^{_CONTROLS}{_SPACES}])?$(?!\n)"
"""The same rule as :func:`check_id`, for the published JSON Schema."""


def check_id(value: str) -> str:
    """Refuse control characters and leading or trailing whitespace in an identifier."""
    for pos, char in enumerate(value):
        if unicodedata.category(char) == "Cc":
            raise ValueError(
                f"must not contain control characters (found {char!r} at position {pos}); "
                "ids are printed in messages and tables"
            )
    if not value.strip():
        raise ValueError("must not be blank (only whitespace)")
    if value != value.strip():
        raise ValueError(f"must not start or end with whitespace (got {value!r})")
    return value


Str = Annotated[str, Strict()]
Id = Annotated[
    str,
    Strict(),
    Field(min_length=1, max_length=200, json_schema_extra={"pattern": ID_PATTERN}),
    AfterValidator(check_id),
]
Text = Annotated[str, Strict(), Field(max_length=100_000)]

PositiveSeconds = Annotated[float, Strict(), Field(gt=0, le=86_400)]
NonNegSeconds = Annotated[float, Strict(), Field(ge=0, le=86_400)]
# The latency worth one unit of quality in the weighted objective. Below 1 microsecond it is
# finer than any latency the model resolves (RTTs are given in ms, a decode step takes ms); the
# bound also keeps the cost of a second of latency at most latency_weight / 1e-6 = 1e12, where
# 1e-300 or 5e-324 turned every cost into inf or NaN.
LatencyScaleSeconds = Annotated[float, Strict(), Field(ge=1e-6, le=86_400)]
Probability = Annotated[float, Strict(), Field(ge=0, le=1)]
Weight = Annotated[float, Strict(), Field(ge=0, le=1e6)]

Pixels = Annotated[int, Strict(), Field(ge=1, le=100_000)]
Bytes = Annotated[int, Strict(), Field(ge=1, le=2_000_000_000)]
Tokens = Annotated[int, Strict(), Field(ge=0, le=10_000_000)]
OutputTokens = Annotated[int, Strict(), Field(ge=1, le=1_000_000)]
Concurrency = Annotated[int, Strict(), Field(ge=1, le=1_000_000)]
BatchedTokens = Annotated[int, Strict(), Field(ge=16, le=10_000_000)]
Load = Annotated[float, Strict(), Field(ge=0, le=1_000)]  # work-seconds per second

MemoryGB = Annotated[float, Strict(), Field(gt=0, le=100_000)]
# 1 kbps: the order of the slowest data links in use (LoRa runs at 0.3-50 kbps); a 2 GB image
# then takes 1.6e7 s, still finite, where 1e-300 Mbps gave 1e301 s and, through the objective's
# weights, infinite costs.
BandwidthMbps = Annotated[float, Strict(), Field(ge=1e-3, le=10_000_000)]
RttMs = Annotated[float, Strict(), Field(ge=0, le=100_000)]
DemandGB = Annotated[float, Strict(), Field(ge=0, le=100_000)]
