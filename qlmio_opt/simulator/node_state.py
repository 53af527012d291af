"""A node's live state as a scheduler observes it, in the instance's terms.

The engine reports what it runs and queues (prompt and image tokens, output tokens streamed so
far, KV memory in use); the gateway that dispatched the requests adds those still on their way
and knows each request's task and output allowance. Nothing hidden crosses: not a request's true
output length, nor when an upload will land.
"""

from __future__ import annotations

from collections.abc import Sequence

from qlmio_opt.domain.instance import InFlight, NodeState, Request
from qlmio_opt.simulator.engine import JobView, NodeServer


def observed_state(
    server: NodeServer, requests_of_jobs: Sequence[Request], now: float
) -> NodeState:
    """``server``'s state at ``now`` (it is run up to ``now``) as a :class:`NodeState`.

    ``requests_of_jobs[j]`` is the request behind the server's job ``j``. The running requests
    are the engine's admitted ones; the waiting ones are its queue followed by the requests
    dispatched to it and not yet there (both are admitted before anything dispatched later).
    """
    seen = server.observe(now)

    def in_flight(view: JobView) -> InFlight:
        request = requests_of_jobs[view.job]
        return InFlight(
            task=request.task,
            prompt_tokens=view.prompt_tokens,
            image_tokens=view.image_tokens,
            output_tokens=view.output_tokens,
            max_output_tokens=request.max_output_tokens,
        )

    return NodeState(
        running=tuple(in_flight(v) for v in seen.running),
        waiting=tuple(in_flight(v) for v in (*seen.waiting, *seen.in_transit)),
        kv_used_gb=seen.kv_used_gb,
    )
