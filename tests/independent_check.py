"""A test-side checker that shares no code with the evaluation or the solvers.

It recomputes per-node memory, per-link megabits (routing with networkx from the raw links), floors
and the weighted objective from the instance, the predictions and the solution's assignment.
"""

import math
from itertools import pairwise

import networkx as nx

TOL = 1e-6


def route_links(instance, site, node):
    g = nx.Graph()
    endpoints = set(instance.network.sites) | {n.id for n in instance.nodes}
    for link in instance.network.links:
        g.add_edge(link.from_, link.to, id=link.id, rtt=link.rtt_ms)
    keep = [v for v in g.nodes if v not in endpoints] + [site, node]
    path = nx.dijkstra_path(g.subgraph(keep), site, node, weight="rtt")
    return [g.edges[a, b]["id"] for a, b in pairwise(path)]


def check(instance, predictions, solution):
    """Return a list of violated constraints (empty = feasible) and the recomputed objective."""
    problems = []
    node_index = {n.id: j for j, n in enumerate(instance.nodes)}
    memory = {n.id: 0.0 for n in instance.nodes}
    megabits = {k.id: 0.0 for k in instance.network.links}
    cost = 0.0
    qualities = []
    obj = instance.objective
    for r, req in enumerate(instance.requests):
        node = solution.assignment.get(req.id)
        if node is None:
            if req.id not in solution.deferred:
                problems.append(f"{req.id} unassigned")
            if obj.deferral_penalty_s is None:
                problems.append(f"{req.id} deferred without deferral")
            else:
                cost += (
                    obj.latency_weight * obj.deferral_penalty_s / obj.latency_scale_s
                    if (obj.mode == "weighted")
                    else obj.deferral_penalty_s
                )
            continue
        j = node_index[node]
        if not predictions.eligible[r, j]:
            problems.append(f"{req.id} on ineligible {node}")
        q = predictions.quality[r, j]
        lat = predictions.latency_s[r, j]
        if req.min_quality is not None and q < req.min_quality - TOL:
            problems.append(f"{req.id} below its quality floor")
        if req.deadline_s is not None and lat > req.deadline_s + TOL:
            problems.append(f"{req.id} misses its deadline")
        memory[node] += predictions.memory_gb[r, j]
        upload_mb = (sum(im.bytes for im in req.images) + 4 * req.prompt_tokens) * 8 / 1e6
        for link in route_links(instance, req.site, node):
            megabits[link] += upload_mb
        qualities.append(q)
        if obj.mode == "weighted":
            cost += obj.latency_weight * lat / obj.latency_scale_s - obj.quality_weight * q
        else:
            cost += lat
    for j, n in enumerate(instance.nodes):
        cap = instance.node_memory_gb[j]
        if math.isfinite(cap) and memory[n.id] > cap + TOL:
            problems.append(f"memory on {n.id}")
    for link in instance.network.links:
        if megabits[link.id] > link.bandwidth_mbps * instance.window_s + TOL:
            problems.append(f"bandwidth on {link.id}")
    return problems, cost, qualities
