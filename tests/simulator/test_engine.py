"""The link and node models of the simulator's engine, on hand-checkable cases and at random."""

from __future__ import annotations

import numpy as np
import pytest
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


# -- chunked prefill ----------------------------------------------------------------------------
def _chunked(arrive, compute, tokens, prompt, *, budget, reserve=None, read=None, **node):
    """Serve jobs (no images) on a chunked-prefill node: weights 1 GB at 10 tok/s, so an empty
    batch's decode step ``T_mem`` is 0.1 s, and 100 prompt tokens/s (a decode token's compute
    is 0.01 s), unless ``node`` says otherwise."""
    jobs = _jobs(arrive, compute, tokens, reserve, read)
    jobs.prompt_tokens = np.asarray(prompt, float)
    jobs.image_tokens = np.zeros(len(arrive))
    kwargs = dict(concurrency=8, memory_gb=np.inf, weights_gb=1.0, decode_tok_s=10.0)
    kwargs |= node
    return serve_node(
        jobs,
        **kwargs,
        scheduler="chunked-prefill",
        prefill_tok_s=kwargs.pop("prefill_tok_s", 100.0),
        max_batched_tokens=budget,
    )


def test_chunked_single_request_takes_its_solo_latency():
    # 50 prompt tokens of 0.02 s each: a full chunk of 2048 costs 41 s of compute, far above
    # T_mem, so the prefill runs at 1 / 0.02 tokens/s and ends after compute_s = 1 s
    kwargs = dict(read=[10.0], weights_gb=10.0, decode_tok_s=20.0)
    chunked = _chunked([1.0], [1.0], [30], [50], budget=2048, **kwargs)
    serial = serve_node(
        _jobs([1.0], [1.0], [30], read=[10.0]),
        concurrency=8,
        memory_gb=np.inf,
        weights_gb=10.0,
        decode_tok_s=20.0,
    )
    assert np.isclose(chunked.prefill_end_s[0], 2.0)
    assert np.isclose(chunked.finish_s[0], 2.0 + 30 * 0.1)
    assert np.allclose(chunked.finish_s, serial.finish_s)
    assert np.isclose(chunked.busy_s, serial.busy_s)


def test_chunked_prefill_is_memory_bound_with_a_small_budget():
    # budget 4: a chunk of 4 tokens costs 0.04 s < T_mem = 0.1 s, so 40 tokens take 10 steps
    times = _chunked([0.0], [0.4], [5], [40], budget=4)
    assert np.isclose(times.prefill_end_s[0], 1.0)
    assert np.isclose(times.finish_s[0], 1.5)


def test_chunked_decoder_slows_by_prefill_busy_time_times_one_minus_tmem_over_tstep():
    # job 0 (10 prompt tokens, 0.1 s) prefills alone in 0.1 s, then decodes 100 tokens at
    # T_mem = 0.1 s: 10.1 s alone. Job 1 arrives at 1 s with 50 tokens of 0.02 s: each step
    # carries 1 decode and B - 1 = 10 prompt tokens, T_step = max(0.1, 10 * 0.02 + 1 / 100)
    # = 0.21 s, so its prefill is busy 5 steps = 1.05 s, and job 0 loses
    # 1.05 * (1 - 0.1 / 0.21) = 0.55 s
    times = _chunked([0.0, 1.0], [0.1, 1.0], [100, 200], [10, 50], budget=11)
    busy, t_step, t_mem = 1.05, 0.21, 0.1
    assert np.isclose(times.prefill_end_s[0], 0.1)
    assert np.isclose(times.prefill_end_s[1], 1.0 + busy)
    assert np.isclose(times.finish_s[0], 10.1 + busy * (1 - t_mem / t_step))
    assert np.isclose(times.finish_s[1], 1.0 + busy + 200 * t_mem)


def test_chunked_budget_filled_by_decoders_holds_the_prefill():
    # budget 2 and two decoders (prompts of 0 tokens): job 2's prefill waits for job 0 to end
    # at 1 s, then gets B - 1 = 1 token per step of max(0.1, 0.01 + 0.01) = 0.1 s: 2 tokens
    # by 1.2 s; its 5 tokens end at 1.7 s, and job 1 is never slowed (30 tokens, 3 s)
    times = _chunked([0.0, 0.0, 0.5], [0.0, 0.0, 0.02], [10, 30, 5], [0, 0, 2], budget=2)
    assert np.allclose(times.prefill_end_s, [0.0, 0.0, 1.2])
    assert np.allclose(times.finish_s, [1.0, 3.0, 1.7])


def test_chunked_prefills_are_first_come_first_served():
    # two 100-token prompts of 1 s each at t=0, budget 100: job 0 fills whole steps of 1 s
    # and ends at 1 s; job 1 then shares steps with job 0's decode: 99 prompt tokens per step
    # of 99 * 0.01 + 0.01 = 1 s, so its 100 tokens end 100 / 99 s later
    times = _chunked([0.0, 0.0], [1.0, 1.0], [50, 50], [100, 100], budget=100)
    assert np.isclose(times.prefill_end_s[0], 1.0)
    assert np.isclose(times.prefill_end_s[1], 1.0 + 100 / 99)
    # job 0 decoded one token per 1 s step meanwhile, then 0.1 s per token
    assert np.isclose(times.finish_s[0], 1.0 + 100 / 99 + (50 - 100 / 99) * 0.1)


def test_chunked_engine_needs_prompt_tokens():
    import pytest

    with pytest.raises(ValueError, match="prompt and image tokens"):
        serve_node(
            _jobs([0.0], [1.0], [10]),
            concurrency=1,
            memory_gb=np.inf,
            weights_gb=1.0,
            decode_tok_s=10.0,
            scheduler="chunked-prefill",
            prefill_tok_s=100.0,
            max_batched_tokens=64,
        )
    with pytest.raises(ValueError, match='unknown engine scheduler "fast"'):
        serve_node(
            _jobs([0.0], [1.0], [10]),
            concurrency=1,
            memory_gb=np.inf,
            weights_gb=1.0,
            decode_tok_s=10.0,
            scheduler="fast",
        )


def _chunked_jobs(rows):
    """Jobs from ``(arrive, compute, tokens, reserve, prompt, image)`` rows."""
    arrive, compute, tokens, reserve, prompt, image = map(np.array, zip(*rows, strict=True))
    jobs = _jobs(arrive, compute, tokens, reserve, reserve / 4)
    jobs.prompt_tokens, jobs.image_tokens = prompt.astype(float), image.astype(float)
    return jobs


_CHUNKED_ROWS = st.lists(
    st.tuples(
        st.floats(0, 20),
        st.floats(0.01, 2),
        st.integers(1, 200),
        st.floats(0.1, 4),
        st.integers(1, 3000),
        st.integers(0, 1500),
    ),
    min_size=1,
    max_size=25,
)
_CHUNKED_NODE = dict(
    weights_gb=4.0,
    decode_tok_s=25.0,
    scheduler="chunked-prefill",
    prefill_tok_s=2000.0,
    max_batched_tokens=512,
)


@settings(max_examples=60, deadline=None)
@given(_CHUNKED_ROWS, st.integers(1, 6), st.floats(2.0, 20.0))
def test_chunked_node_invariants(rows, concurrency, memory):
    jobs = _chunked_jobs(rows)
    times = serve_node(jobs, concurrency=concurrency, memory_gb=memory, **_CHUNKED_NODE)
    assert np.isfinite(times.finish_s).all()
    assert (times.admit_s >= jobs.arrive_s - 1e-9).all()
    # a prompt token never runs faster than its stand-alone compute, nor a step below T_mem
    assert (times.prefill_end_s >= times.admit_s + jobs.compute_s - 1e-6).all()
    assert (times.finish_s >= times.prefill_end_s + jobs.tokens / 25.0 - 1e-6).all()
    for t in times.admit_s:
        running = (times.admit_s <= t + 1e-12) & (times.finish_s > t + 1e-12)
        assert running.sum() <= concurrency
        assert running.sum() == 1 or jobs.kv_reserve_gb[running].sum() <= memory + 1e-9


@settings(max_examples=30, deadline=None)
@given(_CHUNKED_ROWS, st.lists(st.floats(0, 20), max_size=4))
def test_chunked_adding_jobs_while_running_equals_one_batch(rows, cuts):
    from qlmio_opt.simulator.engine import node_server

    jobs = _chunked_jobs(rows)
    arrive = jobs.arrive_s
    node = dict(concurrency=3, memory_gb=6.0, **_CHUNKED_NODE)
    whole = serve_node(jobs, **node)
    server = node_server(node.pop("scheduler"), **node)
    order = np.lexsort((np.arange(len(arrive)), arrive))
    ids = np.empty(len(arrive), dtype=np.int64)
    done = 0
    for cut in [*sorted(cuts), np.inf]:
        take = order[done:][arrive[order[done:]] < cut] if np.isfinite(cut) else order[done:]
        server.run_until(min(cut, float(arrive[take].min())) if len(take) else cut)
        if len(take):
            part = _chunked_jobs([rows[i] for i in take])
            ids[take] = server.add(part)
        done += len(take)
    server.run_until()
    assert server.outstanding == 0
    assert np.allclose(server.times(ids).finish_s, whole.finish_s)
    assert np.allclose(server.times(ids).prefill_end_s, whole.prefill_end_s)


def test_observe_shows_counts_and_progress_not_the_remaining_output():
    from dataclasses import fields

    import pytest

    from qlmio_opt.simulator.engine import JobView, node_server

    for scheduler in ("serial-prefill", "chunked-prefill"):
        server = node_server(
            scheduler,
            concurrency=1,
            memory_gb=10.0,
            weights_gb=1.0,
            decode_tok_s=10.0,
            prefill_tok_s=100.0,
            max_batched_tokens=64,
        )
        # job 0 prefills 10 tokens in 0.1 s, then decodes a token per (1 + 0.5) / 10 = 0.15 s
        # (its KV read is 2 / 4 GB): 6 tokens by 1 s; job 1 waits for the one slot; job 2 is
        # still on its way
        jobs = _chunked_jobs([(0.0, 0.1, 100, 2.0, 8, 2), (0.5, 0.1, 5, 1.0, 3, 0)])
        server.add(jobs)
        server.run_until(0.8)
        server.add(_chunked_jobs([(5.0, 0.1, 5, 1.0, 4, 0)]))
        seen = server.observe(1.0)
        assert seen.time_s == 1.0
        assert seen.running == (JobView(job=0, prompt_tokens=8, image_tokens=2, output_tokens=6),)
        assert [v.job for v in seen.waiting] == [1]
        assert [v.job for v in seen.in_transit] == [2]
        assert seen.kv_used_gb == pytest.approx(2.0)
        assert {f.name for f in fields(JobView)} == {
            "job",
            "prompt_tokens",
            "image_tokens",
            "output_tokens",
        }
        with pytest.raises(ValueError, match=r"cannot observe the node at 0\.5 s"):
            server.observe(0.5)


def test_jobs_without_token_counts_cannot_be_observed():
    import pytest

    from qlmio_opt.simulator.engine import NodeServer

    server = NodeServer(concurrency=1, memory_gb=np.inf, weights_gb=1.0, decode_tok_s=10.0)
    server.add(_jobs([0.0], [1.0], [10]))
    with pytest.raises(ValueError, match="without prompt_tokens and image_tokens"):
        server.observe(0.5)


# -- both engines, by hand ----------------------------------------------------------------------
ENGINES = ("serial-prefill", "chunked-prefill")


def _serve(scheduler, arrive, compute, tokens, *, prompt=None, image=None, budget=64, **node):
    """Serve jobs on a node with ``scheduler``: weights 1 GB at 10 tok/s (``T_mem`` = 0.1 s
    with no KV read), 100 prompt tokens/s, budget ``budget``, 8 slots, unbounded memory, unless
    ``node`` says otherwise. ``reserve`` and ``read`` (per job) go to the jobs; prompts default
    to 0 tokens (a chunked prefill of no tokens ends at once)."""
    jobs = _jobs(arrive, compute, tokens, node.pop("reserve", None), node.pop("read", None))
    n = len(arrive)
    jobs.prompt_tokens = np.asarray(prompt if prompt is not None else [0] * n, float)
    jobs.image_tokens = np.asarray(image if image is not None else [0] * n, float)
    kwargs = dict(
        concurrency=8,
        memory_gb=np.inf,
        weights_gb=1.0,
        decode_tok_s=10.0,
        prefill_tok_s=100.0,
        max_batched_tokens=budget,
    )
    return serve_node(jobs, scheduler=scheduler, **(kwargs | node))


def test_serial_two_requests_together_second_prefill_waits_and_pauses_the_first():
    # both arrive at 0 and are admitted (8 slots). Job 0 prefills [0, 1]; job 1's prefill
    # waits for it and runs [1, 3], pausing job 0's decode, which starts at 3 with job 1's.
    # No KV read: a step is T_mem = 1 / 10 = 0.1 s for any batch. Job 1: 5 tokens, ends at
    # 3.5; job 0: 10 tokens, ends at 4.0 (alone it would end at 1 + 1.0 = 2.0)
    times = _serve("serial-prefill", [0.0, 0.0], [1.0, 2.0], [10, 5])
    assert np.allclose(times.admit_s, [0.0, 0.0])
    assert np.allclose(times.prefill_end_s, [1.0, 3.0])
    assert np.allclose(times.finish_s, [4.0, 3.5])
    assert np.isclose(times.busy_s, 4.0)


def test_chunked_two_requests_together_second_prefill_rides_with_the_first_decode():
    # the same two jobs with 100-token prompts: job 0's tokens cost 1.0 / 100 = 0.01 s, job 1's
    # 2.0 / 100 = 0.02 s; budget 50. Job 0 prefills alone in steps of max(0.1, 50 * 0.01) =
    # 0.5 s: 100 tokens in 2 steps, ends at 1.0. Job 1 then gets B - D = 49 tokens per step of
    # T_step = max(0.1, 49 * 0.02 + 1 / 100) = 0.99 s: 100 / 49 steps, ends at
    # 1 + 100 / 49 * 0.99 = 3.0204; job 0 decodes one token per step meanwhile (100 / 49 =
    # 2.04 tokens), then both decode at 0.1 s a step: job 1 (5 tokens) ends 0.5 s later, job 0
    # has 10 - 100 / 49 tokens left
    times = _serve("chunked-prefill", [0.0, 0.0], [1.0, 2.0], [10, 5], prompt=[100, 100], budget=50)
    second = 1.0 + 100 / 49 * 0.99
    assert np.allclose(times.prefill_end_s, [1.0, second])
    assert np.isclose(times.finish_s[1], second + 5 * 0.1)
    assert np.isclose(times.finish_s[0], second + (10 - 100 / 49) * 0.1)
    # job 0 is slowed by job 1's busy prefill time times 1 - T_mem / T_step, not all of it
    busy = second - 1.0
    assert np.isclose(times.finish_s[0], 2.0 + busy * (1 - 0.1 / 0.99))


def test_chunked_prompt_longer_than_the_budget_spreads_over_compute_bound_steps():
    # 60 text + 40 image tokens of 1.0 / 100 = 0.01 s each; budget 40 < 100: steps of
    # max(T_mem = 0.1, 40 * 0.01) = 0.4 s carry 40 tokens, so 100 tokens take 2.5 steps = 1.0 s
    # (its stand-alone compute: chunking a compute-bound prefill costs nothing alone); then 10
    # decode steps of 0.1 s
    times = _serve("chunked-prefill", [0.5], [1.0], [10], prompt=[60], image=[40], budget=40)
    assert np.isclose(times.prefill_end_s[0], 1.5)
    assert np.isclose(times.finish_s[0], 2.5)


@pytest.mark.parametrize("scheduler", ENGINES)
def test_kv_reads_slow_every_decode_step_of_the_batch(scheduler):
    # weights 2 GB at 10 tok/s: bandwidth 20 GB/s. Both jobs read 1 GB of KV per step: together
    # a step is (2 + 1 + 1) / 20 = 0.2 s, so job 0's 10 tokens end at 2.0; job 1 then steps
    # alone at (2 + 1) / 20 = 0.15 s for its last 10 tokens: 2.0 + 1.5 = 3.5 (alone: 3.0)
    times = _serve(scheduler, [0.0, 0.0], [0.0, 0.0], [10, 20], read=[1.0, 1.0], weights_gb=2.0)
    assert np.allclose(times.finish_s, [2.0, 3.5])


@pytest.mark.parametrize("scheduler", ENGINES)
def test_admission_by_concurrency(scheduler):
    # 2 slots, T_mem 0.1 s: jobs 0 and 1 start at 0; job 2 takes job 0's slot when its 10
    # tokens end at 1.0 and ends 1.0 s later; job 1's 20 tokens end at 2.0
    times = _serve(scheduler, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [10, 20, 10], concurrency=2)
    assert np.allclose(times.admit_s, [0.0, 0.0, 1.0])
    assert np.allclose(times.finish_s, [1.0, 2.0, 2.0])


@pytest.mark.parametrize("scheduler", ENGINES)
def test_admission_by_memory_first_come_first_served(scheduler):
    # 10 GB free; reservations 6, 3, 5, 1 GB. Jobs 0 and 1 fit (9 GB); job 2 (5 GB) waits,
    # still after job 1 ends at 0.5 s (6 + 5 > 10), until job 0 ends at 2.0; job 3 would fit
    # beside jobs 0 and 1 (10 GB) but waits behind job 2 (first come, first served) and enters
    # with it (5 + 1 <= 10)
    times = _serve(
        scheduler,
        [0.0, 0.0, 0.0, 0.0],
        [0.0] * 4,
        [20, 5, 5, 5],
        reserve=[6.0, 3.0, 5.0, 1.0],
        memory_gb=10.0,
    )
    assert np.allclose(times.admit_s, [0.0, 0.0, 2.0, 2.0])
    assert np.allclose(times.finish_s, [2.0, 0.5, 2.5, 2.5])


@pytest.mark.parametrize("scheduler", ENGINES)
def test_a_request_alone_is_admitted_even_beyond_the_memory(scheduler):
    # job 0 reserves 5 GB of 1 GB free: admitted on the idle node; job 1 (0.5 GB) waits for it
    times = _serve(scheduler, [0.0, 0.0], [0.0, 0.0], [10, 10], reserve=[5.0, 0.5], memory_gb=1.0)
    assert np.allclose(times.admit_s, [0.0, 1.0])
    assert np.allclose(times.finish_s, [1.0, 2.0])


def _two_together(scheduler):
    """The server of the two-requests-together cases above, jobs added (reserving 2 and 1 GB),
    at time 0."""
    from qlmio_opt.simulator.engine import node_server

    server = node_server(
        scheduler,
        concurrency=8,
        memory_gb=np.inf,
        weights_gb=1.0,
        decode_tok_s=10.0,
        prefill_tok_s=100.0,
        max_batched_tokens=50,
    )
    jobs = _jobs([0.0, 0.0], [1.0, 2.0], [10, 5], reserve=[2.0, 1.0])
    jobs.prompt_tokens, jobs.image_tokens = np.array([70.0, 100.0]), np.array([30.0, 0.0])
    server.add(jobs)
    return server


def test_observe_serial_streams_tokens_and_never_the_length():
    server = _two_together("serial-prefill")
    # at 2.0: job 0 prefilled at 1.0 but job 1's prefill [1, 3] pauses it (0 tokens); both
    # hold their reservations
    seen = server.observe(2.0)
    assert [(v.job, v.output_tokens) for v in seen.running] == [(0, 0), (1, 0)]
    assert (seen.running[0].prompt_tokens, seen.running[0].image_tokens) == (70, 30)
    assert seen.waiting == () and seen.in_transit == ()
    assert np.isclose(seen.kv_used_gb, 3.0)
    # at 3.45 both have decoded 0.45 / 0.1 = 4.5 steps: 4 whole tokens each
    assert [v.output_tokens for v in server.observe(3.45).running] == [4, 4]
    # job 1 (5 tokens) ended at 3.5; job 0 shows 9 tokens just before its 10th at 4.0: the
    # count never reaches (or reveals) its true length while it runs
    seen = server.observe(3.999)
    assert [(v.job, v.output_tokens) for v in seen.running] == [(0, 9)]
    assert np.isclose(seen.kv_used_gb, 2.0)
    seen = server.observe(10.0)
    assert seen.running == () and seen.kv_used_gb == 0.0


def test_observe_chunked_counts_tokens_decoded_during_a_prefill():
    server = _two_together("chunked-prefill")
    # job 0 (100 tokens of 0.01 s) prefills alone in 1.0 s; by 2.0 job 1's prefill steps of
    # 0.99 s (see the chunked two-requests case) have given job 0 1 / 0.99 = 1.01 tokens
    seen = server.observe(2.0)
    assert [(v.job, v.output_tokens) for v in seen.running] == [(0, 1), (1, 0)]
    assert np.isclose(seen.kv_used_gb, 3.0)
