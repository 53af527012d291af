"""The shipped trace and prompt readers (qlmio_opt.domain.traces)."""

from __future__ import annotations

import numpy as np
import pytest

from qlmio_opt.domain.traces import (
    ServeGenSampler,
    load_azure,
    load_mooncake,
    load_servegen,
    load_textvqa_prompts,
)

TASKS = {"ocr", "document", "chart", "general-vqa", "reasoning", "captioning"}


@pytest.mark.parametrize(("kind", "rows"), [("conv", 19_366), ("code", 8_819)])
def test_azure_columns_and_rows(kind, rows):
    df = load_azure(kind)
    assert list(df.columns) == ["arrival_s", "context_tokens", "generated_tokens"]
    assert len(df) == rows
    assert df["arrival_s"].iloc[0] == 0.0
    assert df["arrival_s"].is_monotonic_increasing
    assert 3_000 < df["arrival_s"].iloc[-1] < 3_600  # about an hour
    assert (df["context_tokens"] > 0).all()
    assert df["generated_tokens"].dtype.kind == "i"


def test_azure_conv_matches_readme_stats():
    df = load_azure("conv")
    assert df["context_tokens"].mean() == pytest.approx(1155, rel=0.01)
    assert df["generated_tokens"].mean() == pytest.approx(211, rel=0.01)


def test_azure_rejects_unknown_kind():
    with pytest.raises(ValueError, match="conv"):
        load_azure("chat")  # type: ignore[arg-type]


def test_readers_return_copies():
    df = load_azure("conv")
    df["arrival_s"] = -1.0
    assert load_azure("conv")["arrival_s"].iloc[1] > 0


def test_mooncake_columns_and_rows():
    df = load_mooncake()
    assert list(df.columns) == ["arrival_s", "input_tokens", "output_tokens"]
    assert len(df) == 12_031
    assert df["arrival_s"].iloc[0] == 0.0
    assert df["arrival_s"].iloc[-1] == pytest.approx(3_536.999)
    assert df["input_tokens"].mean() == pytest.approx(12_035, rel=0.01)
    assert df["output_tokens"].mean() == pytest.approx(343, rel=0.01)


def test_textvqa_prompts():
    df = load_textvqa_prompts()
    assert list(df.columns) == ["question_id", "prompt", "question", "task"]
    assert len(df) == 5_000
    assert df["question_id"].nunique() == 3_166  # one id per image, several questions each
    assert set(df["task"]) <= TASKS
    assert (df["prompt"].str.split("\n").str[0] == df["question"]).all()
    assert df["question"].str.len().mean() == pytest.approx(34.8, abs=0.5)
    mix = df["task"].value_counts(normalize=True)
    assert mix["ocr"] > 0.4  # TextVQA is mostly reading text
    for task in ("document", "reasoning", "general-vqa"):
        assert mix[task] > 0.05


def test_servegen_sampler_means_match_readme():
    sampler = load_servegen()
    assert isinstance(sampler, ServeGenSampler)
    assert sampler.n_clients == 35
    assert sampler.aggregate_rate().mean() == pytest.approx(9.47, abs=0.01)
    df = sampler.sample(np.random.default_rng(1), 100_000)
    assert list(df.columns[:4]) == ["image_count", "image_tokens", "text_tokens", "output_tokens"]
    assert df["image_count"].mean() == pytest.approx(1.6, rel=0.05)
    assert df["output_tokens"].mean() == pytest.approx(128.5, rel=0.05)
    assert df["text_tokens"].median() == pytest.approx(106, rel=0.1)
    sizes = df["image_tokens"].map(len)
    assert (sizes == df["image_count"]).all()
    per_image = np.concatenate(list(df["image_tokens"]))
    assert per_image.max() <= 1280


def test_servegen_sampler_deterministic_and_time_of_day():
    sampler = load_servegen()
    a = sampler.sample(np.random.default_rng(7), 50, window_of_day_s=14 * 3600)
    b = sampler.sample(np.random.default_rng(7), 50, window_of_day_s=14 * 3600)
    assert a.drop(columns="image_tokens").equals(b.drop(columns="image_tokens"))
    pairs = zip(a["image_tokens"], b["image_tokens"], strict=True)
    assert all(np.array_equal(x, y) for x, y in pairs)
    assert (a["window_of_day_s"] == 14 * 3600).all()
    assert len(sampler.sample(np.random.default_rng(0), 0)) == 0
