"""The network as a graph: sites, servers, routers and the links between them.

A request's bytes travel from its site to the chosen node along the lowest-RTT path. Paths never
pass through another site or another server: servers and sites are end points, only routers (any
link end point that is neither, such as ``core``) forward traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import networkx as nx
import numpy as np

from qlmio_opt.domain.frozen import read_only


@dataclass(frozen=True)
class Route:
    """The path from one site to one node.

    Attributes
    ----------
    links
        Ids of the links crossed, site first.
    link_idx
        Indices of those links in the instance's link order.
    rtt_ms
        Sum of the links' round-trip times.
    bottleneck_mbps
        Smallest bandwidth on the path: a transfer cannot go faster.
    """

    links: tuple[str, ...]
    link_idx: np.ndarray
    rtt_ms: float
    bottleneck_mbps: float

    def __post_init__(self) -> None:
        # routes are computed once and shared by every caller of NetworkGraph.route
        object.__setattr__(self, "link_idx", read_only(np.asarray(self.link_idx)))


@dataclass(frozen=True)
class LinkSpec:
    """The plain facts about a link that routing needs."""

    id: str
    source: str
    target: str
    bandwidth_mbps: float
    rtt_ms: float


class NetworkGraph:
    """Routes between every site and every node, computed once.

    Parameters
    ----------
    sites
        Where requests originate.
    nodes
        Server ids.
    links
        Every link; end points that are neither sites nor nodes are routers.

    The graph is frozen (``networkx.freeze``) once built: an instance's routes were computed
    from it.
    """

    def __init__(
        self, sites: Sequence[str], nodes: Sequence[str], links: Iterable[LinkSpec]
    ) -> None:
        self.sites = tuple(sites)
        self.nodes = tuple(nodes)
        self.links = tuple(links)
        self.graph = nx.Graph()
        for idx, link in enumerate(self.links):
            self.graph.add_edge(
                link.source,
                link.target,
                id=link.id,
                idx=idx,
                rtt_ms=link.rtt_ms,
                bandwidth_mbps=link.bandwidth_mbps,
            )
        nx.freeze(self.graph)
        endpoints = set(self.sites) | set(self.nodes)
        self.routers = tuple(v for v in self.graph.nodes if v not in endpoints)
        self._routes = {
            (site, node): self._shortest_route(site, node)
            for site in self.sites
            for node in self.nodes
        }

    def _shortest_route(self, site: str, node: str) -> Route | None:
        if site == node or site not in self.graph or node not in self.graph:
            return None
        allowed = [*self.routers, site, node]
        view = self.graph.subgraph(allowed)
        try:
            hops = nx.dijkstra_path(view, site, node, weight="rtt_ms")
        except nx.NetworkXNoPath:
            return None
        edges = [self.graph.edges[a, b] for a, b in pairwise(hops)]
        return Route(
            links=tuple(e["id"] for e in edges),
            link_idx=np.array([e["idx"] for e in edges], dtype=np.int64),
            rtt_ms=float(sum(e["rtt_ms"] for e in edges)),
            bottleneck_mbps=float(min(e["bandwidth_mbps"] for e in edges)),
        )

    def route(self, site: str, node: str) -> Route | None:
        """The path from ``site`` to ``node``, or None when the node is unreachable from it."""
        return self._routes[(site, node)]

    def reachable(self, site: str, node: str) -> bool:
        """Whether a path joins ``site`` to ``node``."""
        return self._routes[(site, node)] is not None

    def rtt_ms_matrix(self) -> np.ndarray:
        """RTT per (site, node); NaN where unreachable."""
        return self._matrix(lambda r: r.rtt_ms)

    def bottleneck_mbps_matrix(self) -> np.ndarray:
        """Bottleneck bandwidth per (site, node); NaN where unreachable."""
        return self._matrix(lambda r: r.bottleneck_mbps)

    def _matrix(self, value: Callable[[Route], float]) -> np.ndarray:
        out = np.full((len(self.sites), len(self.nodes)), np.nan)
        for i, site in enumerate(self.sites):
            for j, node in enumerate(self.nodes):
                r = self._routes[(site, node)]
                if r is not None:
                    out[i, j] = value(r)
        return out

    def incidence(self) -> np.ndarray:
        """Boolean array ``[site, node, link]``: does the site->node path cross the link."""
        out = np.zeros((len(self.sites), len(self.nodes), len(self.links)), dtype=bool)
        for i, site in enumerate(self.sites):
            for j, node in enumerate(self.nodes):
                r = self._routes[(site, node)]
                if r is not None:
                    out[i, j, r.link_idx] = True
        return out
