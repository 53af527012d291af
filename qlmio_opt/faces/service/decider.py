"""The decider process: the service's :class:`~.core.Service` (its Scheduler and state) in a
process of its own, so the windows are decided in another interpreter than the one serving HTTP
(``qlmio-opt serve --decider process``; :mod:`.relay` is the serving side).

The serving process starts ``python -c "...decider import main; main()" FD`` with one end of a
socket pair as ``FD``, sends it a recipe (a picklable callable that builds the Service) and then
relays each call that touches the scheduler as one frame: the call's body as the bytes it came
in, parsed, validated, decided and encoded here. Calls are answered one at a time, in the order
they arrive; a call that arrives while an earlier one is being answered waits in the socket, and
that wait is its ``X-Qlmio-Wait-Seconds`` (its own reading, parsing and answering are not).
The process ignores SIGINT and SIGTERM (a terminal's Ctrl-C and a supervisor's SIGTERM to the
whole group reach it too, and the serving process drains its calls first) and ends when the
serving process closes its end of the pair, or dies: it then stops its windowing clock, writes
the state file and exits.
"""

from __future__ import annotations

import pickle
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HEADER = struct.Struct("!Q")
"""A frame: its length (8 bytes, network order), then a pickle. Both ends are this package in two
processes of one program over a private socket pair, so pickle is safe here (never on a
network)."""

RELAYED_CALLS = frozenset(
    {
        "decide_window",
        "submit_request",
        "tick",
        "request_answer",
        "complete",
        "observe",
        "state",
        "metrics_text",
        "watch",
        "unwatch",
    }
)
"""The calls the serving process relays (every one that touches the scheduler or its metrics)."""

FRONT_END_METRICS = frozenset({"qlmio_refused_calls"})
"""Metrics the serving process counts itself (calls it refuses before relaying them: tokens,
paths, body sizes) and merges into ``/metrics``; the decider exports every other one."""


def encode_frame(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def read_frame(stream: Any) -> Any:
    """The next message of a blocking binary ``stream``; None at its end."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return pickle.loads(payload)


class Channel:
    """This process's end of the pair: frames in (one reader), frames out (several writers: the
    calls' answers and the windowing clock's wake-ups)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._in = sock.makefile("rb")
        self._sending = threading.Lock()

    def receive(self) -> Any:
        try:
            return read_frame(self._in)
        except OSError:
            return None

    def send(self, message: Any) -> None:
        frame = encode_frame(message)
        with self._sending:
            self._sock.sendall(frame)


def service_of(site: Path | dict[str, Any], state_file: Path | None = None, **options: Any) -> Any:
    """A recipe's builder: the Service of ``Scheduler(site, **options)`` (``options`` plain
    data: a predictor by name, not a model object). Use it as
    ``functools.partial(service_of, site, solver="greedy")``."""
    from qlmio_opt.app.scheduler import Scheduler
    from qlmio_opt.domain.io import read_instance
    from qlmio_opt.faces.service.core import Service

    loaded = read_instance(site) if isinstance(site, Path) else site
    return Service(Scheduler(loaded, **options), state_file=state_file)


def main() -> None:
    """The decider process's entry point (the socket's file descriptor is ``sys.argv[1]``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = Channel(socket.socket(fileno=int(sys.argv[1])))
    service = _built(channel)
    if service is None:
        sys.exit(2)
    try:
        Decider(service, channel).run()
    except Exception as error:  # a bug: one line (the serving process stops and says so)
        kind = type(error).__name__
        print(f"qlmio-opt decider: internal error: {kind}: {error}", file=sys.stderr)
        sys.exit(1)


def _built(channel: Channel) -> Any:
    """The Service the serving process's recipe builds; None (and why, sent back) when it
    cannot be built: an input error is sent with its issues, as the command line prints them."""
    from qlmio_opt.domain.errors import InputError

    try:
        recipe: Callable[[], Any] | None = channel.receive()
        if recipe is None:
            return None  # the serving process is gone
        service = recipe()
    except InputError as error:
        channel.send(("input error", [tuple(i) for i in error.issues], error.source))
        return None
    except Exception as error:
        channel.send(("error", type(error).__name__, str(error)))
        return None
    channel.send(
        (
            "ready",
            {
                "health": service.health(),
                "site_name": service.site_name,
                "solver_name": service.solver_name,
                "restored": service.restored,
            },
        )
    )
    return service


class Decider:
    """Answers the relayed calls one at a time with ``service``."""

    def __init__(self, service: Any, channel: Channel) -> None:
        self.service = service
        self.channel = channel
        self._watchers: dict[int, Callable[[], None]] = {}

    def run(self) -> None:
        """Answer calls until the serving process closes the pair; then stop and save."""
        free_at = time.monotonic()
        try:
            while (message := self.channel.receive()) is not None:
                call_id, sent_at, call, args = message
                # time.monotonic is CLOCK_MONOTONIC, one clock for every process of the machine:
                # the call waited from its sending until this process was done with the others
                queued_s = max(0.0, free_at - sent_at)
                answer = self.answer(call, args, queued_s)
                self.channel.send((call_id, self.service.windows, *answer))
                free_at = time.monotonic()
        except OSError:
            pass  # the serving process is gone: nobody to answer
        finally:
            self.service.stop()
            self.service.save()

    def answer(self, call: str, args: tuple[Any, ...], queued_s: float) -> tuple[Any, ...]:
        """``("ok", result)``, ``("refused", status, kind, issues, source)`` or ``("error", type,
        message)``."""
        from qlmio_opt.faces.service.core import Refused

        try:
            return ("ok", self._result(call, args, queued_s))
        except Refused as refused:
            issues = [tuple(i) for i in refused.error.issues]
            return ("refused", refused.status, refused.kind, issues, refused.error.source)
        except Exception as error:  # the caller hears it; the decider carries on
            return ("error", type(error).__name__, str(error))

    def _result(self, call: str, args: tuple[Any, ...], queued_s: float) -> Any:
        if call not in RELAYED_CALLS:
            raise ValueError(f"unknown call {call!r}")
        if call == "decide_window":
            result = self.service.decide_window(*args)
            wait_s = queued_s + result.wait_s  # waiting in the socket, then for the lock
            return (result.document, result.fallback, result.decision_s, wait_s)
        if call == "metrics_text":
            return self.service.metrics_text(without=FRONT_END_METRICS)
        if call == "watch":
            return self._watch(*args)
        if call == "unwatch":
            request_id, token = args
            watcher = self._watchers.pop(token, None)
            if watcher is not None:
                self.service.unwatch_request(request_id, watcher)
            return None
        return getattr(self.service, call)(*args)

    def _watch(self, request_id: str, token: int) -> bool:
        """Tell the serving process (event ``token``) once the request is decided; False when
        it was at once."""

        def wake() -> None:
            self._watchers.pop(token, None)
            self.channel.send((None, self.service.windows, "event", token))

        self._watchers[token] = wake
        return self.service.watch_request(request_id, wake) is not None
