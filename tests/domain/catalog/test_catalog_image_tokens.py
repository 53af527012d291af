"""Image-token rules: published examples, vectorised == scalar, and parameter validation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlmio_opt.domain.catalog import ImageTokenRule, default_catalog
from qlmio_opt.domain.errors import CatalogError

QWEN = ImageTokenRule("patch", {"max_tokens": 1280})
QWEN_LARGE = ImageTokenRule("patch", {"max_tokens": 16384})
INTERNVL = ImageTokenRule("tiles", {"tile_px": 448, "tokens_per_tile": 256, "max_tiles": 12})
MINICPM = ImageTokenRule("tiles", {"tile_px": 448, "tokens_per_tile": 64, "max_tiles": 9})
SMOLVLM = ImageTokenRule("tiles", {"tile_px": 384, "tokens_per_tile": 81, "max_tiles": 16})
LLAVA = ImageTokenRule("fixed", {"tokens": 576, "input_px": 336})
GPT4O = ImageTokenRule("openai-tiles", {})
RULES = [QWEN, QWEN_LARGE, INTERNVL, MINICPM, SMOLVLM, LLAVA, GPT4O]


@pytest.mark.parametrize(
    ("rule", "width", "height", "tokens"),
    [
        (QWEN, 448, 448, 256),  # 16 x 16 [calibration 1c]
        (QWEN_LARGE, 1024, 768, 999),  # 1036 x 756 -> 37 x 27
        (QWEN, 1024, 768, 999),  # below the 1,280 cap
        (QWEN, 10, 10, 4),  # min_tokens
        (INTERNVL, 448, 448, 256),  # one tile, no thumbnail
        (INTERNVL, 4000, 3000, 3328),  # 12 tiles + thumbnail [calibration 1c]
        (MINICPM, 1344, 1344, 640),  # 9 slices + thumbnail [S7]
        (SMOLVLM, 384, 384, 81),  # one 384-px patch [S10]
        (LLAVA, 4000, 3000, 576),
        (LLAVA, 20, 20, 576),
        (GPT4O, 1024, 1024, 765),  # 768 x 768 -> 4 tiles [calibration 1c]
        (GPT4O, 512, 512, 255),
        (GPT4O, 4096, 2048, 1105),  # 2048x1024 -> 1536x768 -> 3 x 2 tiles
    ],
)
def test_published_examples(rule, width, height, tokens):
    assert rule.tokens(width, height) == tokens
    assert rule.tokens_array([width], [height]).tolist() == [tokens]


def test_qwen_serving_cap_limits_large_images():
    tokens = QWEN.tokens(4000, 3000)
    assert 1200 <= tokens <= 1280
    assert QWEN_LARGE.tokens(4000, 3000) > 10_000
    assert QWEN.seen_pixels(4000, 3000) == tokens * 28 * 28


def test_seen_pixels_definitions():
    assert QWEN.seen_pixels(448, 448) == 448 * 448
    assert INTERNVL.seen_pixels(900, 448) == 3 * 448 * 448  # thumbnail excluded
    assert LLAVA.seen_pixels(1000, 1000) == 336 * 336
    assert GPT4O.seen_pixels(1024, 1024) == 768 * 768
    assert GPT4O.seen_pixels(300, 200) == 300 * 200


def test_tiles_over_the_limit_keep_the_aspect_ratio():
    # A very wide image: 20 x 1 tiles would be needed, the grid is capped at 12 x 1.
    assert INTERNVL.seen_pixels(448 * 20, 448) == 12 * 448 * 448
    # Square and huge: the best grid of at most 12 is 3 x 3.
    assert INTERNVL.seen_pixels(5000, 5000) == 9 * 448 * 448


def test_shipped_models_use_these_rules():
    cat = default_catalog()
    assert cat.model("qwen2-vl-7b").image_tokens == QWEN
    assert cat.model("internvl2-8b").image_tokens == INTERNVL
    assert cat.model("minicpm-v-2.6").image_tokens.tokens(1344, 1344) == 640
    assert cat.model("llava-1.5-7b").image_tokens.tokens(640, 480) == 576
    assert cat.model("gpt-4o").image_tokens.tokens(1024, 1024) == 765
    assert cat.model("smolvlm").image_tokens == SMOLVLM


sizes = st.integers(min_value=1, max_value=12_000)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(sizes, sizes), min_size=1, max_size=20))
def test_vectorised_equals_scalar(pairs):
    widths = np.array([w for w, _ in pairs])
    heights = np.array([h for _, h in pairs])
    for rule in RULES:
        tokens = rule.tokens_array(widths, heights)
        pixels = rule.seen_pixels_array(widths, heights)
        assert tokens.dtype == np.int64
        assert pixels.dtype == np.int64
        assert tokens.tolist() == [rule.tokens(w, h) for w, h in pairs]
        assert pixels.tolist() == [rule.seen_pixels(w, h) for w, h in pairs]


@settings(max_examples=200, deadline=None)
@given(sizes, sizes)
def test_token_bounds(width, height):
    assert 4 <= QWEN.tokens(width, height) <= 1280 + 2 * 28  # floor may overshoot by a row
    assert 256 <= INTERNVL.tokens(width, height) <= 13 * 256
    assert 85 + 170 <= GPT4O.tokens(width, height) <= 85 + 170 * 12


def test_arrays_broadcast():
    out = QWEN.tokens_array(np.array([[448, 896]]), 448)
    assert out.shape == (1, 2)
    assert out.tolist() == [[256, 512]]


@pytest.mark.parametrize(
    ("kind", "params", "path"),
    [
        ("spiral", {}, "rule"),
        ("tiles", {"tile_px": 448, "tokens_per_tile": 256}, "max_tiles"),
        ("fixed", {"tokens": 576, "input_px": 336, "colour": 1}, "colour"),
        ("patch", {"max_tokens": -5}, "max_tokens"),
        ("patch", {"max_tokens": 2.5}, "max_tokens"),
        (
            "tiles",
            {"tile_px": 448, "tokens_per_tile": 64, "max_tiles": 9, "thumbnail": 1},
            "thumbnail",
        ),
        ("patch", {"min_tokens": 100, "max_tokens": 10}, "min_tokens"),
    ],
)
def test_invalid_rules(kind, params, path):
    with pytest.raises(CatalogError) as info:
        ImageTokenRule(kind, params)
    assert path in [issue.path for issue in info.value.issues]


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, -1), (1.5, 10)])
def test_invalid_sizes(width, height):
    with pytest.raises(ValueError):
        QWEN.tokens(width, height)
    with pytest.raises(ValueError):
        QWEN.tokens_array([width], [height])


def test_rules_are_immutable_and_comparable():
    rule = ImageTokenRule("patch", {})
    assert rule == QWEN
    assert hash(rule) == hash(QWEN)
    with pytest.raises(TypeError):
        rule.params["max_tokens"] = 5  # type: ignore[index]
