"""The instance: one window of requests, the servers and the network, and the objective.

Types are immutable pydantic models; :func:`qlmio_opt.domain.io.read_instance` turns a JSON file
into an :class:`Instance` and every problem into an :class:`~qlmio_opt.domain.errors.InputError`
naming the file, the JSON path and the request. Cross-field rules (unique ids, known sites, models
and devices, reachability, override shapes) run in :meth:`Instance._check_consistency` so that no
invalid instance can exist, however it was built.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)
from pydantic.json_schema import JsonDict

from qlmio_opt.domain.catalog import Catalog, default_catalog
from qlmio_opt.domain.catalog.specs import DEFAULT_MAX_BATCHED_TOKENS
from qlmio_opt.domain.errors import InputError, Issue
from qlmio_opt.domain.frozen import freeze
from qlmio_opt.domain.network import LinkSpec, NetworkGraph
from qlmio_opt.domain.types import (
    ID_PATTERN,
    BandwidthMbps,
    BatchedTokens,
    Bytes,
    Concurrency,
    DemandGB,
    Id,
    LatencyScaleSeconds,
    Load,
    MemoryGB,
    NonNegSeconds,
    OutputTokens,
    Pixels,
    PositiveSeconds,
    Probability,
    RttMs,
    Str,
    Text,
    Tokens,
    Weight,
)
from qlmio_opt.domain.validation import validate_model

INSTANCE_FORMAT: Final = "qlmio-opt/instance"
INSTANCE_VERSION: Final = 1
MODALITIES = ("text", "image")


class Frozen(BaseModel):
    """Base of every data type: immutable, no unknown fields, finite numbers only."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Image(Frozen):
    """One image attached to a request."""

    width: Pixels
    height: Pixels
    bytes: Bytes = Field(description="Encoded size as uploaded (JPEG/PNG bytes).")


class Request(Frozen):
    """One multimodal request of the window."""

    id: Id
    site: Id = Field(description="The site the request originates from.")
    arrival_s: NonNegSeconds = Field(description="Arrival time, seconds from the window's start.")
    task: Id = Field(description="Task family (ocr, document, chart, general-vqa, reasoning, ...).")
    prompt: Text | None = None
    prompt_tokens: Tokens = Field(description="Text tokens of the prompt (images excluded).")
    images: tuple[Image, ...] = ()
    max_output_tokens: OutputTokens
    min_quality: Probability | None = Field(
        default=None, description="Floor on the predicted quality of the chosen node."
    )
    deadline_s: PositiveSeconds | None = Field(
        default=None, description="Latency budget in seconds from the request's arrival."
    )

    @property
    def upload_bytes(self) -> int:
        """Bytes sent to the chosen node: images plus the prompt (4 bytes per token)."""
        return sum(im.bytes for im in self.images) + 4 * self.prompt_tokens


ENGINE_SCHEDULERS = ("chunked-prefill", "serial-prefill")


class Engine(Frozen):
    """How a node's serving engine schedules prefill and decoding.

    ``chunked-prefill``: every step batches one token of each decoding request and chunks of
    waiting prompts up to ``max_batched_tokens`` (vLLM V1, SGLang; the default).
    ``serial-prefill``: prompts (with their images) are prefilled one at a time and decoding
    pauses while they are (vLLM V0's prefill-first scheduling).
    """

    scheduler: Literal["chunked-prefill", "serial-prefill"] = "chunked-prefill"
    max_batched_tokens: BatchedTokens | None = Field(
        default=None,
        description="Tokens per step with chunked prefill; null = the device's catalog value.",
    )


class InFlight(Frozen):
    """A request a node is serving or holding, as a scheduler knows it: its known token counts
    and how many output tokens it has streamed so far (its remaining output is unknown)."""

    task: Id | None = Field(
        default=None, description="Task family (for the expected output length)."
    )
    prompt_tokens: Tokens
    image_tokens: Tokens = Field(default=0, description="Image tokens on this node's model.")
    output_tokens: Tokens = Field(default=0, description="Output tokens generated so far.")
    max_output_tokens: OutputTokens


class NodeState(Frozen):
    """A node's live state, as an engine's metrics and a scheduler's records report it.

    ``running`` requests are admitted (prefilling, or decoding once they have output tokens);
    ``waiting`` ones are queued for admission. ``kv_used_gb`` is the KV-cache memory in use
    (vLLM's ``kv_cache_usage_perc`` times its cache size); null = estimated from the running
    requests' reservations. ``prefill_load`` is the node's recent prefill utilisation, which the
    requests the window places there will decode under.
    """

    running: tuple[InFlight, ...] = ()
    waiting: tuple[InFlight, ...] = ()
    kv_used_gb: DemandGB | None = None
    prefill_load: Load | None = Field(
        default=None,
        description="Seconds of prefill work per second the node has been receiving lately (the "
        "scheduler's own measure of what it sent); null = none expected.",
    )


class Node(Frozen):
    """A server: an edge box or a cloud deployment running one model on one device."""

    id: Id
    tier: Literal["edge", "cloud"]
    model: Id = Field(description="Key into the model catalog (or the instance's inline catalog).")
    device: Id = Field(
        description="Key into the device catalog (or the instance's inline catalog)."
    )
    memory_gb: Annotated[MemoryGB | Literal["auto"] | None, BeforeValidator(_memory_gb)] = Field(
        default="auto",
        description='GPU memory free for requests after weights; null = unbounded; "auto" = the '
        "device's usable memory less the model's weights.",
    )
    max_concurrency: Concurrency | None = Field(
        default=None, description="Requests served at once; null = the device's default."
    )
    modalities: tuple[Literal["text", "image"], ...] | None = Field(
        default=None, description="Input kinds accepted; null = the model's."
    )
    engine: Engine | None = Field(
        default=None,
        description="How the node's serving engine schedules work; null = chunked prefill with "
        "the device's token budget (what vLLM V1 and SGLang run by default).",
    )
    state: NodeState | None = Field(
        default=None,
        description="What the node is serving and holding when the window is decided, as its "
        "engine and the scheduler know it; null = idle.",
    )


@dataclass(frozen=True)
class EngineSettings:
    """A node's serving engine with the catalog's defaults filled in."""

    scheduler: str
    max_batched_tokens: int

    @property
    def chunked(self) -> bool:
        return self.scheduler == "chunked-prefill"


def _engine_settings(node: Node, device: Any) -> EngineSettings:
    engine = node.engine or Engine()
    budget = engine.max_batched_tokens
    if budget is None:
        budget = device.engine_token_budget if device is not None else DEFAULT_MAX_BATCHED_TOKENS
    return EngineSettings(engine.scheduler, int(budget))


def _state_memory_gb(state: NodeState | None, kv_bytes_per_token: int) -> float:
    """KV memory a node's state holds: the engine's figure for the running requests (or their
    reservations, prompt + image + maximum output tokens, when it gives none), plus the
    reservations of the waiting ones, which are admitted before the window's requests."""
    if state is None:
        return 0.0

    def reserved(items: tuple[InFlight, ...]) -> float:
        tokens = sum(r.prompt_tokens + r.image_tokens + r.max_output_tokens for r in items)
        return tokens * kv_bytes_per_token / 1e9

    running = state.kv_used_gb if state.kv_used_gb is not None else reserved(state.running)
    return running + reserved(state.waiting)


def _check_state(node: Node, where: str, catalog: Catalog, issues: list[Issue]) -> None:
    """Every in-flight request of a node's state names a known task and has not generated
    more than its maximum output."""
    if node.state is None:
        return
    for kind in ("running", "waiting"):
        for k, item in enumerate(getattr(node.state, kind)):
            path = f"{where}.state.{kind}[{k}]"
            if item.task is not None and item.task not in catalog.tasks:
                issues.append(
                    Issue(
                        f"{path}.task",
                        f'unknown task "{item.task}"; known tasks are {sorted(catalog.tasks)}',
                    )
                )
            if item.output_tokens > item.max_output_tokens:
                issues.append(
                    Issue(
                        f"{path}.output_tokens",
                        f"{item.output_tokens} output tokens exceed max_output_tokens "
                        f"{item.max_output_tokens}",
                    )
                )


def _memory_gb(value: Any) -> Any:
    """One clear message for the three accepted forms instead of one per union member."""
    if value is None or value == "auto":
        return value
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0 < value <= 100_000:
        shown = json.dumps(value) if not isinstance(value, float) else f"{value:g}"
        raise ValueError(
            'must be a number of GB in (0, 100000], null (unbounded) or "auto" (device memory less '
            f"weights); got {shown}"
        )
    return float(value)


class Link(Frozen):
    id: Id
    from_: Id = Field(alias="from")
    to: Id
    bandwidth_mbps: BandwidthMbps
    rtt_ms: RttMs

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class Network(Frozen):
    sites: tuple[Id, ...] = Field(min_length=1)
    links: tuple[Link, ...] = Field(min_length=1)


class Objective(Frozen):
    """How quality and latency trade.

    ``weighted`` minimises
    ``sum_r latency_weight * L[r] / latency_scale_s - quality_weight * Q[r]``.
    ``quality_floor`` minimises ``sum_r L[r]`` subject to ``mean_r Q[r] >= quality_target`` over
    the placed requests; a null target compares each placed request with its own reference
    quality ``ref_r``, its mean quality over the cloud nodes allowed to take it:
    ``sum_r (Q[r] - ref_r + quality_tolerance) >= 0``.
    A request may be deferred to the next window at ``deferral_penalty_s`` (in latency seconds)
    when that is not null.
    """

    mode: Literal["weighted", "quality_floor"] = "weighted"
    latency_weight: Weight = 1.0
    quality_weight: Weight = 10.0
    latency_scale_s: LatencyScaleSeconds = 1.0
    quality_target: Probability | None = None
    quality_tolerance: Probability = 0.005
    deferral_penalty_s: PositiveSeconds | None = None

    @model_validator(mode="after")
    def _mode_fields(self) -> Objective:
        if self.mode == "weighted" and self.quality_target is not None:
            raise ValueError('quality_target applies only to mode "quality_floor"')
        return self


class Overrides(Frozen):
    """Explicit per-pair matrices indexed ``[request][node]`` in file order.

    A null latency marks the pair as not allowed. Given values are final: the predictors are not
    consulted for them and no congestion or waiting term is added.
    """

    latency_s: tuple[tuple[PositiveSeconds | None, ...], ...] | None = None
    quality: tuple[tuple[Probability, ...], ...] | None = None
    memory_gb: tuple[tuple[DemandGB, ...], ...] | None = None


# Entry keys follow the id rule (nodes and requests refer to them); the catalog builder checks
# them with a message that does not print a control character raw, the schema with this.
_ENTRY_KEYS: JsonDict = {"propertyNames": {"pattern": ID_PATTERN}}
# The entries as given, read-only all the way down (FrozenDicts and tuples): the resolved catalog
# was built from them, so changing them afterwards would make the two disagree.
_Entries = Annotated[dict[Str, dict[Str, Any]], AfterValidator(freeze)]


class CatalogEntries(Frozen):
    """Catalog entries defined or overridden inline (same fields as the shipped TOML files)."""

    models: _Entries = Field(default={}, validate_default=True, json_schema_extra=_ENTRY_KEYS)
    devices: _Entries = Field(default={}, validate_default=True, json_schema_extra=_ENTRY_KEYS)
    tasks: _Entries = Field(default={}, validate_default=True, json_schema_extra=_ENTRY_KEYS)


class Instance(Frozen):
    """One window to assign. Build it with :func:`qlmio_opt.domain.io.read_instance` or
    :meth:`Instance.from_dict`; both run every cross-field check."""

    format: Literal["qlmio-opt/instance"] = INSTANCE_FORMAT
    version: Literal[1] = INSTANCE_VERSION
    name: Id
    description: Text | None = None
    window_s: PositiveSeconds = Field(
        description="Window length; a link carries bandwidth x window_s."
    )
    objective: Objective = Objective()
    catalog: CatalogEntries | None = None
    nodes: tuple[Node, ...] = Field(min_length=1)
    network: Network
    requests: tuple[Request, ...] = ()
    overrides: Overrides | None = None

    _catalog: Catalog = PrivateAttr()
    _graph: NetworkGraph = PrivateAttr()
    _node_memory_gb: tuple[float, ...] = PrivateAttr()
    _node_concurrency: tuple[int, ...] = PrivateAttr()
    _node_engines: tuple[EngineSettings, ...] = PrivateAttr()
    _node_held_gb: tuple[float, ...] = PrivateAttr()

    @classmethod
    def from_dict(
        cls, data: Any, *, catalog: Catalog | None = None, source: str | None = None
    ) -> Instance:
        """Validate plain data (as parsed from JSON) into an instance.

        Raises
        ------
        InputError
            Listing every problem with its JSON path.
        """
        return validate_model(cls, data, source=source, context={"catalog": catalog})

    def __eq__(self, other: object) -> bool:
        # equal data means equal instances; the resolved catalog and graph follow from it
        return isinstance(other, Instance) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # equal by data, which holds mappings

    # -- derived, resolved once at validation -------------------------------------------------
    @property
    def resolved_catalog(self) -> Catalog:
        """The catalog this instance was validated against, with its inline entries merged."""
        return self._catalog

    @property
    def network_graph(self) -> NetworkGraph:
        """The routes between the sites and the nodes (computed once, at validation)."""
        return self._graph

    @property
    def node_memory_gb(self) -> np.ndarray:
        """Free memory per node for requests (GB); ``inf`` where unbounded."""
        return np.array(self._node_memory_gb, dtype=float)

    @property
    def node_engines(self) -> tuple[EngineSettings, ...]:
        """Each node's serving engine, with the catalog's defaults filled in."""
        return self._node_engines

    @property
    def node_held_gb(self) -> np.ndarray:
        """KV memory each node's state holds (running requests, and waiting ones, which are
        admitted before the window's); already subtracted from :attr:`node_memory_gb`."""
        return np.array(self._node_held_gb, dtype=float)

    @property
    def node_concurrency(self) -> np.ndarray:
        """Requests each node serves at once (the device's default where not given)."""
        return np.array(self._node_concurrency, dtype=np.int64)

    @property
    def request_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.requests)

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes)

    @property
    def link_ids(self) -> tuple[str, ...]:
        return tuple(k.id for k in self.network.links)

    def replace(self, **changes: Any) -> Instance:
        """A copy with some top-level fields changed, validated again."""
        data = self.to_dict()
        for key, value in changes.items():
            data[key] = (
                value.model_dump(mode="json", by_alias=True, exclude_unset=True)
                if isinstance(value, BaseModel)
                else value
            )
        return Instance.from_dict(data, catalog=self._catalog)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: the fields that were given (an explicit null stays null)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return {"format": self.format, "version": self.version, **data}

    # -- cross-field rules ----------------------------------------------------------------------
    @model_validator(mode="after")
    def _check_consistency(self, info: ValidationInfo) -> Instance:
        context = info.context or {}
        base = context.get("catalog") or default_catalog()
        issues: list[Issue] = []
        catalog = self._resolve_catalog(base, issues)
        self._check_unique_ids(issues)
        self._check_requests(catalog, issues)
        self._resolve_nodes(catalog, issues)
        graph = self._check_network(catalog, issues)
        self._check_overrides(issues)
        if issues:
            raise InputError(issues)
        self._catalog = catalog
        self._graph = graph
        return self

    def _resolve_catalog(self, base: Catalog, issues: list[Issue]) -> Catalog:
        if self.catalog is None:
            return base
        try:
            return base.with_entries(
                models=self.catalog.models,
                devices=self.catalog.devices,
                tasks=self.catalog.tasks,
                path_prefix="catalog.",
            )
        except InputError as err:
            issues.extend(err.issues)
            return base

    def _check_unique_ids(self, issues: list[Issue]) -> None:
        for label, path, ids in (
            ("request", "requests", [r.id for r in self.requests]),
            ("node", "nodes", [n.id for n in self.nodes]),
            ("link", "network.links", [k.id for k in self.network.links]),
            ("site", "network.sites", list(self.network.sites)),
        ):
            seen: dict[str, int] = {}
            for idx, ident in enumerate(ids):
                if ident in seen:
                    issues.append(
                        Issue(
                            f"{path}[{idx}].id" if label != "site" else f"{path}[{idx}]",
                            f'duplicate {label} id "{ident}" (first used at {path}[{seen[ident]}])',
                        )
                    )
                else:
                    seen[ident] = idx
        node_ids = {n.id for n in self.nodes}
        for idx, site in enumerate(self.network.sites):
            if site in node_ids:
                issues.append(
                    Issue(f"network.sites[{idx}]", f'site "{site}" has the same name as a node')
                )

    def _check_requests(self, catalog: Catalog, issues: list[Issue]) -> None:
        sites = set(self.network.sites)
        for idx, req in enumerate(self.requests):
            where = f'requests[{idx}] (request "{req.id}")'
            if req.site not in sites:
                issues.append(
                    Issue(
                        f"{where}.site",
                        f'unknown site "{req.site}"; sites are {sorted(sites)}',
                    )
                )
            if req.arrival_s > self.window_s:
                issues.append(
                    Issue(
                        f"{where}.arrival_s",
                        f"arrival {req.arrival_s:g} s is after the window's end "
                        f"(window_s = {self.window_s:g})",
                    )
                )
            if req.task not in catalog.tasks:
                issues.append(
                    Issue(
                        f"{where}.task",
                        f'unknown task "{req.task}"; known tasks are {sorted(catalog.tasks)}',
                    )
                )

    def _resolve_nodes(self, catalog: Catalog, issues: list[Issue]) -> None:
        memory: list[float] = []
        concurrency: list[int] = []
        engines: list[EngineSettings] = []
        held: list[float] = []
        for idx, node in enumerate(self.nodes):
            where = f'nodes[{idx}] (node "{node.id}")'
            model = catalog.models.get(node.model)
            device = catalog.devices.get(node.device)
            if model is None:
                issues.append(
                    Issue(
                        f"{where}.model",
                        f'unknown model "{node.model}"; define it under catalog.models or use one '
                        f"of {sorted(catalog.models)}",
                    )
                )
            if device is None:
                issues.append(
                    Issue(
                        f"{where}.device",
                        f'unknown device "{node.device}"; define it under catalog.devices or use '
                        f"one of {sorted(catalog.devices)}",
                    )
                )
            free = math.inf
            if node.memory_gb == "auto" and model is not None and device is not None:
                free = device.free_memory_gb(model)
                if free <= 0:
                    issues.append(
                        Issue(
                            f"{where}.model",
                            f'model "{node.model}" ({model.weights_gb:g} GB of weights) does not '
                            f'fit on device "{node.device}" ({device.memory_gb:g} GB); give '
                            "memory_gb explicitly or choose a larger device",
                        )
                    )
            elif isinstance(node.memory_gb, float):
                free = node.memory_gb
            engines.append(_engine_settings(node, device))
            kv_bytes = model.kv_bytes_per_token if model is not None else 0
            holds = _state_memory_gb(node.state, kv_bytes)
            _check_state(node, where, catalog, issues)
            held.append(holds)
            memory.append(max(free - holds, 0.0))
            default_conc = device.default_max_concurrency if device is not None else 1
            concurrency.append(node.max_concurrency or default_conc)
            if node.modalities is not None and model is not None:
                extra = set(node.modalities) - set(model.modalities)
                if extra:
                    issues.append(
                        Issue(
                            f"{where}.modalities",
                            f'model "{node.model}" does not accept {sorted(extra)}',
                        )
                    )
        self._node_memory_gb = tuple(memory)
        self._node_concurrency = tuple(concurrency)
        self._node_engines = tuple(engines)
        self._node_held_gb = tuple(held)

    def _check_network(self, catalog: Catalog, issues: list[Issue]) -> NetworkGraph:
        self._check_links(issues)
        graph = NetworkGraph(
            self.network.sites,
            [n.id for n in self.nodes],
            [LinkSpec(k.id, k.from_, k.to, k.bandwidth_mbps, k.rtt_ms) for k in self.network.links],
        )
        self._check_nodes_reachable(graph, issues)
        self._check_requests_reachable(graph, catalog, issues)
        return graph

    def _check_links(self, issues: list[Issue]) -> None:
        """No link from an end point to itself, at most one link between two end points."""
        seen_pairs: dict[frozenset[str], int] = {}
        for idx, link in enumerate(self.network.links):
            where = f'network.links[{idx}] (link "{link.id}")'
            if link.from_ == link.to:
                issues.append(Issue(f"{where}.to", f'link joins "{link.to}" to itself'))
            pair = frozenset((link.from_, link.to))
            if pair in seen_pairs:
                issues.append(
                    Issue(
                        where,
                        f'second link between "{link.from_}" and "{link.to}" (first: '
                        f"network.links[{seen_pairs[pair]}]); give one link with the total "
                        "bandwidth",
                    )
                )
            seen_pairs.setdefault(pair, idx)

    def _check_nodes_reachable(self, graph: NetworkGraph, issues: list[Issue]) -> None:
        """Every node can be reached from some site that has requests (any site, if none has)."""
        active_sites = {r.site for r in self.requests} or set(self.network.sites)
        for idx, node in enumerate(self.nodes):
            if not any(
                graph.reachable(s, node.id) for s in self.network.sites if s in active_sites
            ):
                issues.append(
                    Issue(
                        f'nodes[{idx}] (node "{node.id}")',
                        "unreachable: no path of links joins it to any site with requests "
                        f"{sorted(active_sites)} (paths may pass through routers, not through "
                        "other sites or nodes)",
                    )
                )

    def _check_requests_reachable(
        self, graph: NetworkGraph, catalog: Catalog, issues: list[Issue]
    ) -> None:
        """Every request reaches some node, and one that accepts images if it has images."""
        image_nodes = {
            n.id
            for n in self.nodes
            if "image" in (n.modalities or self._model_modalities(catalog, n.model))
        }
        for idx, req in enumerate(self.requests):
            if req.site not in self.network.sites:
                continue
            reachable = [n.id for n in self.nodes if graph.reachable(req.site, n.id)]
            if not reachable:
                issues.append(
                    Issue(
                        f'requests[{idx}] (request "{req.id}").site',
                        f'no node is reachable from site "{req.site}"',
                    )
                )
            elif req.images and not (set(reachable) & image_nodes):
                issues.append(
                    Issue(
                        f'requests[{idx}] (request "{req.id}").images',
                        f"request has {len(req.images)} image(s) but no node reachable from "
                        f'site "{req.site}" accepts images',
                    )
                )

    @staticmethod
    def _model_modalities(catalog: Catalog, key: str) -> tuple[str, ...]:
        model = catalog.models.get(key)
        return tuple(model.modalities) if model is not None else MODALITIES

    def _check_overrides(self, issues: list[Issue]) -> None:
        if self.overrides is None:
            return
        rows, cols = len(self.requests), len(self.nodes)
        for name in ("latency_s", "quality", "memory_gb"):
            matrix = getattr(self.overrides, name)
            if matrix is None:
                continue
            path = f"overrides.{name}"
            if len(matrix) != rows:
                issues.append(
                    Issue(
                        path,
                        f"has {len(matrix)} rows but the instance has {rows} requests "
                        "(one row per request, in file order)",
                    )
                )
                continue
            for r, row in enumerate(matrix):
                if len(row) != cols:
                    issues.append(
                        Issue(
                            f'{path}[{r}] (request "{self.requests[r].id}")',
                            f"has {len(row)} entries but the instance has {cols} nodes "
                            "(one column per node, in file order)",
                        )
                    )
        latency = self.overrides.latency_s
        if latency is not None and len(latency) == rows:
            for r, row in enumerate(latency):
                if len(row) == cols and all(v is None for v in row):
                    issues.append(
                        Issue(
                            f'overrides.latency_s[{r}] (request "{self.requests[r].id}")',
                            "every entry is null: the request may go nowhere",
                        )
                    )
