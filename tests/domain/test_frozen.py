"""Read-only containers (``qlmio_opt.domain.frozen``) and the domain data that uses them."""

from __future__ import annotations

import copy
import json
import pickle

import networkx as nx
import numpy as np
import pytest

from qlmio_opt.domain.best_known import read_bks
from qlmio_opt.domain.catalog.image_tokens import RULE_KINDS
from qlmio_opt.domain.frozen import FrozenDict, freeze, read_only
from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.io import read_instance
from qlmio_opt.domain.solution import Solution, Status
from qlmio_opt.domain.traces import load_servegen

CHANGES = [
    lambda d: d.__setitem__("a", 2),
    lambda d: d.__delitem__("a"),
    lambda d: d.update(b=3),
    lambda d: d.setdefault("b", 3),
    lambda d: d.pop("a"),
    lambda d: d.popitem(),
    lambda d: d.clear(),
]


@pytest.mark.parametrize("change", CHANGES)
def test_frozen_dict_refuses_every_change(change):
    d = FrozenDict({"a": 1})
    with pytest.raises(TypeError, match="read-only"):
        change(d)
    with pytest.raises(TypeError, match="read-only"):
        d |= {"b": 2}
    assert d == {"a": 1}


def test_frozen_dict_is_still_a_dict_that_copies_pickles_and_serialises():
    d = freeze({"a": [1, {"b": 2}]})
    assert isinstance(d, dict) and isinstance(d["a"], tuple) and isinstance(d["a"][1], FrozenDict)
    assert json.dumps(d) == '{"a": [1, {"b": 2}]}'
    for twin in (pickle.loads(pickle.dumps(d)), copy.deepcopy(d), copy.copy(d)):
        assert twin == d and type(twin) is FrozenDict
    editable = dict(d)
    editable["c"] = 3  # a copy is an ordinary dict
    assert "c" not in d


def test_read_only_view_leaves_the_array_itself_writable():
    a = np.arange(3.0)
    view = read_only(a)
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 5.0
    a[0] = 5.0
    assert view[0] == 5.0


def _solution() -> Solution:
    return Solution(
        instance="w",
        solver="greedy",
        status=Status.FEASIBLE,
        assignment={"r0": "edge-0"},
        solver_stats={"iterations": 3.0},
    )


def test_a_solutions_mappings_cannot_be_changed_and_it_still_round_trips():
    sol = _solution()
    with pytest.raises(TypeError, match="read-only"):
        sol.assignment["r0"] = "cloud"
    with pytest.raises(TypeError, match="read-only"):
        sol.solver_stats["iterations"] = 0.0
    with pytest.raises(TypeError, match="read-only"):
        Solution(instance="w", solver="greedy", status=Status.FEASIBLE).assignment["r"] = "n"
    assert Solution.model_validate(sol.to_dict()) == sol
    assert pickle.loads(pickle.dumps(sol)) == sol


def test_an_instances_inline_catalog_entries_cannot_be_changed():
    data = read_instance("instances/small/analytic.json").to_dict()
    inst = Instance.from_dict(data)
    entries = inst.catalog
    assert entries is not None and entries.models
    key = next(iter(entries.models))
    with pytest.raises(TypeError, match="read-only"):
        entries.models[key] = {}
    with pytest.raises(TypeError, match="read-only"):
        entries.models[key]["weights_gb"] = 1.0
    assert inst.to_dict() == data
    assert Instance.from_dict(inst.to_dict()) == inst


def test_a_route_and_the_graph_it_came_from_cannot_be_changed():
    inst = read_instance("instances/window_000.json")
    route = inst.network_graph.route(inst.network.sites[0], inst.node_ids[-1])
    assert route is not None
    with pytest.raises(ValueError, match="read-only"):
        route.link_idx[0] = 0
    with pytest.raises(nx.NetworkXError, match="Frozen graph"):
        inst.network_graph.graph.add_edge("x", "y")


def test_shared_tables_cannot_be_changed(tmp_path):
    (tmp_path / "bks.csv").write_text("instance,objective,bound,status\nw,1.0,1.0,optimal\n")
    with pytest.raises(TypeError, match="read-only"):
        read_bks(tmp_path / "bks.csv")["x"] = None
    with pytest.raises(TypeError):
        RULE_KINDS["patch"]["patch_px"] = 14
    with pytest.raises(ValueError, match="read-only"):
        load_servegen().rate[0, 0] = 0.0
