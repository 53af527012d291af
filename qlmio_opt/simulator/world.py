"""The ground-truth world: whether a model truly completes a request, how long its answer truly
is, and how fast each node truly serves it.

Nothing outside :mod:`qlmio_opt.simulator` reads this module: predictors estimate what it
decides, solvers see only the predictions, and the replay measures policies against it.

**Completion** follows a two-parameter item-response model. Request ``r`` has a hidden
difficulty ``d_r = sigma * z_r + p_r``: ``z_r`` a standard normal drawn from the request's id,
``p_r`` a difficulty read from its prompt: rules (numeric questions are harder, yes/no questions
easier, a cluttered OCR line harder) plus a hidden weight per question word, drawn from the
world's seed (what a question is about: some subjects are harder than others). The prompt
accounts for about a third of the latent variance, as the question does for the judged score in
the real M4A1 log (``docs/simulator.md``). Model ``m`` completes a task-``t`` request with
probability::

    P = sigmoid(a[m, t] - s[m] * d_r + kappa[t] * log(seen share / reference seen share))

``s[m]`` (discrimination) is larger for small models, which suffer more from hard requests; the
last term is the resolution effect (a model that must shrink an image more than it would a
benchmark-sized one does worse), ``kappa[t] = 3 * task.resolution_exponent``. Outcomes of
different models on one request are correlated through the shared ``d_r``. ``a[m, t]`` is
solved so that the mean completion over the hidden difficulty and the task's TextVQA prompts, at
the task's reference image size, equals the published accuracy in the catalog.

**Output length** is the task's typical length times a lognormal request factor and a factor of
the prompt (yes/no answers are short, "describe"/"explain" long), times a per-model verbosity
and a small per-pair noise, capped at the request's ``max_output_tokens``.

**Speeds** come from :mod:`qlmio_opt.simulator.speeds` (published figures), with a per-pair
lognormal jitter on vision encoding and prefill. Decode speed depends on the batch and is left
to :mod:`qlmio_opt.simulator.engine`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from qlmio_opt.domain.catalog import Catalog, default_catalog
from qlmio_opt.domain.catalog.specs import ModelSpec
from qlmio_opt.domain.frozen import FrozenDict, read_only
from qlmio_opt.domain.instance import Node, Request
from qlmio_opt.simulator.speeds import TrueSpeeds, true_speeds
from qlmio_opt.simulator.truth_draws import normals, uniforms

_YES_NO = re.compile(
    r"^\s*(is|are|does|do|did|can|was|were|has|have|will|could|should)\b", re.IGNORECASE
)
_NUMERIC = re.compile(
    r"\b(what|which)\s+(number|time|year|date|percentage|percent|price|amount|value)\b"
    r"|\bhow\s+(many|much|old|long)\b",
    re.IGNORECASE,
)
_LONG = re.compile(r"\b(describe|explain|why|detail|details|caption)\b", re.IGNORECASE)
_OCR_LINE = "Reference OCR token:"
_WORD = re.compile(r"[a-z0-9']+")

_GAUSS_HERMITE = np.polynomial.hermite_e.hermegauss(40)


@dataclass(frozen=True)
class WorldConfig:
    """The world's hidden parameters (assumptions, documented in ``docs/simulator.md``).

    Attributes
    ----------
    seed
        Seeds every hidden draw.
    difficulty_sd
        Spread of the latent request difficulty on the logit scale.
    resolution_slope
        ``kappa[t] / task.resolution_exponent``.
    output_sd
        Lognormal spread of a request's true output length around its task's typical length.
    verbosity_sd
        Lognormal spread of the per-model verbosity factor.
    pair_output_sd
        Lognormal noise of a pair's output length around the request's.
    speed_sd
        Lognormal jitter of a pair's vision and prefill time.
    word_sd
        Spread of the hidden per-word difficulty; a question's word part is the sum of its
        distinct words' weights over the square root of their number.
    """

    seed: int = 0
    difficulty_sd: float = 1.5
    resolution_slope: float = 3.0
    output_sd: float = 0.6
    verbosity_sd: float = 0.15
    pair_output_sd: float = 0.1
    speed_sd: float = 0.05
    word_sd: float = 1.0


def prompt_difficulty(prompt: str | None) -> float:
    """The rule part of a prompt's difficulty: numeric questions +0.9, yes/no questions -0.9, and
    ``0.3 * log(1 + OCR tokens)`` for the clutter of the reference OCR line."""
    if not prompt:
        return 0.0
    question = prompt.split("\n", 1)[0]
    value = 0.9 * bool(_NUMERIC.search(question)) - 0.9 * bool(_YES_NO.search(question))
    for line in prompt.split("\n")[1:]:
        if line.startswith(_OCR_LINE):
            tokens = [t for t in line[len(_OCR_LINE) :].split(",") if t.strip()]
            value += 0.3 * np.log1p(len(tokens))
    return float(value)


def question_words(prompt: str | None) -> tuple[str, ...]:
    """The distinct lower-case words of a prompt's question (its first line), sorted."""
    if not prompt:
        return ()
    return tuple(sorted(set(_WORD.findall(prompt.split("\n", 1)[0].lower()))))


def prompt_length_factor(prompt: str | None) -> float:
    """How a prompt stretches its answer: yes/no x0.5, describe/explain x1.6, else x1."""
    if not prompt:
        return 1.0
    question = prompt.split("\n", 1)[0]
    if _YES_NO.search(question):
        return 0.5
    if _LONG.search(question):
        return 1.6
    return 1.0


def discrimination(model: ModelSpec) -> float:
    """How strongly a model's success depends on difficulty: ``1 + 0.15 log(8 / params_b)``,
    clipped to [0.5, 1.5] (a 2B model 1.21, a 72B model 0.67)."""
    return float(np.clip(1.0 + 0.15 * np.log(8.0 / model.params_b), 0.5, 1.5))


@dataclass(frozen=True)
class _ImageArrays:
    request: np.ndarray
    width: np.ndarray
    height: np.ndarray


def _images(requests: Sequence[Request]) -> _ImageArrays:
    """Every image of ``requests`` as flat arrays, with the index of its request."""
    flat = [(i, im.width, im.height) for i, r in enumerate(requests) for im in r.images]
    if not flat:
        empty = np.zeros(0, dtype=np.int64)
        return _ImageArrays(empty, empty, empty)
    arr = np.array(flat, dtype=np.int64)
    return _ImageArrays(arr[:, 0], arr[:, 1], arr[:, 2])


@dataclass(frozen=True)
class PairTruth:
    """What the world decides for every request on every node, arrays of shape ``(R, N)``.

    Attributes
    ----------
    completion_prob
        True probability of completing the task (hidden even from the oracle, which sees
        ``completed``).
    completed
        The drawn outcome.
    output_tokens
        True output length.
    image_tokens
        Image tokens the node's model sees.
    vision_s, prefill_s
        True stand-alone times of vision encoding and prefill.
    kv_reserve_gb
        KV cache the serving engine reserves for the request (prompt, images and the full
        output allowance).
    kv_read_gb
        KV cache the request reads per decode step, on average over its answer.
    decode_solo_s
        True decode time with the node otherwise idle.

    The arrays are read-only views.
    """

    completion_prob: np.ndarray
    completed: np.ndarray
    output_tokens: np.ndarray
    image_tokens: np.ndarray
    vision_s: np.ndarray
    prefill_s: np.ndarray
    kv_reserve_gb: np.ndarray
    kv_read_gb: np.ndarray
    decode_solo_s: np.ndarray

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, read_only(np.asarray(getattr(self, f.name))))

    @property
    def compute_s(self) -> np.ndarray:
        """True stand-alone vision plus prefill time."""
        return self.vision_s + self.prefill_s


class World:
    """The hidden truth of a catalog's models and devices (see the module docstring).

    Parameters
    ----------
    catalog
        Models, devices and tasks; default: the shipped catalog.
    config
        Hidden parameters and the seed.
    """

    def __init__(self, catalog: Catalog | None = None, config: WorldConfig | None = None) -> None:
        self.catalog = catalog or default_catalog()
        self.config = config or WorldConfig()
        self._ability: dict[tuple[str, str], float] = {}
        self._word_weight: dict[str, float] = {}

    def prompt_difficulty(self, prompt: str | None) -> float:
        """``p_r``: the rule part (:func:`prompt_difficulty`) plus the hidden word part."""
        words = question_words(prompt)
        missing = [w for w in words if w not in self._word_weight]
        if missing:
            weights = self.config.word_sd * normals(self.config.seed, missing, "word")
            self._word_weight.update(zip(missing, weights.tolist(), strict=True))
        word_part = sum(self._word_weight[w] for w in words) / np.sqrt(len(words)) if words else 0.0
        return prompt_difficulty(prompt) + float(word_part)

    # -- completion --------------------------------------------------------------------------
    @cached_property
    def task_prompt_difficulty(self) -> FrozenDict[str, np.ndarray]:
        """Per task, the prompt difficulties of its TextVQA prompts (the calibration sample);
        computed once, read-only."""
        from qlmio_opt.domain.scenarios.default import DEFAULT
        from qlmio_opt.domain.traces import load_textvqa_prompts

        prompts = load_textvqa_prompts()
        values = np.array([self.prompt_difficulty(p) for p in prompts["prompt"]])
        tasks = prompts["task"].to_numpy()
        out = {}
        for task in self.catalog.tasks:
            own = values[tasks == task]
            if task == "captioning":
                own = np.array([self.prompt_difficulty(p) for p in DEFAULT.caption_prompts])
            out[task] = read_only(own if len(own) >= 5 or task == "captioning" else values)
        return FrozenDict(out)

    def ability(self, model: str, task: str) -> float:
        """``a[model, task]``: mean completion over difficulty and prompts = published accuracy."""
        key = (model, task)
        if key not in self._ability:
            spec = self.catalog.model(model)
            target = float(np.clip(spec.accuracy[task], 1e-4, 1 - 1e-4))
            self._ability[key] = brentq(
                lambda a: self.mean_completion(a, spec, task) - target, -30.0, 30.0, xtol=1e-10
            )
        return self._ability[key]

    def mean_completion(self, a: float, model: ModelSpec, task: str) -> float:
        """Mean completion probability of ``model`` with ability ``a`` on ``task``, over the
        hidden difficulty and the task's prompts at its reference image size: what
        :meth:`ability` solves to equal the published accuracy."""
        z, w = _GAUSS_HERMITE
        s = discrimination(model)
        prompts = self.task_prompt_difficulty[task]
        logits = a - s * (self.config.difficulty_sd * z[None, :] + prompts[:, None])
        return float((expit(logits) @ w).mean() / w.sum())

    def difficulty(self, requests: Sequence[Request]) -> np.ndarray:
        """Hidden difficulty ``d_r`` of each request."""
        ids = [r.id for r in requests]
        z = normals(self.config.seed, ids, "difficulty")
        p = np.array([self.prompt_difficulty(r.prompt) for r in requests])
        return self.config.difficulty_sd * z + p

    def resolution_shift(
        self, model: ModelSpec, requests: Sequence[Request], images: _ImageArrays | None = None
    ) -> np.ndarray:
        """``kappa[t] * log(seen share / reference seen share)`` per request (0 without images)."""
        images = images if images is not None else _images(requests)
        out = np.zeros(len(requests))
        if len(images.request) == 0:
            return out
        rule = model.image_tokens
        pixels = (images.width * images.height).astype(float)
        seen = np.minimum(rule.seen_pixels_array(images.width, images.height), pixels)
        total = np.bincount(images.request, weights=pixels, minlength=len(requests))
        total_seen = np.bincount(images.request, weights=seen, minlength=len(requests))
        tasks = np.array([r.task for r in requests], dtype=object)
        has = total > 0
        for task in np.unique(tasks[has]):
            spec = self.catalog.task(task)
            ref_px = spec.reference_width * spec.reference_height
            ref_seen = min(rule.seen_pixels(spec.reference_width, spec.reference_height), ref_px)
            rows = has & (tasks == task)
            kappa = self.config.resolution_slope * spec.resolution_exponent
            out[rows] = kappa * np.log(total_seen[rows] / total[rows] / (ref_seen / ref_px))
        return out

    def completion_prob(
        self, requests: Sequence[Request], models: Sequence[str], *, observable: bool = False
    ) -> np.ndarray:
        """``(R, M)`` true completion probabilities.

        With ``observable`` the request's own hidden draw ``z_r`` is averaged out: the
        probability given everything a request shows (task, prompt with its question words,
        images) and nothing it hides, the most any predictor of those features can know.
        """
        if observable:
            nodes, weights = _GAUSS_HERMITE
            p = np.array([self.prompt_difficulty(r.prompt) for r in requests])
            d = self.config.difficulty_sd * nodes[None, :] + p[:, None]  # (R, Q)
            weights = weights / weights.sum()
        else:
            d = self.difficulty(requests)[:, None]
            weights = np.ones(1)
        images = _images(requests)
        tasks = np.array([r.task for r in requests], dtype=object)
        out = np.empty((len(requests), len(models)))
        for j, key in enumerate(models):
            spec = self.catalog.model(key)
            a = np.zeros(len(requests))
            for task in np.unique(tasks):
                a[tasks == task] = self.ability(key, task)
            shift = self.resolution_shift(spec, requests, images)
            out[:, j] = expit(a[:, None] - discrimination(spec) * d + shift[:, None]) @ weights
        return out

    def completed(
        self,
        requests: Sequence[Request],
        models: Sequence[str],
        prob: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(R, M)`` drawn outcomes (one uniform per request and model); ``prob`` may pass the
        already computed :meth:`completion_prob`."""
        if prob is None:
            prob = self.completion_prob(requests, models)
        ids = [r.id for r in requests]
        u = np.column_stack([uniforms(self.config.seed, ids, f"done:{m}") for m in models])
        return u < prob

    # -- output length -----------------------------------------------------------------------
    def output_tokens(self, requests: Sequence[Request], models: Sequence[str]) -> np.ndarray:
        """``(R, M)`` true output lengths, at least 1 and at most ``max_output_tokens``."""
        cfg = self.config
        ids = [r.id for r in requests]
        typical = np.array([self.catalog.task(r.task).typical_output_tokens for r in requests])
        factor = np.array([prompt_length_factor(r.prompt) for r in requests])
        z = normals(cfg.seed, ids, "output")
        base = typical * factor * np.exp(cfg.output_sd * z - cfg.output_sd**2 / 2)
        cap = np.array([r.max_output_tokens for r in requests], dtype=float)
        out = np.empty((len(requests), len(models)))
        for j, key in enumerate(models):
            verbosity = np.exp(cfg.verbosity_sd * normals(cfg.seed, [key], "verbosity")[0])
            noise = np.exp(cfg.pair_output_sd * normals(cfg.seed, ids, f"output:{key}"))
            out[:, j] = np.clip(np.round(base * verbosity * noise), 1, cap)
        return out

    # -- service -----------------------------------------------------------------------------
    def speeds(self, node: Node) -> TrueSpeeds:
        """The true speeds of ``node``'s model on its device."""
        return true_speeds(self.catalog.device(node.device), self.catalog.model(node.model))

    def pairs(self, requests: Sequence[Request], nodes: Sequence[Node]) -> PairTruth:
        """Everything the world decides for every request on every node."""
        cfg = self.config
        models = list(dict.fromkeys(n.model for n in nodes))
        column = [models.index(n.model) for n in nodes]
        prob_models = self.completion_prob(requests, models)
        prob = prob_models[:, column]
        done = self.completed(requests, models, prob_models)[:, column]
        out = self.output_tokens(requests, models)[:, column]
        ids = [r.id for r in requests]
        images = _images(requests)
        shape = (len(requests), len(nodes))
        image_tokens, vision, prefill = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        reserve, read, decode = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        prompt = np.array([r.prompt_tokens for r in requests], dtype=float)
        cap = np.array([r.max_output_tokens for r in requests], dtype=float)
        for j, node in enumerate(nodes):
            model = self.catalog.model(node.model)
            speed = self.speeds(node)
            tokens: np.ndarray = np.zeros(len(requests))
            if len(images.request):
                per_image = model.image_tokens.tokens_array(images.width, images.height)
                tokens = np.bincount(
                    images.request, weights=per_image.astype(float), minlength=len(requests)
                )
            jitter = np.exp(
                cfg.speed_sd * normals(cfg.seed, ids, f"speed:{node.id}") - cfg.speed_sd**2 / 2
            )
            image_tokens[:, j] = tokens
            vision[:, j] = tokens * model.vision_patches_per_token / speed.vision_tok_s * jitter
            prefill[:, j] = (prompt + tokens) / speed.prefill_tok_s * jitter
            reserve[:, j] = (prompt + tokens + cap) * speed.kv_gb_per_token
            read[:, j] = (prompt + tokens + out[:, j] / 2) * speed.kv_gb_per_token
            decode[:, j] = out[:, j] * np.array([speed.step_s(k) for k in read[:, j]])
        return PairTruth(
            completion_prob=prob,
            completed=done,
            output_tokens=out,
            image_tokens=image_tokens,
            vision_s=vision,
            prefill_s=prefill,
            kv_reserve_gb=reserve,
            kv_read_gb=read,
            decode_solo_s=decode,
        )
