"""Build the small derived data files shipped in ``qlmio_opt/data/``.

Reads the shared raw data (``../shared/data`` relative to the repository root by default)
and writes compact copies that :mod:`qlmio_opt.domain.traces` reads at run time::

    python scripts/build_package_data.py [SHARED_DATA_DIR] [--out qlmio_opt/data]

Outputs (all deterministic; see ``qlmio_opt/data/README.md``):

- ``textvqa_prompts.csv.gz``   question_id, prompt, question, task (keyword heuristic below)
- ``azure_conv.csv.gz``        arrival_s, context_tokens, generated_tokens
- ``azure_code.csv.gz``        arrival_s, context_tokens, generated_tokens
- ``mooncake_conversation.csv.gz``  arrival_s, input_length, output_length
- ``servegen_mm_image.npz``    per-client rates and per-client, per-window PDFs
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import io
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "data"
DEFAULT_OUT = REPO_ROOT / "qlmio_opt" / "data"

TASKS = ("ocr", "document", "chart", "general-vqa", "reasoning", "captioning")

# ---------------------------------------------------------------------------------------------
# Task heuristic for TextVQA questions. Rules are tried in this order; the first match wins.
# Every pattern is matched case-insensitively against the question (the text before the first
# newline of the prompt) with word boundaries. The OCR tokens are used once: a question that
# matches no rule and whose image has no OCR tokens at all is general-vqa (nothing to read),
# otherwise it is ocr.
# ---------------------------------------------------------------------------------------------
TASK_RULES: list[tuple[str, str]] = [
    (
        "captioning",
        r"\bdescribe (this|the) (image|picture|photo|scene)\b|\bcaption (this|the) (image|picture"
        r"|photo)\b|\bwhat is (shown|happening|going on) in (this|the) (image|picture|photo)\b"
        r"|\bwhat does (this|the) (image|picture|photo) show\b|\bwhat (this|the) (image|picture"
        r"|photo) shows\b",
    ),
    ("chart", r"\bcharts?\b|\bgraphs?\b|\bpercent(age)?s?\b|%|\baxis\b|\bdiagrams?\b|\bplots?\b"),
    (
        "reasoning",
        r"\bhow (many|much|old|long|far|tall|big)\b"
        r"|\b(what|which) (time|year|number|numbers|date|day|month)\b"
        r"|\bprices?\b|\bcosts?\b|\btotal\b|\bsum\b|\bwhen\b|\bweigh",
    ),
    # Visual attributes first, so "what color is the title" is not a document question.
    ("general-vqa", r"\bcolou?rs?\b|\bwhat animals?\b|\bwhat sports?\b|\bdoing\b"),
    (
        "document",
        r"\bpages?\b|\bbooks?\b|\btitle[sd]?\b|\bauthors?\b|\bchapters?\b|\bletters?\b"
        r"|\bmenus?\b|\bpaper\b|\bmagazines?\b|\bnewspapers?\b|\barticles?\b|\bheadlines?\b"
        r"|\bheading\b|\bwr(ote|itten by)\b|\bedit(ed|or)\b|\bpublish(ed|er)\b|\bdocuments?\b"
        r"|\bparagraph\b|\bnovel\b",
    ),
    # Yes/no questions ("is this ...", "are there ...") and who/where questions.
    (
        "general-vqa",
        r"^(is|are|was|were|does|do|did|can|could|will|has|have|should)\b|\bwho (is|are)\b"
        r"|\bwhere\b",
    ),
]
_COMPILED_RULES = [(task, re.compile(pattern, re.IGNORECASE)) for task, pattern in TASK_RULES]


def classify_question(question: str, ocr_tokens: str) -> str:
    """Task family of one TextVQA question (see ``TASK_RULES``)."""
    q = question.strip()
    for task, pattern in _COMPILED_RULES:
        if pattern.search(q):
            return task
    if not ocr_tokens.strip():
        return "general-vqa"
    return "ocr"


def _write_csv_gz(df: pd.DataFrame, path: Path) -> None:
    # mtime=0 keeps the gzip bytes reproducible.
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue().encode("utf-8"))


def build_textvqa(shared: Path, out: Path) -> pd.DataFrame:
    src = shared / "prompts" / "textvqa_val_llava" / "llava_textvqa_val_v051_ocr.jsonl"
    rows = []
    with open(src, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            text = rec["text"]
            lines = text.split("\n")
            question = lines[0].strip()
            ocr = ""
            for extra in lines[1:]:
                if extra.startswith("Reference OCR token:"):
                    ocr = extra[len("Reference OCR token:") :]
            rows.append(
                {
                    "question_id": rec["question_id"],
                    "prompt": text,
                    "question": question,
                    "task": classify_question(question, ocr),
                }
            )
    df = pd.DataFrame(rows, columns=["question_id", "prompt", "question", "task"])
    _write_csv_gz(df, out / "textvqa_prompts.csv.gz")
    return df


def build_azure(shared: Path, out: Path) -> dict[str, int]:
    counts = {}
    for kind in ("conv", "code"):
        src = shared / "traces" / "azure_llm_2023" / f"AzureLLMInferenceTrace_{kind}.csv"
        raw = pd.read_csv(src)
        ts = pd.to_datetime(raw["TIMESTAMP"], format="%Y-%m-%d %H:%M:%S.%f")
        arrival = (ts - ts.iloc[0]).dt.total_seconds().round(6)
        df = pd.DataFrame(
            {
                "arrival_s": arrival,
                "context_tokens": raw["ContextTokens"].astype("int64"),
                "generated_tokens": raw["GeneratedTokens"].astype("int64"),
            }
        )
        _write_csv_gz(df, out / f"azure_{kind}.csv.gz")
        counts[kind] = len(df)
    return counts


def build_mooncake(shared: Path, out: Path) -> int:
    src = shared / "traces" / "mooncake" / "conversation_trace.jsonl"
    rows = []
    with open(src, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                rows.append((rec["timestamp"], rec["input_length"], rec["output_length"]))
    df = pd.DataFrame(rows, columns=["timestamp_ms", "input_length", "output_length"])
    df["arrival_s"] = (df["timestamp_ms"] - df["timestamp_ms"].iloc[0]) / 1000.0
    df = df[["arrival_s", "input_length", "output_length"]]
    _write_csv_gz(df, out / "mooncake_conversation.csv.gz")
    return len(df)


SERVEGEN_FIELDS = ("text_tokens", "image_tokens", "image_count", "output_tokens")
SERVEGEN_DROPPED = ("audio_tokens", "audio_count", "video_tokens", "video_count")


def build_servegen(shared: Path, out: Path) -> dict[str, int]:
    """Pack the 35 clients' rates and PDFs into one npz (no pickled objects).

    Arrays:
    - ``window_start_s`` (144,): 10-minute windows of the day;
    - ``rate`` (35, 144) float64 req/s; ``cv`` (35, 144) inter-arrival CV (NaN when rate 0);
    - ``pdf_window_start_s`` (4,): start of the windows that carry PDFs (every 6 h);
    - for each field F: ``F_offsets`` (35*4+1,) int64 into ``F_values`` (int64) and
      ``F_probs`` (float64); the PDF of client c, PDF window w is the slice
      ``offsets[c*4+w] : offsets[c*4+w+1]``, values sorted ascending, probs summing to 1.
    """
    base = shared / "traces" / "servegen_mm_image" / "mm-image"
    client_ids = sorted(
        int(p.name.split("-")[1]) for p in base.glob("chunk-*-trace.csv") if p.is_file()
    )
    n_clients = len(client_ids)
    window_start = None
    rates, cvs = [], []
    pdf_windows: list[int] | None = None
    packed: dict[str, tuple[list[int], list[int], list[float]]] = {
        f: ([0], [], []) for f in SERVEGEN_FIELDS
    }
    for cid in client_ids:
        with open(base / f"chunk-{cid}-trace.csv", encoding="utf-8") as fh:
            trace = [row for row in csv.reader(fh) if row]
        starts = [int(float(r[0])) for r in trace]
        if window_start is None:
            window_start = starts
        elif starts != window_start:
            raise SystemExit(f"client {cid}: trace windows differ from client {client_ids[0]}")
        rates.append([float(r[1]) for r in trace])
        cvs.append([float(r[2]) if r[2] else np.nan for r in trace])
        with open(base / f"chunk-{cid}-dataset.json", encoding="utf-8") as fh:
            dataset = json.load(fh)
        keys = sorted(int(k) for k in dataset)
        if pdf_windows is None:
            pdf_windows = keys
        elif keys != pdf_windows:
            raise SystemExit(f"client {cid}: dataset windows differ from client {client_ids[0]}")
        for key in keys:
            entry = dataset[str(key)]
            for field in SERVEGEN_DROPPED:
                pdf = ast.literal_eval(entry[field])
                if any(v != 0 for v in pdf):
                    print(f"warning: client {cid} window {key}: non-zero {field} dropped")
            for field in SERVEGEN_FIELDS:
                pdf = ast.literal_eval(entry[field])  # a dict literal, never executed
                items = sorted((int(v), float(p)) for v, p in pdf.items() if p > 0)
                total = sum(p for _, p in items)
                offsets, values, probs = packed[field]
                values.extend(v for v, _ in items)
                probs.extend(p / total for _, p in items)
                offsets.append(len(values))
    arrays: dict[str, np.ndarray] = {
        "client_id": np.asarray(client_ids, dtype=np.int64),
        "window_start_s": np.asarray(window_start, dtype=np.int64),
        "rate": np.asarray(rates, dtype=np.float64),
        "cv": np.asarray(cvs, dtype=np.float32),
        "pdf_window_start_s": np.asarray(pdf_windows, dtype=np.int64),
    }
    for field, (offsets, values, probs) in packed.items():
        arrays[f"{field}_offsets"] = np.asarray(offsets, dtype=np.int64)
        arrays[f"{field}_values"] = np.asarray(values, dtype=np.int32)
        arrays[f"{field}_probs"] = np.asarray(probs, dtype=np.float64)
    np.savez_compressed(out / "servegen_mm_image.npz", **arrays)
    return {"clients": n_clients, **{f: len(packed[f][1]) for f in SERVEGEN_FIELDS}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared", nargs="?", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    shared: Path = args.shared
    if not shared.is_dir():
        print(f"error: shared data directory not found: {shared}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    prompts = build_textvqa(shared, out)
    mix = Counter(prompts["task"])
    print(f"textvqa: {len(prompts)} prompts; task mix:")
    for task in TASKS:
        print(f"  {task:12s} {mix.get(task, 0):5d}  {100 * mix.get(task, 0) / len(prompts):5.1f}%")
    print(f"azure: {build_azure(shared, out)}")
    print(f"mooncake: {build_mooncake(shared, out)} rows")
    print(f"servegen: {build_servegen(shared, out)}")
    total = 0
    for path in sorted(out.iterdir()):
        if path.is_file() and path.name != "README.md":
            total += path.stat().st_size
            print(f"  {path.name:32s} {path.stat().st_size:9,d} B")
    print(f"  total {total:,d} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
