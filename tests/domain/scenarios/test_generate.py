"""The benchmark window generator (qlmio_opt.domain.scenarios)."""

from __future__ import annotations

import json
import math

import pytest

from qlmio_opt.domain.scenarios import (
    DEFAULT,
    SCENARIOS,
    dumps_instance,
    generate_window,
    generate_windows,
    window_size,
    window_sizes,
    window_stats,
    write_windows,
)

TASKS = {"ocr", "document", "chart", "general-vqa", "reasoning", "captioning"}


@pytest.fixture(scope="module")
def windows():
    return generate_windows("default", 6, seed=0)


def test_registry():
    assert SCENARIOS["default"] is DEFAULT
    with pytest.raises(ValueError, match="unknown scenario"):
        generate_window("no-such-scenario")


def test_sizes_span_the_grid():
    sizes = window_sizes("default", 100, seed=0)
    assert min(sizes) == 20
    assert max(sizes) == 1000
    assert 100 <= sizes[42] <= 300  # the showcase window is medium-sized
    # log-spread: about as many windows below the geometric middle as above
    below = sum(s < math.sqrt(20 * 1000) for s in sizes)
    assert 40 <= below <= 60
    assert window_sizes("default", 100, seed=1) != sizes
    assert window_size("default", 42, seed=1) == sizes[42]  # pinned for every seed


def test_deterministic(windows):
    again = generate_window("default", 3, seed=0)
    assert json.dumps(again) == json.dumps(windows[3])
    assert generate_window("default", 3, seed=1) != windows[3]


def test_window_does_not_depend_on_count(windows):
    short = generate_windows("default", 2, seed=0)
    assert short == windows[:2]


def test_instance_shape(windows):
    for k, inst in enumerate(windows):
        assert inst["format"] == "qlmio-opt/instance"
        assert inst["version"] == 1
        assert inst["name"] == f"window_{k:03d}"
        window_s = inst["window_s"]
        assert window_s > 0
        sites = set(inst["network"]["sites"])
        nodes = inst["nodes"]
        assert len(inst["requests"]) == window_size("default", k, seed=0)
        ids = [r["id"] for r in inst["requests"]]
        assert len(set(ids)) == len(ids)
        node_ids = [n["id"] for n in nodes]
        assert len(set(node_ids)) == len(node_ids)
        link_ids = [lk["id"] for lk in inst["network"]["links"]]
        assert len(set(link_ids)) == len(link_ids)
        assert 3 <= sum(n["tier"] == "edge" for n in nodes) <= 6
        assert 1 <= sum(n["tier"] == "cloud" for n in nodes) <= 2
        assert 2 <= len(sites) <= 4
        for node in nodes:
            if node["tier"] == "cloud":
                assert node["memory_gb"] is None
            else:
                assert node["memory_gb"] == "auto" or node["memory_gb"] > 0
        for req in inst["requests"]:
            assert req["site"] in sites
            assert 0 <= req["arrival_s"] <= window_s
            assert req["task"] in TASKS
            assert req["prompt_tokens"] >= len(req["prompt"]) / 4
            assert req["max_output_tokens"] >= 64
            for image in req["images"]:
                assert image["width"] >= 28 and image["height"] >= 28
                assert image["bytes"] > 0
            if "min_quality" in req:
                assert 0 < req["min_quality"] < 1
            if "deadline_s" in req:
                assert req["deadline_s"] > window_s - req["arrival_s"]
        arrivals = [r["arrival_s"] for r in inst["requests"]]
        assert arrivals == sorted(arrivals)
        objective = inst["objective"]
        assert objective["mode"] in ("weighted", "quality_floor")
        assert objective["deferral_penalty_s"] == 30.0


def test_every_node_reachable_and_edges_have_home_site(windows):
    for inst in windows:
        links = inst["network"]["links"]
        sites = inst["network"]["sites"]
        for node in inst["nodes"]:
            if node["tier"] == "edge":
                froms = {lk["from"] for lk in links if lk["to"] == node["id"]}
                assert "core" in froms
                assert froms & set(sites)
            else:
                assert any(lk["from"] == "core" and lk["to"] == node["id"] for lk in links)
        for site in sites:
            assert any(lk["from"] == site and lk["to"] == "core" for lk in links)


def test_showcase_window_is_medium_and_binding():
    inst = generate_window("default", 42, seed=0)
    stats = window_stats(inst)
    assert 100 <= stats["requests"] <= 300
    assert inst["objective"]["mode"] == "weighted"
    assert max(stats["uplink"], stats["memory"], stats["wan"]) > 1


def test_dumps_and_write(tmp_path):
    paths = write_windows(tmp_path, "default", 2, seed=5)
    assert [p.name for p in paths] == ["window_000.json", "window_001.json"]
    loaded = json.loads(paths[1].read_text())
    assert loaded == generate_window("default", 1, seed=5)
    text = dumps_instance(loaded)
    assert text.count("\n") >= len(loaded["requests"])  # one line per request
