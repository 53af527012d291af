"""Tables and models the predictor tests share, built once per test process.

Training is the slowest part of the suite, so every test module asks here instead of fitting
its own copy. These are plain cached functions rather than fixtures of a ``conftest.py`` in this
folder: such a conftest would be imported under the name ``conftest`` and shadow
``tests/conftest.py`` for the ``from conftest import ...`` of the test modules collected after
it. Callers must not change what they get (``copy.copy`` first).
"""

from __future__ import annotations

from functools import cache

from qlmio_opt.domain.instance import Instance
from qlmio_opt.domain.scenarios.generate import get_scenario
from qlmio_opt.predictors.learned import LearnedPredictor
from qlmio_opt.predictors.learned_latency import LearnedLatencyModel
from qlmio_opt.predictors.learned_load_latency import LoadLatencyModel
from qlmio_opt.predictors.learned_quality import LearnedQualityModel
from qlmio_opt.simulator.dataset import BenchData, bench_data, draw_bench_requests
from qlmio_opt.simulator.state_dataset import StateBenchData, state_bench_data

N_REQUESTS = 150
"""Requests of the shared bench table (9 nodes each: 1,350 rows, about 100 per split and
outcome on the smallest side)."""


@cache
def bench() -> BenchData:
    """The shared bench table: 150 requests of seed 5 on every node of the default scenario."""
    return bench_data(N_REQUESTS, seed=5)


@cache
def quality_model() -> LearnedQualityModel:
    """The default quality model (``random_state=0``) fitted on :func:`bench`."""
    return LearnedQualityModel(random_state=0).fit(bench().table)


@cache
def latency_model() -> LearnedLatencyModel:
    """A small latency model (20 trees per ensemble) fitted on :func:`bench`."""
    return LearnedLatencyModel(max_iter=20, random_state=0).fit(bench().table)


@cache
def trained_predictor() -> LearnedPredictor:
    """``LearnedPredictor().fit(bench())``: the default quality and latency models."""
    return LearnedPredictor().fit(bench())


@cache
def state_bench() -> StateBenchData:
    """The shared state table: 30 requests of seed 5 on every node, both engines (840 rows)."""
    return state_bench_data(30, seed=5)


@cache
def load_latency_model() -> LoadLatencyModel:
    """A small latency model under load (20 trees, leaves of 10 rows) fitted on
    :func:`state_bench`."""
    return LoadLatencyModel(max_iter=20, min_samples_leaf=10, random_state=0).fit(
        state_bench().table
    )


def bench_instance(data: BenchData, split: str | None = None) -> Instance:
    """The bench requests (all, or one split) on the bench nodes, as one instance.

    The table has no per-image sizes, so the request bodies are drawn again exactly as
    ``bench_data`` drew them.
    """
    reqs = draw_bench_requests(get_scenario(data.scenario), data.n_requests, data.seed)
    ids = data.table["request"].to_numpy()[:: len(data.nodes)]
    assert [r.id for r in reqs] == list(ids)
    if split is not None:
        keep = set(data.table.loc[data.table["split"] == split, "request"])
        reqs = [r for r in reqs if r.id in keep]
    links = [
        {"id": f"l{j}", "from": "s0", "to": n.id, "bandwidth_mbps": 100.0, "rtt_ms": 10.0}
        for j, n in enumerate(data.nodes)
    ]
    return Instance.from_dict(
        {
            "format": "qlmio-opt/instance",
            "version": 1,
            "name": "bench",
            "window_s": 1.0,
            "nodes": [n.model_dump(mode="json", exclude_unset=True) for n in data.nodes],
            "network": {"sites": ["s0"], "links": links},
            "requests": [r.model_dump(mode="json", exclude_unset=True) for r in reqs],
        }
    )
