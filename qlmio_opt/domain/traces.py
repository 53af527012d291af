"""Readers for the public traces and prompts shipped in ``qlmio_opt/data/``.

The files are small derived copies built by ``scripts/build_package_data.py``; their sources
and licences are in ``qlmio_opt/data/README.md``. Every reader loads its file once
(``functools.cache``) and hands out a fresh copy, so callers may modify what they get; the
ServeGen sampler is shared instead, its arrays read-only.

- :func:`load_azure` — Azure LLM inference trace 2023 (conv or code): arrival times and tokens.
- :func:`load_mooncake` — Mooncake FAST'25 conversation trace: arrival times and tokens.
- :func:`load_textvqa_prompts` — 5,000 TextVQA questions with a task label.
- :func:`load_servegen` — a :class:`ServeGenSampler` over Alibaba ServeGen's multimodal
  (Qwen-VL) per-client distributions: image count, tokens per image, text and output tokens.
"""

from __future__ import annotations

import functools
import io
from importlib.resources import files
from typing import Literal

import numpy as np
import pandas as pd

from qlmio_opt.domain.frozen import read_only

__all__ = [
    "ServeGenSampler",
    "data_bytes",
    "load_azure",
    "load_mooncake",
    "load_servegen",
    "load_textvqa_prompts",
]

DAY_S = 86_400


def data_bytes(name: str) -> bytes:
    """The bytes of ``name``, a file shipped in ``qlmio_opt/data/`` (its README lists them)."""
    return files("qlmio_opt").joinpath("data").joinpath(name).read_bytes()


@functools.cache
def _read_csv_gz(name: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data_bytes(name)), compression="gzip", keep_default_na=False)


def load_azure(kind: Literal["conv", "code"] = "conv") -> pd.DataFrame:
    """Azure LLM inference trace 2023 (Splitwise, CC-BY 4.0).

    Columns: ``arrival_s`` (seconds since the first request, float), ``context_tokens`` and
    ``generated_tokens`` (int). ``conv`` has 19,366 rows (~58 min), ``code`` 8,819 (~57 min).
    """
    if kind not in ("conv", "code"):
        raise ValueError(f"kind must be 'conv' or 'code', not {kind!r}")
    return _read_csv_gz(f"azure_{kind}.csv.gz").copy()


def load_mooncake() -> pd.DataFrame:
    """Mooncake FAST'25 conversation trace (Kimi, Apache-2.0): 12,031 rows over ~59 min.

    Columns: ``arrival_s`` (seconds since the first request), ``input_tokens``,
    ``output_tokens``.
    """
    df = _read_csv_gz("mooncake_conversation.csv.gz")
    return df.rename(columns={"input_length": "input_tokens", "output_length": "output_tokens"})


def load_textvqa_prompts() -> pd.DataFrame:
    """5,000 TextVQA v0.5.1 validation prompts in LLaVA's format (CC BY 4.0).

    Columns: ``question_id`` (the TextVQA image-derived id; *not* unique — 3,166 distinct, one
    per image), ``prompt`` (question, OCR-token line and answer instruction, newline separated),
    ``question`` (text before the first newline) and ``task`` (one of ocr, document, chart,
    general-vqa, reasoning, captioning; keyword heuristic documented in
    ``scripts/build_package_data.py`` and ``qlmio_opt/data/README.md``).
    """
    return _read_csv_gz("textvqa_prompts.csv.gz").copy()


class ServeGenSampler:
    """Sample per-request multimodal shapes from ServeGen's mm-image client data.

    ServeGen publishes, for each of 35 clients of a Qwen-VL service, the request rate of every
    10-minute window of a day and, every 6 hours, the PDFs of text tokens, image count,
    tokens per image and output tokens. A request is drawn by picking a (client, window) pair
    with probability proportional to the client's rate in that window, then drawing each field
    from that client's PDFs of the latest PDF window at or before it. Tokens per image are
    drawn independently for each image of the request.
    """

    FIELDS = ("text_tokens", "image_tokens", "image_count", "output_tokens")

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        # read-only: load_servegen hands one cached sampler to every caller
        self.client_id = read_only(np.asarray(arrays["client_id"]))
        self.window_start_s = read_only(np.asarray(arrays["window_start_s"]))
        self.rate = read_only(np.asarray(arrays["rate"], dtype=float))
        self.pdf_window_start_s = read_only(np.asarray(arrays["pdf_window_start_s"]))
        n_clients, n_windows = self.rate.shape
        if len(self.client_id) != n_clients or len(self.window_start_s) != n_windows:
            raise ValueError("ServeGen arrays have inconsistent shapes")
        n_groups = n_clients * len(self.pdf_window_start_s)
        # field -> (offsets, values, cumulative probabilities), one slice per group
        self._pdfs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for field in self.FIELDS:
            offsets = np.asarray(arrays[f"{field}_offsets"], dtype=np.int64)
            values = np.asarray(arrays[f"{field}_values"], dtype=np.int64)
            probs = np.asarray(arrays[f"{field}_probs"], dtype=float)
            if len(offsets) != n_groups + 1 or np.any(np.diff(offsets) <= 0):
                raise ValueError(f"ServeGen {field}: bad offsets")
            cdf = np.empty_like(probs)
            for g in range(n_groups):
                lo, hi = offsets[g], offsets[g + 1]
                c = np.cumsum(probs[lo:hi])
                cdf[lo:hi] = c / c[-1]
            self._pdfs[field] = (offsets, values, cdf)
        # PDF window of every 10-minute window
        self._pdf_window_of = (
            np.searchsorted(self.pdf_window_start_s, self.window_start_s, side="right") - 1
        ).clip(0)

    @property
    def n_clients(self) -> int:
        return self.rate.shape[0]

    def aggregate_rate(self) -> pd.Series:
        """Total request rate (req/s) of all clients per 10-minute window of the day."""
        return pd.Series(self.rate.sum(axis=0), index=self.window_start_s, name="rate")

    def window_index(self, window_of_day_s: float) -> int:
        """Index of the 10-minute window that contains ``window_of_day_s`` (mod one day)."""
        t = float(window_of_day_s) % DAY_S
        return int(np.searchsorted(self.window_start_s, t, side="right") - 1)

    def _draw(self, field: str, groups: np.ndarray, u: np.ndarray) -> np.ndarray:
        offsets, values, cdf = self._pdfs[field]
        out = np.empty(len(groups), dtype=np.int64)
        for g in np.unique(groups):
            sel = groups == g
            lo, hi = offsets[g], offsets[g + 1]
            pos = np.searchsorted(cdf[lo:hi], u[sel], side="right")
            out[sel] = values[lo:hi][np.minimum(pos, hi - lo - 1)]
        return out

    def sample(
        self, rng: np.random.Generator, n: int, window_of_day_s: float | None = None
    ) -> pd.DataFrame:
        """Draw ``n`` requests.

        Parameters
        ----------
        rng
            The random generator (the only source of randomness).
        n
            Number of requests.
        window_of_day_s
            Time of day (seconds) whose 10-minute window's client mix and PDFs to use; ``None``
            draws each request's window too, weighted by rate (the whole day's mix).

        Returns
        -------
        DataFrame with columns ``image_count`` (int), ``image_tokens`` (an int array per
        request, one entry per image), ``text_tokens``, ``output_tokens`` (int), and the
        ``client`` and ``window_of_day_s`` each request was drawn from.
        """
        n = int(n)
        if n < 0:
            raise ValueError("n must be >= 0")
        n_clients, n_windows = self.rate.shape
        if window_of_day_s is None:
            weights = self.rate.ravel()
            flat = rng.choice(weights.size, size=n, p=weights / weights.sum())
            client, window = np.divmod(flat, n_windows)
        else:
            t = self.window_index(window_of_day_s)
            weights = self.rate[:, t]
            if weights.sum() <= 0:
                raise ValueError(f"no ServeGen client is active at {window_of_day_s} s")
            client = rng.choice(n_clients, size=n, p=weights / weights.sum())
            window = np.full(n, t, dtype=np.int64)
        groups = client * len(self.pdf_window_start_s) + self._pdf_window_of[window]
        text = self._draw("text_tokens", groups, rng.random(n))
        count = self._draw("image_count", groups, rng.random(n))
        output = self._draw("output_tokens", groups, rng.random(n))
        image_groups = np.repeat(groups, count)
        per_image = self._draw("image_tokens", image_groups, rng.random(len(image_groups)))
        splits = np.split(per_image, np.cumsum(count)[:-1]) if n else []
        return pd.DataFrame(
            {
                "image_count": count,
                "image_tokens": pd.Series(list(splits), dtype=object),
                "text_tokens": text,
                "output_tokens": output,
                "client": self.client_id[client],
                "window_of_day_s": self.window_start_s[window],
            }
        )


@functools.cache
def load_servegen() -> ServeGenSampler:
    """The (cached) sampler over ServeGen's mm-image data (Apache-2.0)."""
    with np.load(io.BytesIO(data_bytes("servegen_mm_image.npz")), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return ServeGenSampler(arrays)
