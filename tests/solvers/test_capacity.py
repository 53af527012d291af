"""The capacity tracker of the baselines and of the solvers' messages, on hand-checked windows.

small/memory.json: edge-0 has 0.8 GB free; the requests hold 0.6 / 0.6 / 0.3 GB there and upload
1 Mb each. small/bandwidth.json: the core link (towards the cloud) carries 1.5 Mb in the window.
"""

import numpy as np
import pytest
from conftest import SMALL

from qlmio_opt import read_instance
from qlmio_opt.formulations import build_problem
from qlmio_opt.predictors import predict
from qlmio_opt.solvers.capacity import Loads, explain_unplaceable


def problem_of(name):
    instance = read_instance(SMALL / f"{name}.json")
    return build_problem(instance, predict(instance))


def test_memory_is_held_and_freed_as_requests_move():
    problem = problem_of("memory")
    edge, cloud = problem.node_ids.index("edge-0"), problem.node_ids.index("cloud-0")
    loads = Loads(problem)
    assert loads.has_memory(0, edge) and loads.has_memory(1, edge)
    loads.move(0, edge)
    assert loads.memory_gb[edge] == pytest.approx(0.6)
    assert loads.memory_left()[edge] == pytest.approx(0.2)
    assert np.isinf(loads.memory_left()[cloud])  # the cloud's memory is unbounded
    assert not loads.has_memory(1, edge) and not loads.has_memory(2, edge)
    assert loads.shortfall(1, edge) == 'memory on "edge-0" (needs 0.600 GB, 0.200 GB left)'
    assert loads.shortfall(1, cloud) is None
    np.testing.assert_array_equal(loads.fits(np.array([1, 2])), [[False, True], [False, True]])
    loads.move(0, cloud)  # r0 leaves the edge: its memory is free again
    assert loads.memory_gb[edge] == pytest.approx(0.0)
    assert loads.has_memory(1, edge)
    loads.move(0, -1)
    assert loads.assignment.tolist() == [-1, -1, -1]
    assert loads.megabits.sum() == pytest.approx(0.0)


def test_overloads_are_found_and_explained():
    problem = problem_of("memory")
    edge = problem.node_ids.index("edge-0")
    loads = Loads(problem)
    assert loads.worst_overload() is None
    loads.move(0, edge)
    loads.move(1, edge)  # 1.2 GB on 0.8 GB
    assert loads.worst_overload() == ("memory", edge)
    assert loads.users(("memory", edge)).tolist() == [0, 1]
    message = explain_unplaceable(problem, 2, loads)
    assert message.startswith('request "r2" fits on no node: memory on "edge-0"')


def test_a_full_link_is_named_with_what_is_left():
    problem = problem_of("bandwidth")
    cloud = problem.node_ids.index("cloud-0")
    core = problem.link_ids.index("cell-0/core")
    loads = Loads(problem)
    loads.move(0, cloud)  # 1 Mb of the core link's 1.5 Mb
    assert loads.megabits[core] == pytest.approx(1.0)
    assert loads.shortfall(1, cloud) == (
        'bandwidth on link "cell-0/core" (needs 1.00 Mb, 0.50 Mb left)'
    )
    assert not loads.fits(np.array([1]))[0, cloud]
    loads.move(1, cloud)
    assert loads.worst_overload() == ("link", core)
    assert loads.users(("link", core)).tolist() == [0, 1]
