"""The package's version: one place, read by ``pyproject.toml`` and reported by every output."""

VERSION = "0.1.0"
