"""The link and node models of the simulator's engine, on hand-checkable cases and at random."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qlmio_opt.simulator.engine import NodeJobs, serve_node, share_link


def _jobs(arrive, compute, tokens, reserve=None, read=None) -> NodeJobs:
    n = len(arrive)
    return NodeJobs(
        arrive_s=np.asarray(arrive, float),
        compute_s=np.asarray(compute, float),
        tokens=np.asarray(tokens, float),
        kv_reserve_gb=np.asarray(reserve if reserve is not None else [0.0] * n, float),
        kv_read_gb=np.asarray(read if read is not None else [0.0] * n, float),
    )


def test_share_link_processor_sharing_by_hand():
    # 1 and 3 bits on a 1 bit/s link: both run at 1/2 until the small one ends at t=2,
    # then the large one has 2 bits left alone: ends at t=4
    finish = share_link(np.array([3.0, 1.0]), 1.0, 0.0)
    assert np.allclose(finish, [4.0, 2.0])
    assert np.allclose(share_link(np.array([5.0]), 2.0, 1.0), [3.5])
    assert share_link(np.zeros(0), 1.0, 0.0).shape == (0,)


@given(st.lists(st.floats(1.0, 1e6), min_size=1, max_size=20), st.floats(1.0, 1e4))
def test_share_link_work_conserving(sizes, bandwidth):
    finish = share_link(np.array(sizes), bandwidth, 5.0)
    assert np.isclose(finish.max(), 5.0 + sum(sizes) / bandwidth)
    assert (finish >= 5.0 + np.array(sizes) / bandwidth - 1e-9).all()


def test_single_job_by_hand():
    # weights 10 GB at 20 tok/s: bandwidth 200 GB/s; KV read 10 GB doubles the step to 0.1 s
    times = serve_node(
        _jobs([1.0], [0.5], [30], read=[10.0]),
        concurrency=4,
        memory_gb=np.inf,
        weights_gb=10.0,
        decode_tok_s=20.0,
    )
    assert np.isclose(times.admit_s[0], 1.0)
    assert np.isclose(times.prefill_end_s[0], 1.5)
    assert np.isclose(times.finish_s[0], 1.5 + 30 * 0.1)
    assert np.isclose(times.busy_s, 3.5)


def test_concurrency_one_serialises():
    times = serve_node(
        _jobs([0.0, 0.0], [1.0, 1.0], [10, 10]),
        concurrency=1,
        memory_gb=np.inf,
        weights_gb=1.0,
        decode_tok_s=10.0,
    )
    assert np.allclose(times.finish_s, [2.0, 4.0])
    assert np.isclose(times.admit_s[1], 2.0)


def test_batching_is_faster_than_serial_slower_than_alone():
    kwargs = dict(concurrency=2, memory_gb=np.inf, weights_gb=10.0, decode_tok_s=10.0)
    alone = serve_node(_jobs([0.0], [0.0], [100], read=[5.0]), **kwargs).finish_s[0]
    both = serve_node(_jobs([0.0, 0.0], [0.0, 0.0], [100, 100], read=[5.0, 5.0]), **kwargs)
    assert alone < both.finish_s.max() < 2 * alone


def test_prefill_pauses_decode():
    kwargs = dict(concurrency=2, memory_gb=np.inf, weights_gb=1.0, decode_tok_s=10.0)
    # job 0 decodes 10 tokens (1 s); job 1 arrives at 0.5 s with a 2 s prefill that pauses it
    times = serve_node(_jobs([0.0, 0.5], [0.0, 2.0], [10, 1]), **kwargs)
    assert np.isclose(times.finish_s[0], 3.0)


def test_memory_admission_waits():
    times = serve_node(
        _jobs([0.0, 0.0], [0.0, 0.0], [10, 10], reserve=[6.0, 6.0]),
        concurrency=8,
        memory_gb=10.0,
        weights_gb=1.0,
        decode_tok_s=10.0,
    )
    assert np.isclose(times.admit_s[1], times.finish_s[0])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 20),
            st.floats(0, 2),
            st.integers(1, 200),
            st.floats(0.1, 4),
            st.floats(0, 2),
        ),
        min_size=1,
        max_size=25,
    ),
    st.integers(1, 6),
    st.floats(2.0, 20.0),
)
def test_node_invariants(rows, concurrency, memory):
    arrive, compute, tokens, reserve, read = map(np.array, zip(*rows, strict=True))
    jobs = _jobs(arrive, compute, tokens, reserve, read)
    times = serve_node(
        jobs, concurrency=concurrency, memory_gb=memory, weights_gb=4.0, decode_tok_s=25.0
    )
    fastest_step = 1.0 / 25.0
    assert np.isfinite(times.finish_s).all()
    assert (times.admit_s >= arrive - 1e-9).all()
    assert (times.prefill_end_s >= times.admit_s + compute - 1e-9).all()
    assert (times.finish_s >= times.prefill_end_s + tokens * fastest_step - 1e-6).all()
    # at every admission instant, the running jobs respect the concurrency and memory limits
    for t in times.admit_s:
        running = (times.admit_s <= t + 1e-12) & (times.finish_s > t + 1e-12)
        assert running.sum() <= concurrency
        assert running.sum() == 1 or reserve[running].sum() <= memory + 1e-9


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 20), st.floats(0, 2), st.integers(1, 100), st.floats(0.1, 4)),
        min_size=1,
        max_size=20,
    ),
    st.lists(st.floats(0, 20), max_size=4),
)
def test_adding_jobs_while_running_equals_one_batch(rows, cuts):
    """The replay adds each window's jobs after advancing the node to the window's close."""
    from qlmio_opt.simulator.engine import NodeServer

    arrive, compute, tokens, reserve = map(np.array, zip(*rows, strict=True))
    read = reserve / 4
    kwargs = dict(concurrency=3, memory_gb=6.0, weights_gb=4.0, decode_tok_s=25.0)
    whole = serve_node(_jobs(arrive, compute, tokens, reserve, read), **kwargs)
    server = NodeServer(**kwargs)
    order = np.lexsort((np.arange(len(arrive)), arrive))
    ids = np.empty(len(arrive), dtype=np.int64)
    done = 0
    for cut in [*sorted(cuts), np.inf]:
        take = order[done:][arrive[order[done:]] < cut] if np.isfinite(cut) else order[done:]
        server.run_until(min(cut, float(arrive[take].min())) if len(take) else cut)
        if len(take):
            ids[take] = server.add(
                _jobs(arrive[take], compute[take], tokens[take], reserve[take], read[take])
            )
        done += len(take)
    server.run_until()
    assert server.outstanding == 0
    assert np.allclose(server.times(ids).finish_s, whole.finish_s)
    assert np.allclose(server.times(ids).admit_s, whole.admit_s)
