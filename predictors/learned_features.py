"""Features of the learned quality predictor: one function for training rows and predictions.

Design
------
A learned predictor silently goes wrong when the features it is trained on are computed by one
piece of code and the features it predicts from by another. Here there is exactly **one**
implementation of the feature rows (:func:`_feature_rows`: the rows of the pairs of some
requests with one node model and tier), and two ways of feeding it:

- :func:`quality_features` reads a benchmark table (training, evaluation): per (request, node)
  pair the columns of :data:`PAIR_COLUMNS` (:func:`pairs_from_table`), grouped by node model and
  tier;
- :func:`window_quality_features` reads a window (prediction): the per-request columns once per
  request (:func:`window_requests`, kept for the same instance object so that the latency model
  shares them; prompts parsed once and kept, :func:`prompt_table`), one block of rows per
  distinct node model and tier.

Per-image sizes are deliberately **not** an input, because the table (``bench.csv.gz``) does not
carry them: a window is reduced to each request's totals too (image count, pixels, and the
node's model's tokens summed over the images, the catalog rule the simulator applies), so both
ways see the same information and give bit-identical rows
(``tests/predictors/test_learned_quality.py`` checks a table against the same requests as a
window, ``tests/predictors/test_fast_path.py`` windows against their pairs as table rows).

Features (names in :meth:`FeatureSpec.names`):

- ``task=<t>``: one-hot over the catalog's task families (fixed at training time).
- Prompt, hand-made and transparent: ``q_yes_no`` (the question opens with an auxiliary verb),
  ``q_numeric`` (counting, time, year, price, ...), ``q_reading`` (what is written, brand, name,
  title, ...), ``q_describe`` (describe, explain, why), ``ocr_line`` (a ``Reference OCR token:``
  line is present), ``log_ocr_tokens`` (``log1p`` of its comma-separated tokens),
  ``question_words`` (words of the first line) and ``log_prompt_tokens``.
- Prompt, learned (only if ``FeatureSpec.text_buckets > 0``): ``text_score``, a linear score of
  the question's words. The distinct lower-case words of the question (its first line, regex
  ``[a-z0-9']+``) are hashed to ``text_buckets`` buckets by a fixed function (the first 8 bytes
  of their BLAKE2b digest, little-endian, modulo the bucket count: the same on every machine and
  in every process, unlike Python's ``hash``); the bag holds ``1 / sqrt(distinct words)`` per
  word (:func:`text_bag`), and the score is the bag times a coefficient vector learned at
  training time (:func:`prompt_table`; the model file stores the vector as a plain float array).
  Some subjects are harder than others, and no hand-made indicator can tell which; the
  coefficients learn it from the outcomes (see
  :class:`~qlmio_opt.predictors.learned_quality.LearnedQualityModel`). ``text_logit`` is the
  score added to the logit of ``analytic_quality`` (:func:`analytic_logit`), the scale the
  coefficients were fitted on: shallow trees split on the sum directly instead of
  approximating it by a staircase over two columns. Both come after the image features.
- Images: ``n_images``, ``log_image_pixels`` (``log1p`` of the total pixels) and
  ``log_image_tokens`` (tokens the node's model spends on them).
- Resolution, as in :class:`~qlmio_opt.predictors.analytic.AnalyticPredictor` (``ratio`` /
  ``ref_ratio``): ``log_seen_share`` is the log of the share of the request's pixels the model
  sees after its resize rule, ``log_seen_vs_reference`` that minus the same log-share for the
  task's reference image, ``resolution_shift`` the latter times the task's
  ``resolution_exponent`` and ``analytic_quality`` the analytic predictor's quality, the
  published accuracy moved by ``resolution_shift`` on the log-odds scale
  (:func:`~qlmio_opt.predictors.features.resolution_quality`). Without per-image sizes the seen
  pixels are **estimated** from the aggregates (:func:`seen_pixels_estimate`): exact for
  Qwen's ``patch`` rule (``tokens * patch_px**2``), for ``fixed`` rules and for single images
  under ``tiles`` rules; for several tiled images the tiles are assumed equal per image, and the
  ``openai-tiles`` rule sees each image as a square of the mean area. ``log_tokens_per_mpx``
  gives the trees the raw token density as well.
- Model, from the catalog only: ``log_params_b``, ``family=<f>`` (one-hot over the catalog's
  families), ``acc_task`` (published accuracy for the row's task), ``acc_mean`` (published
  accuracy averaged over the task families) and ``tier_cloud``. There is **no model-id one-hot**:
  the estimator must generalise to a model it has not seen through these catalog features.

A task or family unknown to the :class:`FeatureSpec` gets an all-zero one-hot block; a model must
be in the catalog passed in (an instance's own catalog, inline entries included, works).
"""

from __future__ import annotations

import hashlib
import math
import re
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator

from qlmio_opt.domain.catalog import Catalog
from qlmio_opt.domain.catalog.image_tokens import ImageTokenRule
from qlmio_opt.domain.instance import Instance
from qlmio_opt.predictors.features import resolution_quality
from qlmio_opt.predictors.model_files import FileModel

__all__ = [
    "FEATURE_VERSION",
    "PAIR_COLUMNS",
    "PROMPT_CACHE_SIZE",
    "PROMPT_FEATURES",
    "TEXT_BUCKETS",
    "TEXT_FEATURES",
    "WINDOW_CACHE_SIZE",
    "FeatureSpec",
    "FeatureSpecFields",
    "TextBuckets",
    "WindowRequests",
    "analytic_logit",
    "clear_caches",
    "pairs_from_table",
    "prompt_table",
    "prompt_texts",
    "quality_features",
    "question_buckets",
    "seen_pixels_estimate",
    "text_bag",
    "window_quality_features",
    "window_requests",
]

FEATURE_VERSION = 3
"""Bumped whenever a feature's definition changes (saved models record it). 3: the analytic
quality moves published accuracy on the odds scale (a probability by construction, no clip)."""

PAIR_COLUMNS: tuple[str, ...] = (
    "task",
    "prompt",
    "prompt_tokens",
    "n_images",
    "image_pixels",
    "image_tokens",
    "model",
    "tier",
)
"""The per-pair columns :func:`quality_features` reads (all present in the bench table)."""

PROMPT_FEATURES: tuple[str, ...] = (
    "q_yes_no",
    "q_numeric",
    "q_reading",
    "q_describe",
    "ocr_line",
    "log_ocr_tokens",
    "question_words",
)

TEXT_FEATURES: tuple[str, ...] = ("text_score", "text_logit")
"""The learned text feature(s), present when ``FeatureSpec.text_buckets > 0``."""

TEXT_BUCKETS = 2**14
"""Default number of hash buckets of the question words (a few thousand distinct words in the
TextVQA prompts: collisions are rare)."""

_IMAGE_FEATURES: tuple[str, ...] = (
    "log_prompt_tokens",
    "n_images",
    "log_image_pixels",
    "log_image_tokens",
    "log_tokens_per_mpx",
    "log_seen_share",
    "log_seen_vs_reference",
    "resolution_shift",
    "analytic_quality",
)
_MODEL_FEATURES: tuple[str, ...] = ("log_params_b", "acc_task", "acc_mean", "tier_cloud")


# Question vocabulary (matched on the lower-cased words of the question, not by regex search:
# a set lookup per word keeps a window's prompts well under a millisecond).
def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_AUXILIARY = _words(
    "is are am does do did can could was were has have had will would should shall may might must"
)
_HOW_NUMERIC = _words("many much old long far tall big high")
_WHAT_NUMERIC = _words(
    "number time year date day percentage percent price amount value score age size speed"
)
_READING = _words(
    "written write writing say says said brand name names named title word words letter letters "
    "text label called spell spelled read reads"
)
_DESCRIBE = _words("describe explain why detail details detailed caption")
_NUMERIC_BIGRAMS = frozenset(
    [("how", w) for w in _HOW_NUMERIC] + [(q, w) for q in ("what", "which") for w in _WHAT_NUMERIC]
)
_WORD = re.compile(r"[a-z0-9']+")
_OCR_LINE = "Reference OCR token:"


# --------------------------------------------------------------------------------------------
# the feature specification (what is fixed at training time)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSpec:
    """The category lists the one-hot blocks are built over, fixed when a model is trained.

    Parameters
    ----------
    tasks
        Task families, in one-hot order.
    families
        Model families, in one-hot order.
    text_buckets
        Hash buckets of the learned text score (``0``: no text feature). A power of two from 16
        to 2**20.
    """

    tasks: tuple[str, ...]
    families: tuple[str, ...]
    text_buckets: int = TEXT_BUCKETS

    def __post_init__(self) -> None:
        if not _valid_buckets(self.text_buckets):
            raise ValueError(f"text_buckets {_BUCKETS_RULE}; got {self.text_buckets!r}")

    @classmethod
    def from_catalog(cls, catalog: Catalog, text_buckets: int = TEXT_BUCKETS) -> FeatureSpec:
        """Every task family and model family of ``catalog`` (families sorted)."""
        return cls(
            tasks=tuple(catalog.tasks),
            families=tuple(sorted({m.family for m in catalog.models.values()})),
            text_buckets=text_buckets,
        )

    def names(self) -> tuple[str, ...]:
        """Column names of the feature matrix, in order."""
        return (
            *(f"task={t}" for t in self.tasks),
            *PROMPT_FEATURES,
            *_IMAGE_FEATURES,
            *(TEXT_FEATURES if self.text_buckets else ()),
            *_MODEL_FEATURES,
            *(f"family={f}" for f in self.families),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (read back by :class:`FeatureSpecFields`)."""
        return {
            "tasks": list(self.tasks),
            "families": list(self.families),
            "text_buckets": self.text_buckets,
        }


_BUCKETS_RULE = "must be 0 or a power of two 16..2**20"


def _valid_buckets(n: Any) -> bool:
    plain = isinstance(n, int) and not isinstance(n, bool)
    return plain and (n == 0 or (16 <= n <= 2**20 and n & (n - 1) == 0))


def _buckets(n: int) -> int:
    if not _valid_buckets(n):
        raise ValueError(f"{_BUCKETS_RULE}; got {n!r}")
    return n


def _distinct_names(names: list[str]) -> list[str]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"has duplicates: {', '.join(repeated)}")
    return names


TextBuckets = Annotated[int, AfterValidator(_buckets)]
"""A number of hash buckets of the question's words, as a model file's field: ``0`` (no text
input) or a power of two from 16 to 2**20."""


class FeatureSpecFields(FileModel):
    """A :class:`FeatureSpec` as a model file records it (``feature_spec``)."""

    tasks: Annotated[list[str], AfterValidator(_distinct_names)]
    families: Annotated[list[str], AfterValidator(_distinct_names)]
    text_buckets: TextBuckets

    def spec(self) -> FeatureSpec:
        return FeatureSpec(tuple(self.tasks), tuple(self.families), self.text_buckets)


# --------------------------------------------------------------------------------------------
# prompts: parsed once each, the same numbers for tables and windows
# --------------------------------------------------------------------------------------------
PROMPT_CACHE_SIZE = 2**14
"""Distinct prompts whose parse (hand-made features, hashed question words) is kept between
calls (:func:`prompt_table`; :func:`clear_caches` empties it)."""


def _parse_prompt(prompt: str) -> tuple[tuple[float, ...], list[str]]:
    """The hand-made features of one prompt, and its question's words (in order).

    The first line is the question, read as lower-case words: ``q_yes_no`` if the first is an
    auxiliary verb (is, are, does, can, ...), ``q_numeric`` for "how many/much/old/..." and
    "what/which number/time/year/price/...", ``q_reading`` and ``q_describe`` if any word is in
    their vocabulary. ``Reference OCR token:`` lines count their comma-separated fields
    (``log_ocr_tokens = log1p(count)``); ``question_words`` counts the question's words.
    """
    question, _, rest = prompt.partition("\n")
    words = _WORD.findall(question.lower())
    vocabulary = set(words)
    numeric = not _NUMERIC_BIGRAMS.isdisjoint(pairwise(words))
    n_ocr, has_ocr = 0, False
    for line in rest.split("\n") if rest else ():
        if line.startswith(_OCR_LINE):
            has_ocr = True
            body = line[len(_OCR_LINE) :]
            n_ocr += body.count(",") + 1 if body.strip() else 0
    features = (
        float(bool(words) and words[0] in _AUXILIARY),
        float(numeric),
        float(not vocabulary.isdisjoint(_READING)),
        float(not vocabulary.isdisjoint(_DESCRIBE)),
        float(has_ocr),
        math.log1p(n_ocr),
        float(len(words)),
    )
    return features, words


@lru_cache(maxsize=PROMPT_CACHE_SIZE)
def _parsed_prompt(prompt: str) -> tuple[tuple[float, ...], frozenset[str]]:
    """A prompt's hand-made features and the distinct words of its question."""
    features, words = _parse_prompt(prompt)
    return features, frozenset(words)


@lru_cache(maxsize=2**17)
def _word_hash(word: str) -> int:
    """A word's fixed 64-bit hash (BLAKE2b, first 8 bytes, little-endian)."""
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


_word_hashes: dict[str, int] = {}
_WORD_HASHES_KEPT = 2**18


def _hashes(words: list[str]) -> np.ndarray:
    """:func:`_word_hash` of every word, as ``uint64`` (known words from a plain dict)."""
    known = _word_hashes
    if len(known) > _WORD_HASHES_KEPT:
        known.clear()
    out = []
    for word in words:
        h = known.get(word)
        if h is None:
            h = known[word] = _word_hash(word)
        out.append(h)
    return np.array(out, dtype=np.uint64)


def prompt_texts(values: Iterable[Any]) -> list[str]:
    """Prompts as strings: a missing one (``None``, or NaN from a table) is ``""``."""
    return ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values]


def prompt_table(
    prompts: Sequence[str], text_coef: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Hand-made prompt features and (with ``text_coef``) learned text scores of every prompt.

    Each distinct prompt is parsed once and the parse kept for later calls
    (:data:`PROMPT_CACHE_SIZE`); prompts are strings (:func:`prompt_texts`).

    Returns
    -------
    tuple
        ``(n, len(PROMPT_FEATURES))`` features and ``(n,)`` scores, ``text_bag(prompts) @
        text_coef`` to the last bit (``None`` without ``text_coef``).
    """
    distinct, codes = _distinct(prompts)
    features = _prompt_rows(distinct)[codes]
    if text_coef is None:
        return features, None
    return features, _text_scores(distinct, text_coef)[codes]


def _prompt_rows(distinct: list[str]) -> np.ndarray:
    """``(n, len(PROMPT_FEATURES))``: the hand-made features of distinct prompts."""
    rows = [_parsed_prompt(p)[0] for p in distinct]
    return np.array(rows, dtype=float).reshape(len(distinct), len(PROMPT_FEATURES))


def _text_scores(distinct: list[str], text_coef: np.ndarray) -> np.ndarray:
    """``(n,)``: the text bag of distinct prompts times ``text_coef``, summed as scipy's sparse
    product sums (:func:`text_bag`): every distinct word weighs ``1 / sqrt(distinct words)``,
    words sharing a bucket add up, then the products are added over each prompt's buckets in
    increasing order."""
    coef = np.asarray(text_coef, dtype=np.float64)
    if coef.ndim != 1 or not len(coef):
        raise ValueError("the text coefficients must be a non-empty one-dimensional array")
    words = [_parsed_prompt(p)[1] for p in distinct]
    counts = np.array([len(w) for w in words], dtype=np.int64)
    if not counts.sum():
        return np.zeros(len(distinct))
    n_buckets = len(coef)
    owner = np.repeat(np.arange(len(words), dtype=np.int64), counts)
    bucket = (_hashes([w for ws in words for w in ws]) % np.uint64(n_buckets)).astype(np.int64)
    key = np.sort(owner * n_buckets + bucket)  # by prompt, then bucket
    first = np.empty(len(key), dtype=bool)
    first[0] = True
    np.not_equal(key[1:], key[:-1], out=first[1:])
    cells = key[first]
    # a prompt's words all weigh the same: a cell's weight adds that weight once per word
    weight = (1.0 / np.sqrt(np.maximum(counts, 1)))[key // n_buckets]
    cell_weight = np.bincount(np.cumsum(first) - 1, weights=weight, minlength=len(cells))
    products = cell_weight * coef[cells % n_buckets]
    return np.bincount(cells // n_buckets, weights=products, minlength=len(words))


def question_buckets(prompt: str, n_buckets: int) -> np.ndarray:
    """Hash buckets of the distinct lower-case words of a prompt's question (first line).

    One entry per distinct word (two words may share a bucket), in sorted word order; an empty
    question gives an empty array.
    """
    words = sorted(set(_WORD.findall(prompt.partition("\n")[0].lower())))
    return np.array([_word_hash(w) % n_buckets for w in words], dtype=np.int64)


def text_bag(prompts: Iterable[Any], n_buckets: int) -> Any:
    """``(n, n_buckets)`` sparse bag of the questions' hashed words (``scipy.sparse`` CSR), what
    the text model of training is fitted on.

    Every distinct word of a question adds ``1 / sqrt(number of distinct words)`` to its bucket
    (the module docstring); a missing prompt is empty (:func:`prompt_texts`). Each distinct
    prompt is parsed once.
    """
    from scipy import sparse

    distinct, codes = _distinct(prompt_texts(prompts))
    buckets = [question_buckets(p, n_buckets) for p in distinct]
    counts = np.array([len(b) for b in buckets], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = np.concatenate(buckets) if buckets else np.zeros(0, dtype=np.int64)
    weight = np.repeat(1.0 / np.sqrt(np.maximum(counts, 1)), counts)
    bag = sparse.csr_matrix((weight, indices, indptr), shape=(len(distinct), n_buckets))
    bag.sum_duplicates()  # two words in one bucket add up
    return bag[codes]


def clear_caches(words: bool = False) -> None:
    """Forget every parsed prompt and every kept window (:func:`window_requests`): the next
    prediction parses its prompts afresh, as for a window of new requests. The hashes of known
    words (the vocabulary, a few thousand words that recur in every window) are kept unless
    ``words``."""
    _parsed_prompt.cache_clear()
    _windows.clear()
    if words:
        _word_hashes.clear()
        _word_hash.cache_clear()


# --------------------------------------------------------------------------------------------
# images and models
# --------------------------------------------------------------------------------------------
def analytic_logit(quality: np.ndarray) -> np.ndarray:
    """``logit`` of the analytic quality clipped to [0.01, 0.99] (the text model's offset)."""
    q = np.clip(np.asarray(quality, dtype=float), 0.01, 0.99)
    return np.log(q / (1.0 - q))


def seen_pixels_estimate(
    rule: ImageTokenRule, n_images: np.ndarray, pixels: np.ndarray, tokens: np.ndarray
) -> np.ndarray:
    """Pixels the model sees over a request's images, from the totals only.

    Parameters
    ----------
    rule
        The model's image-token rule.
    n_images, pixels, tokens
        Per pair: image count, total pixels, and the model's total image tokens.

    Returns
    -------
    numpy.ndarray
        Estimated seen pixels, at most ``pixels`` (0 where there are no images). Exact for the
        ``patch`` and ``fixed`` rules and for a single image under ``tiles``; see the module
        docstring for the rest.
    """
    n = np.asarray(n_images, dtype=float)
    px = np.asarray(pixels, dtype=float)
    tok = np.asarray(tokens, dtype=float)
    has = (n > 0) & (px > 0)
    p = rule.params
    seen = np.zeros(len(n))
    if rule.kind == "patch":
        seen = tok * float(p["patch_px"]) ** 2
    elif rule.kind == "fixed":
        seen = n * float(p["input_px"]) ** 2
    elif rule.kind == "tiles":
        per_image = np.divide(tok / float(p["tokens_per_tile"]), n, out=np.zeros(len(n)), where=has)
        if p["thumbnail"]:
            per_image = np.where(per_image > 1.0, per_image - 1.0, per_image)
        seen = n * per_image * float(p["tile_px"]) ** 2
    elif has.any():  # openai-tiles and any later rule: each image a square of the mean area
        side = np.sqrt(np.divide(px, n, out=np.ones(len(n)), where=has))
        side = np.maximum(1, np.round(side)).astype(np.int64)
        seen = n * rule.seen_pixels_array(side, side).astype(float)
    return np.where(has, np.minimum(seen, px), 0.0)


def _reference_share(rule: ImageTokenRule, width: int, height: int) -> float:
    ref_px = width * height
    return min(rule.seen_pixels(width, height), ref_px) / ref_px


# --------------------------------------------------------------------------------------------
# the feature rows: one implementation for tables and windows
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _RequestColumns:
    """What a feature row reads of its request, one entry per row.

    Attributes
    ----------
    tasks
        The distinct task families, and ``task_code`` each row's index among them.
    prompt_rows
        ``(n, len(PROMPT_FEATURES))`` hand-made prompt features.
    text_score
        The learned text score (``None`` when the spec has none).
    """

    tasks: list[str]
    task_code: np.ndarray
    prompt_rows: np.ndarray
    prompt_tokens: np.ndarray
    n_images: np.ndarray
    image_pixels: np.ndarray
    text_score: np.ndarray | None

    def take(self, rows: np.ndarray) -> _RequestColumns:
        """The columns of the rows selected by the boolean mask ``rows``."""
        return _RequestColumns(
            tasks=self.tasks,
            task_code=self.task_code[rows],
            prompt_rows=self.prompt_rows[rows],
            prompt_tokens=self.prompt_tokens[rows],
            n_images=self.n_images[rows],
            image_pixels=self.image_pixels[rows],
            text_score=None if self.text_score is None else self.text_score[rows],
        )


def _feature_rows(
    spec: FeatureSpec,
    catalog: Catalog,
    req: _RequestColumns,
    node: tuple[str, str],
    image_tokens: np.ndarray,
) -> np.ndarray:
    """``(n, len(spec.names()))``: the feature rows of the pairs of ``req``'s rows with a node
    of model and tier ``node``, whose model spends ``image_tokens`` on each row's images."""
    model_key, tier = node
    model = catalog.model(model_key)
    rule = model.image_tokens
    task_specs = [catalog.task(t) for t in req.tasks]
    n_img, px, tok = req.n_images, req.image_pixels, image_tokens
    has = (n_img > 0) & (px > 0)
    safe_px = np.where(has, px, 1.0)
    acc_task = np.array([float(model.accuracy[t]) for t in req.tasks])[req.task_code]
    ref_share = np.array(
        [_reference_share(rule, t.reference_width, t.reference_height) for t in task_specs]
    )[req.task_code]
    exponent = np.array([t.resolution_exponent for t in task_specs])[req.task_code]
    seen = seen_pixels_estimate(rule, n_img, px, tok)
    log_share = np.where(has, np.log(np.where(has, seen, 1.0) / safe_px), 0.0)
    log_vs_ref = np.where(has, log_share - np.log(ref_share), 0.0)
    shift = exponent * log_vs_ref
    analytic = resolution_quality(acc_task, shift)
    one_hot = np.array([[float(t == s) for s in spec.tasks] for t in req.tasks])
    columns = [
        one_hot.reshape(-1, len(spec.tasks))[req.task_code],
        req.prompt_rows,
        np.log1p(req.prompt_tokens),
        n_img,
        np.log1p(px),
        np.log1p(tok),
        np.where(has, np.log(np.maximum(tok, 1.0) / (safe_px / 1e6)), 0.0),  # tokens per Mpx
        log_share,
        log_vs_ref,
        shift,
        analytic,
    ]
    if spec.text_buckets:
        if req.text_score is None:
            raise ValueError("this feature spec has a text score: pass text_coef")
        columns += [req.text_score, analytic_logit(analytic) + req.text_score]
    return np.column_stack([*columns, *_model_columns(spec, model, tier, acc_task)])


def _model_columns(
    spec: FeatureSpec, model: Any, tier: str, acc_task: np.ndarray
) -> list[np.ndarray]:
    """``log_params_b``, ``acc_task``, ``acc_mean``, ``tier_cloud`` and the family one-hot of
    rows on one model and tier."""
    n = len(acc_task)
    accs = [float(model.accuracy[t]) for t in spec.tasks if t in model.accuracy]
    acc_mean = float(np.mean(accs)) if accs else 0.0
    family = np.array([float(model.family == f) for f in spec.families])
    return [
        np.full(n, math.log(model.params_b)),
        acc_task,
        np.full(n, acc_mean),
        np.full(n, float(tier == "cloud")),
        np.broadcast_to(family, (n, len(spec.families))),
    ]


def _text_coefficients(spec: FeatureSpec, text_coef: np.ndarray | None) -> np.ndarray | None:
    """``text_coef`` checked against the spec (``None`` for a spec without a text score)."""
    if not spec.text_buckets:
        return None
    if text_coef is None:
        raise ValueError("this feature spec has a text score: pass text_coef")
    if np.shape(text_coef) != (spec.text_buckets,):
        raise ValueError(
            f"text_coef must have shape ({spec.text_buckets},); got {np.shape(text_coef)}"
        )
    return np.asarray(text_coef, dtype=np.float64)


def _finite(out: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    if not np.isfinite(out).all():
        bad = np.flatnonzero(~np.isfinite(out).all(axis=0))
        names = spec.names()
        raise ValueError(f"non-finite feature(s): {', '.join(names[i] for i in bad)}")
    return out


def _distinct(values: Iterable[Any]) -> tuple[list[Any], np.ndarray]:
    """Distinct hashable values in order of appearance, and each value's index among them."""
    index: dict[Any, int] = {}
    codes = np.array([index.setdefault(v, len(index)) for v in values], dtype=np.intp)
    return list(index), codes


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------
def pairs_from_table(table: Any) -> dict[str, np.ndarray]:
    """The :data:`PAIR_COLUMNS` of a bench table (a ``DataFrame`` or a mapping of columns),
    prompts as strings (:func:`prompt_texts`).

    Raises
    ------
    ValueError
        If a column is missing.
    """
    missing = [c for c in PAIR_COLUMNS if c not in table]
    if missing:
        raise ValueError(f"the table lacks the column(s) {', '.join(missing)}")
    out = {c: np.asarray(table[c], dtype=object) for c in ("task", "model", "tier")}
    out["prompt"] = np.array(prompt_texts(table["prompt"]), dtype=object)
    for c in ("prompt_tokens", "n_images", "image_pixels", "image_tokens"):
        out[c] = np.asarray(table[c], dtype=float)
    return out


def quality_features(
    pairs: Mapping[str, Any],
    catalog: Catalog,
    spec: FeatureSpec,
    text_coef: np.ndarray | None = None,
    *,
    text_score: np.ndarray | None = None,
) -> np.ndarray:
    """The feature matrix of the learned quality model for the pairs of a table.

    Parameters
    ----------
    pairs
        Per (request, node) pair, the columns of :data:`PAIR_COLUMNS` (a bench table, or the
        output of :func:`pairs_from_table`).
    catalog
        Where models and tasks are looked up.
    spec
        The one-hot categories (fixed at training time).
    text_coef
        ``(spec.text_buckets,)``: the learned text coefficients (:func:`prompt_table`); needed
        when the spec has a text feature, unless ``text_score`` is given.
    text_score
        ``(n_pairs,)``: the text score itself (training passes its out-of-fold scores here).

    Returns
    -------
    numpy.ndarray
        ``(n_pairs, len(spec.names()))`` float64, finite.

    Raises
    ------
    ValueError
        On a missing column, a missing or misshapen text input, or a non-finite feature.
    """
    cols = pairs_from_table(pairs)
    n = len(cols["task"])
    prompts = list(cols["prompt"])
    score: np.ndarray | None
    if spec.text_buckets and text_score is not None:
        features, score = prompt_table(prompts)[0], np.asarray(text_score, dtype=np.float64)
        if score.shape != (n,):
            raise ValueError(f"text_score must have shape ({n},); got {score.shape}")
    elif spec.text_buckets and text_coef is None:
        raise ValueError("this feature spec has a text score: pass text_coef or text_score")
    else:
        features, score = prompt_table(prompts, _text_coefficients(spec, text_coef))
    tasks, task_code = _distinct(cols["task"])
    req = _RequestColumns(
        tasks, task_code, features, cols["prompt_tokens"], cols["n_images"], cols["image_pixels"],
        score,
    )  # fmt: skip
    nodes, node_code = _distinct(zip(cols["model"], cols["tier"], strict=True))
    out = np.empty((n, len(spec.names())))
    for k, node in enumerate(nodes):
        rows = node_code == k
        out[rows] = _feature_rows(spec, catalog, req.take(rows), node, cols["image_tokens"][rows])
    return _finite(out, spec)


# --------------------------------------------------------------------------------------------
# windows: what a request's pairs share computed once per request
# --------------------------------------------------------------------------------------------
WINDOW_CACHE_SIZE = 4
"""Windows (instance objects) whose :class:`WindowRequests` :func:`window_requests` keeps, so
that the quality and the latency model of one prediction share them."""


@dataclass(frozen=True, eq=False)
class WindowRequests:
    """The columns of :data:`PAIR_COLUMNS` that depend on the request only, for a window.

    Built by :func:`window_requests`. Every array has one entry per request (length ``R``),
    except the three ``image_*`` arrays (one per image, request-major). The derived arrays
    (:meth:`image_tokens`, :meth:`prompt_features`, :meth:`text_scores`) are computed once and
    kept (read-only): the instance they come from is immutable.
    """

    task: np.ndarray
    prompt: tuple[str, ...]
    prompt_tokens: np.ndarray
    n_images: np.ndarray
    image_pixels: np.ndarray
    max_output_tokens: np.ndarray
    image_owner: np.ndarray
    image_width: np.ndarray
    image_height: np.ndarray
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.task)

    def image_tokens(self, rule: ImageTokenRule) -> np.ndarray:
        """``(R,)`` tokens a model with image-token rule ``rule`` spends on each request (the
        catalog rule of every image, summed per request, as the simulator sums them)."""
        key = ("tokens", rule)
        if key not in self._memo:
            tokens: np.ndarray
            if len(self.image_owner):
                per_image = rule.tokens_array(self.image_width, self.image_height).astype(float)
                tokens = np.bincount(self.image_owner, weights=per_image, minlength=len(self))
            else:
                tokens = np.zeros(len(self))
            self._memo[key] = _read_only(tokens)
        return self._memo[key]

    def prompt_features(self) -> np.ndarray:
        """``(R, len(PROMPT_FEATURES))``: hand-made features of the prompts
        (:func:`prompt_table`)."""
        if "prompts" not in self._memo:
            self._memo["prompts"] = _read_only(prompt_table(self.prompt)[0])
        return self._memo["prompts"]

    def text_scores(self, text_coef: np.ndarray) -> np.ndarray:
        """``(R,)``: the learned text scores of the prompts for the coefficients ``text_coef``
        (:func:`prompt_table`)."""
        key = ("scores", id(text_coef))
        kept = self._memo.get(key)
        if kept is None or kept[0] is not text_coef:
            distinct, codes = _distinct(self.prompt)
            kept = self._memo[key] = (
                text_coef,
                _read_only(_text_scores(distinct, text_coef)[codes]),
            )
        return kept[1]


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


_windows: list[tuple[weakref.ref, WindowRequests]] = []


def window_requests(instance: Instance) -> WindowRequests:
    """The per-request columns of ``instance``; the same object again for the same instance
    object while it is one of the last :data:`WINDOW_CACHE_SIZE` (instances are immutable)."""
    for ref, kept in _windows:
        if ref() is instance:
            return kept
    reqs = instance.requests
    n_req = len(reqs)
    flat = [(i, im.width, im.height) for i, r in enumerate(reqs) for im in r.images]
    img = np.array(flat, dtype=np.int64).reshape(-1, 3)
    owner, width, height = img[:, 0], img[:, 1], img[:, 2]
    pixels = np.bincount(owner, weights=(width * height).astype(float), minlength=n_req)
    out = WindowRequests(
        task=np.array([r.task for r in reqs], dtype=object),
        prompt=tuple(r.prompt or "" for r in reqs),
        prompt_tokens=np.array([r.prompt_tokens for r in reqs], dtype=float),
        n_images=np.array([len(r.images) for r in reqs], dtype=float),
        image_pixels=pixels,
        max_output_tokens=np.array([r.max_output_tokens for r in reqs], dtype=float),
        image_owner=owner,
        image_width=width,
        image_height=height,
    )
    for name in ("task", "prompt_tokens", "n_images", "image_pixels", "max_output_tokens"):
        _read_only(getattr(out, name))
    _windows[:] = [(weakref.ref(instance), out), *_windows[: WINDOW_CACHE_SIZE - 1]]
    return out


def window_quality_features(
    instance: Instance,
    spec: FeatureSpec,
    catalog: Catalog | None = None,
    text_coef: np.ndarray | None = None,
    requests: WindowRequests | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The feature rows of a window, each distinct row computed once.

    A pair's features depend on the request and on its node's model and tier only, so nodes
    sharing both share their rows: one block of rows per distinct (model, tier), with the
    per-request inputs (task, prompt, text score, image totals) computed once per request. The
    rows are those :func:`quality_features` gives for the window's pairs as table rows.

    Returns
    -------
    tuple
        ``(K * R, n_features)`` features, key-major (the ``R`` rows of key 0, then key 1, ...),
        and ``(N,)`` the key of every node: the row of pair ``(r, j)`` is
        ``key[j] * R + r``.

    Raises
    ------
    ValueError
        As :func:`quality_features`.
    """
    catalog = catalog or instance.resolved_catalog
    req = requests if requests is not None else window_requests(instance)
    coef = _text_coefficients(spec, text_coef)
    tasks, task_code = _distinct(req.task)
    columns = _RequestColumns(
        tasks, task_code, req.prompt_features(), req.prompt_tokens, req.n_images,
        req.image_pixels, None if coef is None else req.text_scores(coef),
    )  # fmt: skip
    nodes, node_key = _distinct((n.model, n.tier) for n in instance.nodes)
    X = np.empty((len(nodes), len(req), len(spec.names())))
    for k, node in enumerate(nodes):
        tokens = req.image_tokens(catalog.model(node[0]).image_tokens)
        X[k] = _feature_rows(spec, catalog, columns, node, tokens)
    return _finite(X.reshape(len(nodes) * len(req), -1), spec), node_key
