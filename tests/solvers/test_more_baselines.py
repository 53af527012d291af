"""random, round-robin, quality-greedy, threshold and per-request on hand-checkable windows.

The small windows' pair values (overrides; cost = L - 10 Q, no congestion):

    edge-0:  r0 (0.4, 0.8) -7.6    r1 (0.5, 0.85) -8.0    r2 (0.3, 0.7) -6.7
    cloud-0: r0 (1.2, 0.9) -7.8    r1 (1.4, 0.9)  -7.6    r2 (1.0, 0.75) -6.5

KV memory 0.6 / 0.6 / 0.3 GB; each request uploads 1 Mb. Requests arrive r0, r1, r2.
"""

import pytest
from conftest import INSTANCES, SMALL

from qlmio_opt import Instance, Status, read_instance, solve
from qlmio_opt.app.check import check
from qlmio_opt.solvers.baselines import (
    PerRequest,
    QualityGreedy,
    RandomRule,
    RoundRobin,
    Threshold,
)

RULES = (RandomRule, RoundRobin, QualityGreedy, Threshold, PerRequest)


def small(name):
    return read_instance(SMALL / f"{name}.json")


def changed(name, edit):
    data = small(name).to_dict()
    edit(data)
    return Instance.from_dict(data)


def checked(instance, solver, **kwargs):
    """Solve, and insist the independent checker agrees with the package's evaluation."""
    s = solve(instance, solver, **kwargs)
    report = check(instance, s)
    if s.assignment or s.deferred:
        assert report.objective_matches, report.summary()
        assert report.feasible == (s.status is Status.FEASIBLE), report.summary()
    return s


def test_names_and_descriptions():
    names = [cls.name for cls in RULES]
    assert names == ["random", "round-robin", "quality-greedy", "threshold", "per-request"]
    assert all(cls.description for cls in RULES)
    assert all(cls.__doc__ and "Memory" in cls.__doc__ for cls in RULES[:4])


# -- random -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_random_is_forced_on_the_deferral_window(seed):
    # r0, r1 may only use the edge: r0 takes it, r1 finds it full (0.2 GB left) and is deferred,
    # r2 (0.3 GB) does not fit either and goes to the cloud, whatever the seed
    s = checked(small("deferral"), RandomRule(), seed=seed)
    assert s.assignment == {"r0": "edge-0", "r2": "cloud-0"}
    assert s.deferred == ("r1",)
    assert s.objective == pytest.approx(-7.6 + 5.0 - 6.5)


def test_random_overloads_when_nothing_has_room_and_deferral_is_off():
    s = checked(small("infeasible"), RandomRule(), seed=3)
    assert s.assignment == {"r0": "edge-0", "r1": "edge-0", "r2": "cloud-0"}
    assert s.status is Status.INFEASIBLE
    assert s.violations == ('memory on node "edge-0": 1.200 GB > 0.800 GB free',)
    assert s.objective == pytest.approx(-7.6 - 8.0 - 6.5)


def test_random_is_seeded_and_roughly_uniform():
    instance = small("memory")
    runs = [checked(instance, RandomRule(), seed=seed) for seed in range(200)]
    assert all(s.status is Status.FEASIBLE for s in runs)  # the cloud always has room
    assert len({tuple(sorted(s.assignment.items())) for s in runs}) >= 3
    # r0 comes first, when both nodes are empty: a fair coin between them
    on_edge = sum(s.assignment["r0"] == "edge-0" for s in runs)
    assert 70 <= on_edge <= 130
    a = solve(instance, RandomRule(), seed=11)
    b = solve(instance, RandomRule(), seed=11)
    assert a.assignment == b.assignment
    # a seed given to the rule wins over the solve's
    fixed = [solve(instance, RandomRule(seed=4), seed=k).assignment for k in range(5)]
    assert all(f == fixed[0] for f in fixed)


# -- round-robin --------------------------------------------------------------------------------


def test_round_robin_on_the_memory_window():
    # r0 edge (cursor -> cloud), r1 cloud (cursor -> edge), r2: the edge has 0.2 GB < 0.3, skipped
    s = checked(small("memory"), RoundRobin())
    assert s.assignment == {"r0": "edge-0", "r1": "cloud-0", "r2": "cloud-0"}
    assert s.objective == pytest.approx(-7.6 - 7.6 - 6.5)


def test_round_robin_alternates_when_memory_is_ample():
    s = checked(small("bandwidth"), RoundRobin())
    assert s.assignment == {"r0": "edge-0", "r1": "cloud-0", "r2": "edge-0"}
    assert s.status is Status.FEASIBLE  # one request crosses the core link: 1 Mb of 1.5
    assert s.objective == pytest.approx(-7.6 - 7.6 - 6.7)


def test_round_robin_applies_its_rule_under_a_quality_floor():
    # latency 0.4 + 1.4 + 0.3; quality (0.8 + 0.9 + 0.7) / 3 = 0.8 < 0.84
    s = checked(small("floor"), RoundRobin())
    assert s.assignment == {"r0": "edge-0", "r1": "cloud-0", "r2": "edge-0"}
    assert s.status is Status.INFEASIBLE
    assert s.violations == ("quality floor broken: mean quality 0.8000, target 0.8400",)
    assert s.objective == pytest.approx(2.1)


def test_round_robin_skips_nodes_a_request_may_not_use():
    # r0 edge, r1 (edge only) finds it full and is deferred, r2 continues at the cloud
    s = checked(small("deferral"), RoundRobin())
    assert s.assignment == {"r0": "edge-0", "r2": "cloud-0"}
    assert s.deferred == ("r1",)


# -- quality-greedy -----------------------------------------------------------------------------


def test_quality_greedy_sends_everything_to_the_better_cloud():
    s = checked(small("memory"), QualityGreedy())
    assert set(s.assignment.values()) == {"cloud-0"}
    assert s.objective == pytest.approx(-7.8 - 7.6 - 6.5)
    floor = checked(small("floor"), QualityGreedy())
    assert floor.status is Status.FEASIBLE and floor.objective == pytest.approx(3.6)


def test_quality_greedy_ignores_bandwidth():
    s = checked(small("bandwidth"), QualityGreedy())
    assert set(s.assignment.values()) == {"cloud-0"}
    assert s.status is Status.INFEASIBLE
    assert s.violations == ('bandwidth on link "cell-0/core": 3.0 Mb > 1.5 Mb',)


def test_quality_greedy_ties_go_to_the_lower_latency():
    def edit(data):
        data["overrides"]["quality"][0] = [0.9, 0.9]

    s = checked(changed("memory", edit), QualityGreedy())
    assert s.assignment["r0"] == "edge-0"  # 0.4 s beats 1.2 s at equal quality


def test_quality_greedy_spills_or_defers_when_the_best_node_is_full():
    def edit(data):  # the edge is now the better node for every request
        data["overrides"]["quality"] = [[0.95, 0.9], [0.95, 0.9], [0.95, 0.9]]

    s = checked(changed("memory", edit), QualityGreedy())
    # r0 on the edge (0.6 GB); r1 needs 0.6 > 0.2 left and spills; so does r2 (0.3 > 0.2)
    assert s.assignment == {"r0": "edge-0", "r1": "cloud-0", "r2": "cloud-0"}
    d = checked(small("deferral"), QualityGreedy())
    assert d.assignment == {"r0": "edge-0", "r2": "cloud-0"} and d.deferred == ("r1",)
    assert d.objective == pytest.approx(-7.6 + 5.0 - 6.5)


# -- threshold ----------------------------------------------------------------------------------


def test_threshold_default_margin_on_the_memory_window():
    # bar = best cloud quality - 0.05: r0 0.8 < 0.85 -> cloud; r1 0.85 >= 0.85 -> edge;
    # r2 0.7 >= 0.7 -> edge, but only 0.2 GB is left -> the cloud takes it
    s = checked(small("memory"), Threshold())
    assert s.assignment == {"r0": "cloud-0", "r1": "edge-0", "r2": "cloud-0"}
    assert s.objective == pytest.approx(-22.3)  # the window's optimum


def test_threshold_margin_is_settable():
    instance = small("memory")
    strict = checked(instance, Threshold(margin=0.0))
    assert set(strict.assignment.values()) == {"cloud-0"}
    loose = checked(instance, Threshold(margin=0.2))
    # r0 clears 0.7 -> edge; r1 and r2 clear it too but the edge has 0.2 GB left
    assert loose.assignment == {"r0": "edge-0", "r1": "cloud-0", "r2": "cloud-0"}
    assert loose.objective == pytest.approx(-7.6 - 7.6 - 6.5)
    with pytest.raises(ValueError, match="margin"):
        Threshold(margin=-0.1)


def test_threshold_on_the_bandwidth_and_floor_windows():
    s = checked(small("bandwidth"), Threshold())
    assert s.assignment == {"r0": "cloud-0", "r1": "edge-0", "r2": "edge-0"}
    assert s.objective == pytest.approx(-22.5)
    floor = checked(small("floor"), Threshold())
    # the same choices under the floor: quality 0.9 + 0.85 + 0.7 = 2.45 < 2.52
    assert floor.status is Status.INFEASIBLE
    assert floor.objective == pytest.approx(1.2 + 0.5 + 0.3)


def test_threshold_on_the_analytic_window_is_all_cloud():
    # r0: edge 0.515 vs cloud 0.864; r1: edge 0.8 vs cloud 0.9 - both miss the bar
    instance = small("analytic")
    s = checked(instance, Threshold())
    assert set(s.assignment.values()) == {"cloud"}
    assert s.objective == pytest.approx(solve(instance, "all-cloud").objective)
    # margin 0.1: r1 clears 0.9 - 0.1 = 0.8, r0 still misses 0.864 - 0.1 = 0.764
    mixed = checked(instance, Threshold(margin=0.1))
    assert mixed.assignment == {"r0": "cloud", "r1": "edge-0"}
    # margin 0.4: r0 clears 0.464 too
    assert checked(instance, Threshold(margin=0.4)).assignment == {"r0": "edge-0", "r1": "edge-0"}


# -- per-request --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "assignment", "deferred", "objective"),
    [
        # r0 cloud, r1 edge, r2 edge (-6.7) overfills the edge; moving r2 costs 0.2, r1 0.4
        ("memory", {"r0": "cloud-0", "r1": "edge-0", "r2": "cloud-0"}, (), -22.3),
        # the own choices already fit: one request crosses the core link
        ("bandwidth", {"r0": "cloud-0", "r1": "edge-0", "r2": "edge-0"}, (), -22.5),
        # all on the edge (1.5 GB): r2 moves to the cloud (+0.2), then r0 is deferred
        # (5 + 7.6 = 12.6, cheaper than r1's 13.0)
        ("deferral", {"r1": "edge-0", "r2": "cloud-0"}, ("r0",), -9.5),
        # all on the edge (quality 2.35 < 2.52); per unit of quality r0 (0.8 / 0.1) moves first,
        # then r2 (0.7 / 0.05), then r1 (0.9 / 0.05): all-cloud
        ("floor", dict.fromkeys(("r0", "r1", "r2"), "cloud-0"), (), 3.6),
    ],
)
def test_per_request_reaches_the_small_optima(name, assignment, deferred, objective):
    s = checked(small(name), PerRequest())
    assert s.status is Status.FEASIBLE
    assert s.assignment == assignment
    assert s.deferred == deferred
    assert s.objective == pytest.approx(objective)


def test_per_request_moves_the_cheapest_request_off_a_full_link():
    def edit(data):  # the cloud is now everyone's own best: -8.3, -8.1, -8.5
        data["overrides"]["quality"] = [[0.8, 0.95], [0.85, 0.95], [0.7, 0.95]]

    s = checked(changed("bandwidth", edit), PerRequest())
    # 3 Mb on a 1.5 Mb link: moving r1 costs 0.1, then r0 0.7 (r2 would cost 1.8)
    assert s.assignment == {"r0": "edge-0", "r1": "edge-0", "r2": "cloud-0"}
    assert s.objective == pytest.approx(-7.6 - 8.0 - 8.5)


def test_per_request_names_the_stuck_constraint():
    s = solve(small("infeasible"), PerRequest())
    assert s.status is Status.INFEASIBLE
    assert not s.assignment
    assert 'memory on node "edge-0"' in s.message
    assert '"r0", "r1"' in s.message
    assert "deferral is off" in s.message


def test_per_request_reports_an_unreachable_quality_target():
    def edit(data):
        data["objective"]["quality_target"] = 0.9  # all-cloud reaches 0.85 at best

    s = solve(changed("floor", edit), PerRequest())
    assert s.status is Status.INFEASIBLE
    assert s.message.startswith("quality floor")
    assert "0.9000" in s.message and 'request "r2"' in s.message


def test_per_request_defers_below_the_target_when_that_is_cheaper():
    def edit(data):
        data["objective"]["deferral_penalty_s"] = 1.1

    # own best: all on the edge (slack 2.35 - 2.52). Per unit of quality: deferring r2
    # (0.8 / 0.14) beats moving r0 (0.8 / 0.1); then r0 moves to the cloud: 1.2 + 0.5 + 1.1
    s = checked(changed("floor", edit), PerRequest())
    assert s.assignment == {"r0": "cloud-0", "r1": "edge-0"}
    assert s.deferred == ("r2",)
    assert s.objective == pytest.approx(2.8)


def test_request_allowed_nowhere():
    def edit(data):
        data["requests"][2]["min_quality"] = 0.99

    s = solve(changed("memory", edit), PerRequest())
    assert s.status is Status.INFEASIBLE and 'request "r2"' in s.message
    for rule in (RandomRule(), RoundRobin(), QualityGreedy(), Threshold()):
        r = solve(changed("memory", edit), rule)
        assert r.status is Status.INFEASIBLE and 'request "r2"' in r.message


# -- benchmark windows --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["window_000.json", "window_042.json", "window_099.json"])
def test_benchmark_windows(name):
    instance = read_instance(INSTANCES / name)
    for cls in RULES:
        s = checked(instance, cls())
        assert len(s.assignment) + len(s.deferred) == len(instance.requests)
        report = check(instance, s)
        assert not any(v.startswith(("eligibility", "assignment")) for v in report.violations)
        assert not any(v.startswith("memory") for v in report.violations)  # deferral is on
    # per-request always repairs to feasibility here (deferral is on in every benchmark window)
    assert solve(instance, PerRequest()).status is Status.FEASIBLE
    seeds = {
        tuple(sorted(solve(instance, RandomRule(), seed=k).assignment.items())) for k in (1, 2)
    }
    assert len(seeds) == 2
