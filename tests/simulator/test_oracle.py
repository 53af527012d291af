"""The oracle predictor's three levels of knowledge, and the observable completion probability."""

from __future__ import annotations

import numpy as np
import pytest

from qlmio_opt.domain.instance import Image, Instance, Node, Request
from qlmio_opt.simulator import OraclePredictor, World, workload

NODES = (
    Node(id="edge", tier="edge", model="qwen2-vl-2b", device="jetson-agx-orin"),
    Node(id="cloud", tier="cloud", model="qwen2.5-vl-72b", device="h100x2", memory_gb=None),
)


def _twins(n: int, prompt: str = "What is written on the sign?") -> list[Request]:
    """``n`` requests that differ only in their id (so only in the world's hidden draws)."""
    return [
        Request(
            id=f"r{i}",
            site="s",
            arrival_s=0.0,
            task="ocr",
            prompt=prompt,
            prompt_tokens=20,
            images=(Image(width=1024, height=768, bytes=100_000),),
            max_output_tokens=256,
        )
        for i in range(n)
    ]


def test_observable_probability_is_the_mean_over_the_hidden_draw():
    world = World()
    models = [n.model for n in NODES]
    twins = _twins(4000)
    hidden = world.completion_prob(twins, models)
    observable = world.completion_prob(twins, models, observable=True)
    # every twin shows the same: one observable probability, many hidden ones
    assert np.ptp(observable, axis=0).max() < 1e-12
    assert np.ptp(hidden, axis=0).min() > 0.3
    standard_error = hidden.std(axis=0) / np.sqrt(len(twins))
    assert np.all(np.abs(hidden.mean(axis=0) - observable[0]) < 4 * standard_error)


def test_observable_probability_still_reads_the_prompt():
    world = World()
    models = [NODES[0].model]
    easy = world.completion_prob(_twins(1, "Is this a sign?"), models, observable=True)
    hard = world.completion_prob(_twins(1, "What number is on the sign?"), models, observable=True)
    assert easy[0, 0] > hard[0, 0]


def _window(n: int = 40) -> Instance:
    load = workload("azure-conv", 60, seed=0)
    body = dict(load.requests[3], arrival_s=0.5)
    requests = [dict(body, id=f"twin{i}") for i in range(n // 2)]
    requests += [dict(r, arrival_s=0.5) for r in load.requests[: n - len(requests)]]
    return Instance.from_dict({**load.base, "window_s": 2.0, "name": "w", "requests": requests})


@pytest.mark.parametrize("knowledge", ["probability", "observable"])
def test_weaker_oracles_average_the_draws_out(knowledge):
    instance = _window()
    world = World()
    outcome = OraclePredictor(world).predict(instance)
    weaker = OraclePredictor(world, knowledge=knowledge).predict(instance)
    ok = weaker.eligible
    twins = slice(0, 20)
    # outcomes are 0 or 1; probabilities lie strictly between
    assert set(np.unique(outcome.quality[ok])) <= {0.0, 1.0}
    assert np.all((weaker.quality[ok] > 0) & (weaker.quality[ok] < 1))
    # twins differ in their true answer lengths and speeds, not in their expected ones
    assert np.ptp(outcome.latency_s[twins][:, ok[0]], axis=0).max() > 0
    assert np.ptp(weaker.latency_s[twins][:, ok[0]], axis=0).max() < 1e-9
    assert weaker.source == f"oracle-{knowledge}"
    if knowledge == "observable":
        assert np.ptp(weaker.quality[twins], axis=0).max() < 1e-12
    else:
        assert np.ptp(weaker.quality[twins], axis=0).max() > 0.1
    # the expected answer length sits near the middle of the true ones
    true_out = outcome.components["output_tokens"][twins]
    mean_out = weaker.components["output_tokens"][twins][0]
    assert np.all(np.percentile(true_out, 10, axis=0) < mean_out)
    assert np.all(mean_out < np.percentile(true_out, 90, axis=0))


def test_unknown_knowledge_is_refused():
    with pytest.raises(ValueError, match="knowledge must be one of"):
        OraclePredictor(World(), knowledge="everything")
