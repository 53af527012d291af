"""Errors that carry the place in the input they are about.

Every user-facing error names a file (when there is one), a JSON path such as
``requests[17].images[0].width`` and what is wrong, so the CLI can print it on one line
and exit with code 2 instead of a traceback.
"""

from __future__ import annotations

from collections import namedtuple


class Issue(namedtuple("Issue", ["path", "message"])):
    """One problem found in an input: where it is (``path``, a JSON path) and what is wrong
    (``message``); immutable. A plain namedtuple, so that importing errors (as the command
    line does before it parses anything) loads neither typing nor dataclasses."""

    __slots__ = ()
    path: str
    message: str

    def render(self, source: str | None = None) -> str:
        """One line: ``SOURCE: PATH: MESSAGE`` (the parts that are known)."""
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
        """Every issue on its own line."""
        return "\n".join(issue.render(self.source) for issue in self.issues)

    def with_source(self, source: str) -> InputError:
        """The same issues, said of ``source``."""
        return InputError(self.issues, source)


class CatalogError(InputError):
    """A catalog entry (built in, from TOML or inline in an instance) is invalid."""
