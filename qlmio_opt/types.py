"""Annotated field types shared by the instance and solution models.

Numbers are strict (no strings coerced to numbers, no booleans as numbers) and finite, and each has
a plausibility bound so an absurd value (a 10^9-pixel image, a 10^12 Mbps link) is caught at
load time instead of producing a silently wrong answer.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict

Str = Annotated[str, Strict()]
Id = Annotated[str, Strict(), Field(min_length=1, max_length=200)]
Text = Annotated[str, Strict(), Field(max_length=100_000)]

PositiveSeconds = Annotated[float, Strict(), Field(gt=0, le=86_400)]
NonNegSeconds = Annotated[float, Strict(), Field(ge=0, le=86_400)]
Probability = Annotated[float, Strict(), Field(ge=0, le=1)]
Weight = Annotated[float, Strict(), Field(ge=0, le=1e6)]

Pixels = Annotated[int, Strict(), Field(ge=1, le=100_000)]
Bytes = Annotated[int, Strict(), Field(ge=1, le=2_000_000_000)]
Tokens = Annotated[int, Strict(), Field(ge=0, le=10_000_000)]
OutputTokens = Annotated[int, Strict(), Field(ge=1, le=1_000_000)]
Concurrency = Annotated[int, Strict(), Field(ge=1, le=1_000_000)]
ActiveRequests = Annotated[int, Strict(), Field(ge=0, le=1_000_000)]

MemoryGB = Annotated[float, Strict(), Field(gt=0, le=100_000)]
BandwidthMbps = Annotated[float, Strict(), Field(gt=0, le=10_000_000)]
RttMs = Annotated[float, Strict(), Field(ge=0, le=100_000)]
DemandGB = Annotated[float, Strict(), Field(ge=0, le=100_000)]
