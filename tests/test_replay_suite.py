"""benchmarks/replay_suite.py, at a small size: it runs a replay of its suite, writes the JSON,
and its report and targets read back what it wrote."""

import importlib.util
import json
import sys

from conftest import ROOT


def load_suite():
    spec = importlib.util.spec_from_file_location(
        "replay_suite", ROOT / "benchmarks" / "replay_suite.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_suites_are_written_down_and_disjoint():
    suite = load_suite()
    dev, held = suite.suite("dev"), suite.suite("held-out")
    assert len(dev) == 24 and len(held) == 16
    assert not {r.name for r in dev} & {r.name for r in held}
    assert (
        {r.engine for r in dev} == {r.engine for r in held} == {"chunked-prefill", "serial-prefill"}
    )


def test_a_short_replay_of_the_suite_reports_every_policy_and_target(tmp_path, capsys):
    suite = load_suite()
    name = "mooncake-s0-t0-loose-chunked-prefill"
    args = [
        "--set",
        "dev",
        "--duration",
        "10",
        "--only",
        name,
        "--out",
        str(tmp_path),
        "--jobs",
        "1",
    ]
    assert suite.main(args) == 0
    doc = json.loads((tmp_path / f"{name}.json").read_text())
    assert set(doc["policies"]) == set(suite.POLICIES)
    assert doc["config"]["engine"] == "chunked-prefill" and doc["config"]["time_limit"] == 2.0
    figures = suite.figures(doc)
    assert figures["cloud-only"]["vs_cloud_only"] == 0.0
    targets = suite.targets(figures)
    assert set(targets) >= {"expected TCR within 0.5 pt", "greedy within 2 pt"}
    printed = capsys.readouterr().out
    assert name in printed and "Mean reduction of exact against cloud-only" in printed
    # --report reads the file back without replaying
    assert suite.main([*args, "--report"]) == 0
    assert capsys.readouterr().out == printed
