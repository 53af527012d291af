"""Build ``qlmio_opt/data/m4a1.json.gz``: the fields of the M4A1 log that the predictors need.

Reads the shared copy of M4A1 (``../shared/data/logs/m4a1/M4A1.json`` relative to the
repository root by default; from GitHub liangqiyuan/TMO, ``data/M4A1.json`` at commit
3d614b42, MIT) and writes one record per interaction (352 in all)::

    python scripts/build_m4a1_data.py [M4A1_JSON] [--out qlmio_opt/data/m4a1.json.gz]

Each record has ``episode`` (index of the episode in the source list, equal to its ``id``),
``turn`` (0-based position of the interaction in its episode), ``question``, ``task_cat``,
``action`` (0 local, 1 cloud), ``n_images`` (number of views uploaded: 0 when
``image_index`` is null, else the length of the list), ``score``, ``interaction_time``
(seconds) and ``usage_cost`` (dollars). Values are copied unchanged (floats round-trip
exactly through JSON); the answers, image paths and association scores are dropped.

The output is deterministic: compact JSON with sorted keys, gzip with ``mtime=0`` and no
file name in the header, so rebuilding from the same input gives a byte-identical file.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "logs" / "m4a1" / "M4A1.json"
DEFAULT_OUT = REPO_ROOT / "qlmio_opt" / "data" / "m4a1.json.gz"


def derive_records(episodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per interaction of the M4A1 episode list (source order).

    Parameters
    ----------
    episodes
        The parsed ``M4A1.json`` (a list of episodes with ``interactions``).

    Returns
    -------
    list of dict
        Records with the keys in :data:`qlmio_opt.app.m4a1.COLUMNS`.
    """
    records: list[dict[str, Any]] = []
    for episode, ep in enumerate(episodes):
        for turn, it in enumerate(ep["interactions"]):
            image_index = it["image_index"]
            records.append(
                {
                    "episode": episode,
                    "turn": turn,
                    "question": it["question"],
                    "task_cat": it["task_cat"],
                    "action": int(it["action"]),
                    "n_images": 0 if image_index is None else len(image_index),
                    "score": float(it["score"]),
                    "interaction_time": float(it["interaction_time"]),
                    "usage_cost": float(it["usage_cost"]),
                }
            )
    return records


def build_bytes(source: Path) -> bytes:
    """The gzip-compressed JSON written to ``m4a1.json.gz`` (deterministic).

    Parameters
    ----------
    source
        Path to ``M4A1.json``.
    """
    episodes = json.loads(Path(source).read_text(encoding="utf-8"))
    text = json.dumps(derive_records(episodes), sort_keys=True, separators=(",", ":"))
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode("utf-8"))
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    data = build_bytes(args.source)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data):,} bytes)")


if __name__ == "__main__":
    main()
