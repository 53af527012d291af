"""Brute force: the optimum of a tiny window by enumerating every assignment."""

import itertools

import numpy as np

from qlmio_opt.formulations.evaluation import evaluate


def optimum_by_enumeration(problem, nodes=None):
    """Least objective over all assignments without violations (each request on one of
    ``nodes``, default every node, or deferred when deferral is allowed), or None if there is
    none."""
    columns = list(range(problem.num_nodes)) if nodes is None else list(nodes)
    choices = columns + ([-1] if problem.deferral_allowed else [])
    best = None
    for assignment in itertools.product(choices, repeat=problem.num_requests):
        ev = evaluate(problem, np.array(assignment, dtype=np.int64))
        if ev.feasible and (best is None or ev.objective < best):
            best = ev.objective
    return best
