"""Write tests/data/invalid/: one file per validation rule, broken from base_valid.json.

Run from anywhere: ``python tests/data/make_invalid.py``. The expected message of each file is in
``invalid/expected.json`` (a substring of the error the file must produce).
"""

import copy
import json
from pathlib import Path

HERE = Path(__file__).parent
BASE = json.loads((HERE / "base_valid.json").read_text())
OUT = HERE / "invalid"


def variant(edit):
    data = copy.deepcopy(BASE)
    edit(data)
    return json.dumps(data, indent=1)


def setter(path, value):
    def edit(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def deleter(path):
    def edit(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


def rename(path, old, new):
    def edit(data):
        node = data
        for key in path:
            node = node[key]
        node[new] = node.pop(old)

    return edit


def overrides(rows, cols, value=0.5, name="quality"):
    return setter(["overrides"], {name: [[value] * cols for _ in range(rows)]})


def unreachable(data):
    data["nodes"].append(
        {"id": "edge-9", "tier": "edge", "model": "qwen2-vl-2b", "device": "jetson-agx-orin"}
    )


def text_only(data):
    data["nodes"][0]["modalities"] = ["text"]
    data["catalog"] = {"models": {"qwen2-vl-72b": {"modalities": ["text"]}}}


CASES = {
    "not_json.json": ("this is not JSON\n", "not valid JSON: Expecting value (line 1, column 1)"),
    "truncated.json": (
        json.dumps(BASE, indent=1)[:700],
        "not valid JSON: Unterminated string starting at (line 37, column 5) (the file looks truncated)",
    ),
    "empty.json": ("", "file is empty"),
    "top_level_list.json": ("[1, 2, 3]\n", "must be a JSON object (got a list)"),
    "wrong_format.json": (
        variant(setter(["format"], "qlmio-opt/window")),
        'format: must be "qlmio-opt/instance" (got "qlmio-opt/window")',
    ),
    "wrong_version.json": (
        variant(setter(["version"], 2)),
        "version: unsupported version 2; this qlmio-opt reads version 1",
    ),
    "missing_field.json": (variant(deleter(["window_s"])), "window_s: required field is missing"),
    "unknown_field.json": (
        variant(rename(["network", "links", 1], "bandwidth_mbps", "bandwith_mbps")),
        'network.links[1] (link "cell-0/core").bandwith_mbps: unknown field; did you mean "bandwidth_mbps"?',
    ),
    "nan_value.json": (
        variant(setter(["requests", 1, "arrival_s"], float("nan"))),
        'requests[1] (request "r1").arrival_s: must be a finite number (got NaN)',
    ),
    "infinity_value.json": (
        variant(setter(["network", "links", 2, "bandwidth_mbps"], float("inf"))),
        'network.links[2] (link "wan").bandwidth_mbps: must be a finite number (got Infinity)',
    ),
    "negative_width.json": (
        variant(setter(["requests", 2, "images", 0, "width"], -3)),
        'requests[2] (request "r2").images[0].width: must be >= 1; got -3',
    ),
    "absurd_width.json": (
        variant(setter(["requests", 0, "images", 0, "width"], 10_000_000)),
        'requests[0] (request "r0").images[0].width: must be <= 100000 (an implausibly large value); got 10000000',
    ),
    "absurd_bandwidth.json": (
        variant(setter(["network", "links", 0, "bandwidth_mbps"], 1e12)),
        'network.links[0] (link "cell-0/edge-0").bandwidth_mbps: must be <= 1e+07 (an implausibly large value); got 1e+12',
    ),
    "zero_bytes.json": (
        variant(setter(["requests", 1, "images", 0, "bytes"], 0)),
        'requests[1] (request "r1").images[0].bytes: must be >= 1; got 0',
    ),
    "string_number.json": (
        variant(setter(["requests", 0, "prompt_tokens"], "9")),
        'requests[0] (request "r0").prompt_tokens: must be an integer (got "9")',
    ),
    "fractional_tokens.json": (
        variant(setter(["requests", 0, "max_output_tokens"], 64.5)),
        'requests[0] (request "r0").max_output_tokens: must be an integer (got 64.5)',
    ),
    "negative_memory.json": (
        variant(setter(["nodes", 0, "memory_gb"], -2.0)),
        'nodes[0] (node "edge-0").memory_gb: must be a number of GB in (0, 100000], null (unbounded) or "auto" (device memory less weights); got -2',
    ),
    "active_requests_replaced_by_state.json": (
        variant(setter(["nodes", 0, "active_requests"], 2)),
        'nodes[0] (node "edge-0").active_requests: unknown field',
    ),
    "unknown_engine_scheduler.json": (
        variant(setter(["nodes", 0, "engine"], {"scheduler": "prefill-first"})),
        "nodes[0] (node \"edge-0\").engine.scheduler: must be 'chunked-prefill' or 'serial-prefill'",
    ),
    "state_output_beyond_maximum.json": (
        variant(
            setter(
                ["nodes", 0, "state"],
                {"running": [{"prompt_tokens": 10, "output_tokens": 65, "max_output_tokens": 64}]},
            )
        ),
        'nodes[0] (node "edge-0").state.running[0].output_tokens: 65 output tokens exceed',
    ),
    "state_unknown_task.json": (
        variant(
            setter(
                ["nodes", 0, "state"],
                {"waiting": [{"task": "poetry", "prompt_tokens": 10, "max_output_tokens": 64}]},
            )
        ),
        'nodes[0] (node "edge-0").state.waiting[0].task: unknown task "poetry"',
    ),
    "duplicate_request_id.json": (
        variant(setter(["requests", 2, "id"], "r0")),
        'requests[2].id: duplicate request id "r0" (first used at requests[0])',
    ),
    "duplicate_node_id.json": (
        variant(setter(["nodes", 1, "id"], "edge-0")),
        'nodes[1].id: duplicate node id "edge-0" (first used at nodes[0])',
    ),
    "duplicate_link_id.json": (
        variant(setter(["network", "links", 1, "id"], "wan")),
        'network.links[2].id: duplicate link id "wan" (first used at network.links[1])',
    ),
    "unknown_site.json": (
        variant(setter(["requests", 1, "site"], "cell-9")),
        'requests[1] (request "r1").site: unknown site "cell-9"',
    ),
    "unknown_model.json": (
        variant(setter(["nodes", 0, "model"], "qwen9-vl-1t")),
        'nodes[0] (node "edge-0").model: unknown model "qwen9-vl-1t"',
    ),
    "unknown_device.json": (
        variant(setter(["nodes", 1, "device"], "tpu-v9")),
        'nodes[1] (node "cloud").device: unknown device "tpu-v9"',
    ),
    "unknown_task.json": (
        variant(setter(["requests", 2, "task"], "poetry")),
        'requests[2] (request "r2").task: unknown task "poetry"',
    ),
    "unreachable_node.json": (variant(unreachable), 'nodes[2] (node "edge-9"): unreachable'),
    "arrival_after_window.json": (
        variant(setter(["requests", 2, "arrival_s"], 2.5)),
        "arrival 2.5 s is after the window's end (window_s = 2)",
    ),
    "overrides_wrong_rows.json": (
        variant(overrides(2, 2)),
        "overrides.quality: has 2 rows but the instance has 3 requests",
    ),
    "overrides_wrong_columns.json": (
        variant(overrides(3, 3)),
        'overrides.quality[0] (request "r0"): has 3 entries but the instance has 2 nodes',
    ),
    "override_out_of_range.json": (
        variant(overrides(3, 2, 1.3)),
        "overrides.quality[0][0]: must be <= 1 (an implausibly large value); got 1.3",
    ),
    "bad_tier.json": (
        variant(setter(["nodes", 0, "tier"], "fog")),
        "nodes[0] (node \"edge-0\").tier: must be 'edge' or 'cloud' (got \"fog\")",
    ),
    "bad_objective_mode.json": (
        variant(setter(["objective", "mode"], "fastest")),
        "objective.mode: must be 'weighted' or 'quality_floor' (got \"fastest\")",
    ),
    "target_with_weighted.json": (
        variant(setter(["objective", "quality_target"], 0.8)),
        'objective: quality_target applies only to mode "quality_floor"',
    ),
    "model_does_not_fit.json": (
        variant(lambda d: d["nodes"][0].update(model="qwen2-vl-7b", device="jetson-orin-nano")),
        'nodes[0] (node "edge-0").model: model "qwen2-vl-7b" (15.4 GB of weights) does not fit on device "jetson-orin-nano"',
    ),
    "bad_inline_catalog.json": (
        variant(setter(["catalog"], {"models": {"qwen2-vl-2b": {"weights_gb": -1}}})),
        "catalog.models.qwen2-vl-2b.weights_gb",
    ),
    "images_but_text_only_nodes.json": (
        variant(text_only),
        'requests[0] (request "r0").images: request has 1 image(s) but no node reachable from site "cell-0" accepts images',
    ),
    "self_loop_link.json": (
        variant(setter(["network", "links", 0, "to"], "cell-0")),
        'network.links[0] (link "cell-0/edge-0").to: link joins "cell-0" to itself',
    ),
    "min_quality_out_of_range.json": (
        variant(setter(["requests", 1, "min_quality"], 1.5)),
        'requests[1] (request "r1").min_quality: must be <= 1',
    ),
    "no_nodes.json": (variant(setter(["nodes"], [])), "nodes: must not be empty"),
    "site_named_like_node.json": (
        variant(setter(["network", "sites"], ["cell-0", "cloud"])),
        'network.sites[1]: site "cloud" has the same name as a node',
    ),
    "id_control_character.json": (
        variant(setter(["requests", 1, "id"], "r1\x1b[31m")),
        "requests[1].id: must not contain control characters (found '\\x1b' at position 2)",
    ),
    "id_surrounding_whitespace.json": (
        variant(setter(["network", "links", 2, "id"], "wan ")),
        'network.links[2] (link "wan ").id: must not start or end with whitespace',
    ),
    "id_blank.json": (
        variant(setter(["nodes", 1, "id"], "   ")),
        'nodes[1] (node "   ").id: must not be blank (only whitespace)',
    ),
    "latency_scale_too_small.json": (
        variant(setter(["objective", "latency_scale_s"], 1e-300)),
        "objective.latency_scale_s: must be >= 1e-06; got 1e-300",
    ),
    "bandwidth_too_small.json": (
        variant(setter(["network", "links", 0, "bandwidth_mbps"], 1e-300)),
        'network.links[0] (link "cell-0/edge-0").bandwidth_mbps: must be >= 0.001; got 1e-300',
    ),
    "inline_kv_bytes_absurd.json": (
        variant(setter(["catalog"], {"models": {"qwen2-vl-2b": {"kv_bytes_per_token": 1e300}}})),
        "catalog.models.qwen2-vl-2b.kv_bytes_per_token: must be an integer in [1, 100000000] "
        "(got 1e+300)",
    ),
    "inline_throughput_tiny.json": (
        variant(setter(["catalog"], {"devices": {"a100x4": {"prefill_tflops": 1e-300}}})),
        "catalog.devices.a100x4.prefill_tflops: must be a number in [0.001, 1e+06] (got 1e-300)",
    ),
    "inline_image_tokens_absurd.json": (
        variant(
            setter(
                ["catalog"],
                {"models": {"qwen2-vl-2b": {"image_tokens": {"rule": "fixed", "tokens": 10**7}}}},
            )
        ),
        "catalog.models.qwen2-vl-2b.image_tokens.tokens: must be an integer in [1, 100000] "
        "(got 10000000)",
    ),
    "inline_max_tiles_absurd.json": (
        variant(
            setter(
                ["catalog"],
                {
                    "models": {
                        "qwen2-vl-2b": {
                            "image_tokens": {
                                "rule": "tiles",
                                "tile_px": 448,
                                "tokens_per_tile": 256,
                                "max_tiles": 100_000,
                            }
                        }
                    }
                },
            )
        ),
        "catalog.models.qwen2-vl-2b.image_tokens.max_tiles: must be an integer in [1, 1024] "
        "(got 100000)",
    ),
    "inline_catalog_key_control.json": (
        variant(setter(["catalog"], {"models": {"my\nmodel": {}}})),
        "catalog.models: entry key 'my\\nmodel': must not contain control characters",
    ),
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    expected = {}
    for name, (text, message) in CASES.items():
        (OUT / name).write_text(text)
        expected[name] = message
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
