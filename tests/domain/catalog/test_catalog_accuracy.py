"""Accuracy per task family: recomputed from the published benchmark table (calibration.md 1d).

The mapping (ocr = mean(TextVQA, OCRBench/10), document = DocVQA, chart = ChartQA,
general-vqa = MMBench, reasoning = mean(MMMU, MathVista), captioning = general-vqa) and the
fill rule F1 documented at the top of models.toml are applied here independently of the TOML.
"""

import pytest

from qlmio_opt.domain.catalog import default_catalog

# model: (MMBench, MMMU val, TextVQA val, DocVQA, ChartQA, MathVista mini, OCRBench)
PUBLISHED = {
    "qwen2-vl-2b": (74.9, 41.1, 79.7, 90.1, 73.5, 43.0, 794),
    "qwen2-vl-7b": (83.0, 54.1, 84.3, 94.5, 83.0, 58.2, 845),
    "qwen2-vl-72b": (86.5, 64.5, 85.5, 96.5, 88.3, 70.5, 877),
    "qwen2.5-vl-3b": (81.5, 53.1, 79.3, 93.9, None, 62.3, None),
    "qwen2.5-vl-7b": (84.3, 58.6, 84.9, 95.7, 87.3, 68.2, 864),
    "qwen2.5-vl-72b": (88.0, 70.2, None, 96.4, 89.5, 74.8, 885),
    "internvl2-1b": (65.4, 36.7, 70.5, 81.7, 72.9, 37.7, 754),
    "internvl2-2b": (73.2, 36.3, 73.4, 86.9, 76.2, 46.3, 784),
    "internvl2-4b": (78.6, 47.0, 74.4, 89.2, 81.5, 58.6, 788),
    "internvl2-8b": (81.7, 51.8, 77.4, 91.6, 83.3, 58.3, 794),
    "minicpm-v-2.6": (78.0, 49.8, 80.1, 90.8, None, 60.6, 852),
    "llava-1.5-7b": (64.3, None, 58.2, None, None, None, None),
    "llava-1.5-13b": (67.7, None, 61.3, None, None, None, None),
    "smolvlm": (None, 38.8, 72.7, 81.6, None, 44.6, None),
    "gpt-4o": (83.4, 69.1, None, 92.8, 85.7, 63.8, 736),
}

# (model, missing family) -> (sibling, anchor family)
FILLS = {
    ("qwen2.5-vl-3b", "chart"): ("qwen2.5-vl-7b", "general-vqa"),
    ("minicpm-v-2.6", "chart"): ("qwen2-vl-7b", "general-vqa"),
    ("llava-1.5-7b", "document"): ("qwen2-vl-7b", "general-vqa"),
    ("llava-1.5-7b", "chart"): ("qwen2-vl-7b", "general-vqa"),
    ("llava-1.5-7b", "reasoning"): ("qwen2-vl-7b", "general-vqa"),
    ("llava-1.5-13b", "document"): ("qwen2-vl-7b", "general-vqa"),
    ("llava-1.5-13b", "chart"): ("qwen2-vl-7b", "general-vqa"),
    ("llava-1.5-13b", "reasoning"): ("qwen2-vl-7b", "general-vqa"),
    ("smolvlm", "general-vqa"): ("qwen2-vl-2b", "document"),
    ("smolvlm", "chart"): ("qwen2-vl-2b", "document"),
}


def _mean(*values):
    present = [v for v in values if v is not None]
    return sum(present) / len(present) / 100 if present else None


def published_accuracy(key):
    mmb, mmmu, textvqa, docvqa, chartqa, mathvista, ocrbench = PUBLISHED[key]
    return {
        "ocr": _mean(textvqa, ocrbench / 10 if ocrbench else None),
        "document": _mean(docvqa),
        "chart": _mean(chartqa),
        "general-vqa": _mean(mmb),
        "reasoning": _mean(mmmu, mathvista),
    }


@pytest.fixture(scope="module")
def cat():
    return default_catalog()


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_published_families_follow_the_mapping(cat, key):
    model = cat.model(key)
    for task, value in published_accuracy(key).items():
        if value is None:
            assert (key, task) in FILLS, f"{key}.{task} has no figure and no fill rule"
            continue
        assert model.accuracy[task] == pytest.approx(value, abs=1e-4), (key, task)
        assert not model.sources[f"accuracy.{task}"].startswith("assumption"), (key, task)


def _resolution(cat, key, task):
    spec = cat.task(task)
    pixels = cat.model(key).image_tokens.seen_pixels(spec.reference_width, spec.reference_height)
    return pixels**spec.resolution_exponent


@pytest.mark.parametrize(("key", "task"), sorted(FILLS))
def test_filled_families_follow_rule_f1(cat, key, task):
    sibling, anchor = FILLS[key, task]
    own = published_accuracy(key)
    sib = published_accuracy(sibling)
    factor = (_resolution(cat, key, task) / _resolution(cat, sibling, task)) / (
        _resolution(cat, key, anchor) / _resolution(cat, sibling, anchor)
    )
    expected = own[anchor] * sib[task] / sib[anchor] * factor
    model = cat.model(key)
    assert model.accuracy[task] == pytest.approx(expected, abs=6e-4)
    source = model.sources[f"accuracy.{task}"]
    assert source.startswith("assumption: ")
    assert sibling in source and "F1" in source


def test_captioning_is_general_vqa(cat):
    for model in cat.models.values():
        assert model.accuracy["captioning"] == model.accuracy["general-vqa"]
        assert model.sources["accuracy.captioning"].startswith("assumption: ")


def test_larger_siblings_are_not_worse_on_average(cat):
    for small, large in [
        ("qwen2-vl-2b", "qwen2-vl-7b"),
        ("qwen2-vl-7b", "qwen2-vl-72b"),
        ("qwen2.5-vl-3b", "qwen2.5-vl-7b"),
        ("qwen2.5-vl-7b", "qwen2.5-vl-72b"),
        ("internvl2-1b", "internvl2-2b"),
        ("internvl2-2b", "internvl2-4b"),
        ("internvl2-4b", "internvl2-8b"),
        ("llava-1.5-7b", "llava-1.5-13b"),
    ]:
        a, b = cat.model(small).accuracy, cat.model(large).accuracy
        assert sum(b.values()) > sum(a.values()), (small, large)
