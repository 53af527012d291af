"""Errors that carry the place in the input they are about.

Every user-facing error names a file (when there is one), a JSON path such as
``requests[17].images[0].width`` and what is wrong, so the CLI can print it on one line
and exit with code 2 instead of a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One problem found in an input: where it is and what is wrong."""

    path: str
    message: str

    def render(self, source: str | None = None) -> str:
        parts = [p for p in (source, self.path) if p]
        return ": ".join([*parts, self.message])


class QlmioError(Exception):
    """Base class of every error the package raises on purpose."""


class InputError(QlmioError):
    """An input (instance, solution, catalog, trace) is invalid.

    Parameters
    ----------
    issues
        Every problem found, each with its JSON path.
    source
        The file (or other origin) the input came from, if any.
    """

    def __init__(self, issues: list[Issue] | Issue, source: str | None = None) -> None:
        self.issues = [issues] if isinstance(issues, Issue) else list(issues)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(issue.render(self.source) for issue in self.issues)

    def with_source(self, source: str) -> InputError:
        return InputError(self.issues, source)

    def with_prefix(self, prefix: str) -> InputError:
        """Re-root every path under ``prefix`` (e.g. ``catalog.models.my-model``)."""
        issues = [Issue(f"{prefix}.{i.path}" if i.path else prefix, i.message) for i in self.issues]
        return InputError(issues, self.source)


class CatalogError(InputError):
    """A catalog entry (built in, from TOML or inline in an instance) is invalid."""
