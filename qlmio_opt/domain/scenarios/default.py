"""The ``default`` scenario: a metro cloud-edge deployment serving TextVQA-like requests.

Every knob of the window generator lives in :class:`Scenario`; ``DEFAULT`` is the scenario the
committed ``instances/window_*.json`` were generated from (``instances/README.md`` documents it
with its sources). A new scenario is a ``dataclasses.replace(DEFAULT, name=..., ...)`` registered
in :data:`qlmio_opt.domain.scenarios.SCENARIOS`.

Figures marked *assumption* are choices of this generator, informed by
``shared/data/calibration.md`` §3 (network) and §1 (models) but not published as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class EdgeOption:
    """An edge server kind: a device, the models it may run, and its concurrency choices."""

    device: str
    models: tuple[tuple[str, float], ...]  # (model key, relative weight)
    weight: float  # relative frequency of this kind among edge servers
    max_concurrency: tuple[int, ...]


@dataclass(frozen=True)
class CloudOption:
    """A cloud node kind: a device, the models it may run, and its concurrency choices."""

    device: str
    models: tuple[tuple[str, float], ...]
    weight: float
    max_concurrency: tuple[int, ...]


@dataclass(frozen=True)
class Scenario:
    """All knobs of one scenario. Ranges are inclusive ``(low, high)``."""

    name: str
    summary: str

    # -- window sizes -----------------------------------------------------------------------
    size_min: int = 20
    size_max: int = 1000
    size_grid: int = 100  # sizes are a log-spaced grid of this many values, shuffled per seed
    showcase_index: int | None = 42  # this window gets the grid size nearest showcase_size
    showcase_size: int = 175
    showcase_load: float | None = 1.3  # and this load factor (None: drawn like the others)

    # -- topology -----------------------------------------------------------------------------
    n_sites: tuple[int, int] = (2, 4)
    n_edges: tuple[int, int] = (3, 6)
    n_clouds: tuple[int, int] = (1, 2)
    site_kinds: tuple[tuple[str, float], ...] = (("5g", 0.6), ("wifi", 0.4))
    edge_options: tuple[EdgeOption, ...] = (
        EdgeOption(
            "jetson-agx-orin",
            (("qwen2-vl-2b", 0.45), ("qwen2.5-vl-3b", 0.35), ("internvl2-2b", 0.2)),
            0.4,
            (4, 8),
        ),
        EdgeOption(
            "jetson-agx-orin-32gb",
            (("qwen2-vl-2b", 0.45), ("qwen2.5-vl-3b", 0.35), ("internvl2-2b", 0.2)),
            0.25,
            (4,),
        ),
        EdgeOption(
            "rtx-4090",
            (
                ("qwen2.5-vl-7b", 0.35),
                ("qwen2-vl-7b", 0.3),
                ("internvl2-8b", 0.2),
                ("minicpm-v-2.6", 0.15),
            ),
            0.35,
            (8, 16),
        ),
    )
    cloud_options: tuple[CloudOption, ...] = (
        CloudOption("a100x4", (("qwen2-vl-72b", 0.5), ("qwen2.5-vl-72b", 0.5)), 0.5, (64,)),
        CloudOption("h100x2", (("qwen2-vl-72b", 0.5), ("qwen2.5-vl-72b", 0.5)), 0.5, (64, 96)),
    )

    # -- network (assumptions informed by calibration.md §3) ---------------------------------
    cell_uplink_mbps: tuple[float, float] = (100.0, 400.0)  # site -> core, aggregate per cell
    mec_mbps: tuple[float, float] = (100.0, 400.0)  # site -> its local edge server (MEC breakout)
    access_mbps_bounds: tuple[float, float] = (10.0, 1000.0)  # after load scaling
    mec_rtt_ms: tuple[tuple[str, tuple[float, float]], ...] = (
        ("5g", (6.0, 10.0)),
        ("wifi", (5.0, 8.0)),
    )
    core_extra_rtt_ms: tuple[float, float] = (1.0, 4.0)  # site->core RTT = MEC RTT + this
    backhaul_mbps: tuple[float, ...] = (1000.0, 2500.0, 10000.0)  # core -> edge, metro fibre
    backhaul_rtt_ms: tuple[float, float] = (2.0, 5.0)
    wan_mbps: tuple[float, float] = (100.0, 1000.0)  # core -> cloud, one link per cloud node
    wan_rtt_ms: tuple[float, float] = (20.0, 60.0)

    # -- load: the knob ------------------------------------------------------------------------
    # One load factor rho per window, log-uniform in load_range; each resource gets
    # rho * lognormal(0, load_jitter) as its target demand/capacity ratio:
    #   uplinks:      window_s = window bits / (rho_access * sum of site->core base
    #                 bandwidths), at least a per-window minimum drawn log-uniform in
    #                 window_s_min, at most window_s_max; then each site's uplink and its MEC
    #                 links are scaled so that site bits / (uplink * window_s) is
    #                 rho_access * lognormal(0, load_jitter) (clipped to access_mbps_bounds);
    #   edge memory:  memory_gb = (KV demand of 1/E of the window) / rho_memory, "auto" when
    #                 that exceeds the device's free memory, at least memory_floor_gb;
    #   WAN:          bandwidth = bits / (window_s * rho_wan) split over clouds, clipped to
    #                 wan_mbps.
    load_range: tuple[float, float] = (0.3, 3.0)
    load_jitter: float = 0.35
    window_s_min: tuple[float, float] = (0.25, 1.0)
    window_s_max: float = 8.0
    memory_floor_gb: float = 1.0

    # -- requests --------------------------------------------------------------------------------
    # the Azure LLM 2023 trace whose consecutive arrivals are used
    arrival_trace: Literal["conv", "code"] = "conv"
    caption_share: float = 0.04  # synthetic captioning requests (TextVQA has ~none)
    caption_prompts: tuple[str, ...] = (
        "Describe this image in detail.",
        "Write a one-sentence caption for this image.",
        "What is shown in this picture? Describe the scene.",
        "Give a short description of the image, including any visible text.",
    )
    # image aspect ratios (width / height) and their weights
    aspect_ratios: tuple[tuple[float, float], ...] = (
        (4 / 3, 0.35),
        (3 / 4, 0.2),
        (16 / 9, 0.2),
        (9 / 16, 0.1),
        (1.0, 0.1),
        (3 / 2, 0.05),
    )
    pixels_jitter: float = 0.1  # lognormal sigma on the image area
    bytes_per_pixel_median: float = 0.25  # JPEG: 1 MP ~ 0.25 MB
    bytes_per_pixel_sigma: float = 0.35
    bytes_per_pixel_bounds: tuple[float, float] = (0.05, 1.0)
    image_header_bytes: int = 600
    chars_per_token: float = 4.0  # prompt_tokens >= len(prompt) / this
    output_cap_ladder: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
    output_cap_headroom: float = 1.25  # cap = smallest ladder value >= headroom * sampled output
    min_quality_share: float = 0.03
    min_quality_values: tuple[float, ...] = (0.5, 0.55, 0.6)
    deadline_share: float = 0.03
    deadline_slack_s: tuple[float, float] = (1.5, 12.0)  # beyond the window's close

    # -- objective -------------------------------------------------------------------------------
    quality_floor_share: float = 1 / 3
    quality_weights: tuple[float, ...] = (5.0, 10.0, 20.0)
    latency_weight: float = 1.0
    latency_scale_s: float = 1.0
    quality_tolerance: float = 0.005
    deferral_penalty_s: float | None = 30.0


DEFAULT = Scenario(
    name="default",
    summary=(
        "Metro cloud-edge: 2-4 5G/Wi-Fi sites, 3-6 edge servers (Jetson AGX Orin with 2-3B "
        "models, RTX 4090 with 7-8B models), 1-2 cloud nodes with a 72B Qwen-VL; TextVQA "
        "prompts, ServeGen Qwen-VL request shapes, Azure conversation arrivals; 20-1000 "
        "requests per window from light load to overload."
    ),
)
