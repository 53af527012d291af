"""The service's state file: the Scheduler's carried state, written atomically after every call
that changes it and read back at start-up."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from qlmio_opt.app.scheduler import Scheduler
from qlmio_opt.domain.errors import InputError, Issue
from qlmio_opt.domain.io import read_json

STATE_FORMAT = "qlmio-opt/service-state"
STATE_VERSION = 1


def site_digest(scheduler: Scheduler) -> str:
    """A fingerprint of the scheduler's site: a state file is restored only onto its own site."""
    text = json.dumps(scheduler.site.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write_state(scheduler: Scheduler, path: Path, windowing: dict[str, Any] | None = None) -> None:
    """Write the scheduler's state (and the service's ``windowing`` state, when given) to
    ``path`` through a temporary file in the same folder, flushed to disk and renamed over it:
    a crash leaves the old file or the new one, whole."""
    data: dict[str, Any] = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "site": site_digest(scheduler),
        "scheduler": scheduler.state_dict(),
    }
    if windowing is not None:
        data["windowing"] = windowing
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)


def restore_state(scheduler: Scheduler, path: Path) -> dict[str, Any] | None:
    """Load ``path`` into ``scheduler`` when the file exists; returns its windowing state
    (empty when it has none), or None when there is no file.

    Raises
    ------
    InputError
        Naming the file, when it is not a state file of this site.
    """
    if not path.exists():
        return None
    data: Any = read_json(path)
    source = str(path)
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise InputError(Issue("format", f'must be "{STATE_FORMAT}"'), source)
    if data.get("version") != STATE_VERSION:
        raise InputError(Issue("version", f"this qlmio-opt reads version {STATE_VERSION}"), source)
    if data.get("site") != site_digest(scheduler):
        raise InputError(
            Issue("site", "the state was saved by a service of another site (or window_s)"), source
        )
    windowing = data.get("windowing") or {}  # none in a file of a service before windowing
    if not isinstance(windowing, dict):
        raise InputError(Issue("windowing", "must be an object"), source)
    try:
        scheduler.load_state(data.get("scheduler") or {})
    except InputError as error:
        raise error.with_source(source) from None
    return windowing
