"""Routes between sites and nodes: paths, RTT, bottleneck, link sets."""

import numpy as np

from qlmio_opt.domain.network import LinkSpec, NetworkGraph


def _graph() -> NetworkGraph:
    links = [
        LinkSpec("cell-0/edge-0", "cell-0", "edge-0", 50.0, 8.0),
        LinkSpec("cell-0/core", "cell-0", "core", 40.0, 8.0),
        LinkSpec("core/edge-0", "core", "edge-0", 1000.0, 2.0),
        LinkSpec("cell-1/core", "cell-1", "core", 100.0, 5.0),
        LinkSpec("wan", "core", "cloud", 1000.0, 40.0),
    ]
    return NetworkGraph(["cell-0", "cell-1"], ["edge-0", "cloud"], links)


def test_direct_path_is_used_when_it_has_the_lowest_rtt():
    route = _graph().route("cell-0", "edge-0")
    assert route.links == ("cell-0/edge-0",)
    assert route.rtt_ms == 8.0
    assert route.bottleneck_mbps == 50.0


def test_path_through_a_router_sums_rtt_and_takes_the_smallest_bandwidth():
    g = _graph()
    route = g.route("cell-0", "cloud")
    assert route.links == ("cell-0/core", "wan")
    assert route.rtt_ms == 48.0
    assert route.bottleneck_mbps == 40.0
    assert list(route.link_idx) == [1, 4]
    other = g.route("cell-1", "edge-0")
    assert other.links == ("cell-1/core", "core/edge-0")
    assert other.rtt_ms == 7.0


def test_paths_never_transit_another_server_or_site():
    links = [
        LinkSpec("a/edge", "a", "edge", 100.0, 1.0),
        LinkSpec("edge/cloud", "edge", "cloud", 100.0, 1.0),  # only via a server: not a route
        LinkSpec("b/a", "b", "a", 100.0, 1.0),  # only via another site: not a route
    ]
    g = NetworkGraph(["a", "b"], ["edge", "cloud"], links)
    assert g.reachable("a", "edge")
    assert not g.reachable("a", "cloud")
    assert not g.reachable("b", "edge")


def test_matrices_and_incidence_agree_with_routes():
    g = _graph()
    rtt = g.rtt_ms_matrix()
    assert rtt.shape == (2, 2)
    np.testing.assert_allclose(rtt, [[8.0, 48.0], [7.0, 45.0]])
    inc = g.incidence()
    assert inc.shape == (2, 2, 5)
    for i, site in enumerate(g.sites):
        for j, node in enumerate(g.nodes):
            assert set(np.flatnonzero(inc[i, j])) == set(g.route(site, node).link_idx)
