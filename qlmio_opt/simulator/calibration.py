"""Check the world against the published figures it is calibrated to.

* :func:`quality_calibration`: per (model, task), the completion rate the world draws for
  requests of that task (its TextVQA prompts, one image of the task's reference size) against
  the catalog's published accuracy.
* :func:`speed_calibration`: per published throughput anchor, the speed a simulated run of a
  model of the anchor's size reaches on an idle node of the anchor's device (decode: one stream
  of 256 tokens after a 16-token prompt; prefill: a 2,048-token prompt), against the figure.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from qlmio_opt.domain.catalog import Catalog, DeviceSpec, Measurement
from qlmio_opt.domain.instance import Image, Node, Request
from qlmio_opt.simulator.engine import NodeJobs, serve_node
from qlmio_opt.simulator.world import World, WorldConfig


def _task_requests(world: World, task: str, n: int, rng: np.random.Generator) -> list[Request]:
    from qlmio_opt.domain.scenarios.default import DEFAULT
    from qlmio_opt.domain.traces import load_textvqa_prompts

    spec = world.catalog.task(task)
    prompts = load_textvqa_prompts()
    pool = prompts.loc[prompts["task"] == task, "prompt"].to_numpy()
    if task == "captioning" or len(pool) < 5:
        pool = np.array(DEFAULT.caption_prompts if task == "captioning" else prompts["prompt"])
    chosen = pool[rng.integers(0, len(pool), n)]
    image = Image(width=spec.reference_width, height=spec.reference_height, bytes=200_000)
    return [
        Request(
            id=f"cal-{task}-{i}",
            site="s",
            arrival_s=0.0,
            task=task,
            prompt=str(p),
            prompt_tokens=max(1, len(str(p)) // 4),
            images=(image,),
            max_output_tokens=512,
        )
        for i, p in enumerate(chosen)
    ]


def quality_calibration(
    world: World | None = None, *, requests_per_task: int = 20_000, seed: int = 0
) -> pd.DataFrame:
    """Simulated against published completion per (model, task).

    Columns: ``model``, ``task``, ``published``, ``simulated`` (share of drawn outcomes),
    ``expected`` (mean true probability) and ``error_pts`` (simulated - published, points).
    """
    world = world or World()
    rng = np.random.default_rng(seed)
    models = list(world.catalog.models)
    rows = []
    for task in world.catalog.tasks:
        requests = _task_requests(world, task, requests_per_task, rng)
        prob = world.completion_prob(requests, models)
        done = world.completed(requests, models, prob)
        for j, model in enumerate(models):
            published = world.catalog.model(model).accuracy[task]
            rows.append(
                {
                    "model": model,
                    "task": task,
                    "published": published,
                    "simulated": float(done[:, j].mean()),
                    "expected": float(prob[:, j].mean()),
                    "error_pts": 100.0 * (float(done[:, j].mean()) - published),
                }
            )
    return pd.DataFrame(rows)


def _probe_catalog(catalog: Catalog, device: str, weights_gb: float, params_b: float) -> Catalog:
    base = catalog.model(next(iter(catalog.models)))
    probe = replace(
        base, key="probe", weights_gb=weights_gb, llm_params_b=params_b, params_b=params_b
    )
    return Catalog(
        models={**catalog.models, "probe": probe},
        devices=catalog.devices,
        tasks=catalog.tasks,
        sources=catalog.sources,
    )


def speed_calibration(world: World | None = None, *, runs: int = 200) -> pd.DataFrame:
    """Simulated against published decode / prefill speeds, one row per published anchor.

    Columns: ``device``, ``model`` (as measured), ``metric``, ``published``, ``simulated``
    (mean over ``runs`` runs), ``roofline`` (the analytic predictor's figure), ``kind``
    (``anchor``, or ``lower bound`` for runs known to be slower than a serving engine, which the
    simulation must exceed) and ``error`` (simulated / published - 1).
    """
    world = world or World()
    rows = [
        _anchor_row(world, key, device, m, runs)
        for key, device in world.catalog.devices.items()
        for m in device.measurements
        if not m.outlier
    ]
    return pd.DataFrame(rows)


def _anchor_row(
    world: World, key: str, device: DeviceSpec, m: Measurement, runs: int
) -> dict[str, Any]:
    """One published figure against ``runs`` simulated runs of a model of its size."""
    catalog = _probe_catalog(world.catalog, key, m.weights_gb, m.model_params_b)
    probe_world = World(catalog, replace(world.config))
    probe = catalog.model("probe")
    decode = m.metric == "decode_tok_s"
    simulated = _simulated_speed(probe_world, key, m.model, runs, decode=decode)
    roofline = device.decode_tok_s(probe) if decode else device.prefill_tok_s(probe)
    return {
        "device": key,
        "model": m.model,
        "engine": m.engine,
        "metric": m.metric,
        "published": m.value,
        "simulated": simulated,
        "roofline": roofline,
        "kind": "lower bound" if m.lower_bound else "anchor",
        "error": simulated / m.value - 1.0,
    }


def _simulated_speed(world: World, device: str, model: str, runs: int, *, decode: bool) -> float:
    """Mean decode (or prefill) speed of the probe model on an idle node of ``device``, over
    ``runs`` requests: decode, one stream of 256 tokens after a 16-token prompt; prefill, a
    2,048-token prompt."""
    tokens, prompt = (256, 16) if decode else (1, 2048)
    node = Node(id="n", tier="edge", model="probe", device=device)
    speed = world.speeds(node)
    requests = [
        Request(
            id=f"{device}-{model}-{i}",
            site="s",
            arrival_s=0.0,
            task="general-vqa",
            prompt_tokens=prompt,
            max_output_tokens=tokens,
        )
        for i in range(runs)
    ]
    truth = world.pairs(requests, [node])
    measured = []
    for i in range(runs):
        times = serve_node(
            NodeJobs(
                arrive_s=np.zeros(1),
                compute_s=truth.compute_s[i : i + 1, 0],
                tokens=np.full(1, float(tokens)),
                kv_reserve_gb=truth.kv_reserve_gb[i : i + 1, 0],
                kv_read_gb=truth.kv_read_gb[i : i + 1, 0],
            ),
            concurrency=1,
            memory_gb=np.inf,
            weights_gb=speed.weights_gb,
            decode_tok_s=speed.decode_tok_s,
        )
        if decode:
            measured.append(tokens / (times.finish_s[0] - times.prefill_end_s[0]))
        else:
            measured.append(prompt / (times.prefill_end_s[0] - times.admit_s[0]))
    return float(np.mean(measured))


__all__ = ["WorldConfig", "quality_calibration", "speed_calibration"]
