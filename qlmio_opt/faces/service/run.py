"""Running the service: uvicorn on a socket bound before it starts (so the port is known, even
port 0), SIGTERM and SIGINT draining the calls in flight, the state file written at the end, and
a decider process (when the service has one) ended with the server."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator

import uvicorn

from qlmio_opt.faces.service.app import MAX_BODY_BYTES, create_app
from qlmio_opt.faces.service.core import Service
from qlmio_opt.faces.service.relay import Backend, DeciderLost, InThread

DRAIN_TIMEOUT_S = 5
"""Seconds a stopping service waits for the calls in flight (a window's decision takes at most
the solver's time limit, 1 s with ``auto``) before it cancels them."""


SWITCH_INTERVAL_S = 0.0005
"""How often a ``qlmio-opt serve`` process's threads may take the interpreter from each other
(Python's default is 5 ms). While one worker thread decides a window, every other call's work
(HTTP, JSON, validation, metrics) waits for the interpreter up to this long at each hand-over,
several per call: a shorter interval takes that wait out of every call's latency. From
``benchmarks/service_load.py --sizes 100 --windows 100`` (8 clients) on the shared 2-core
machine, run in turn with ``--switch-interval 0.005`` and without: overhead p50 42.3 then 24.6
ms, 38.0 then 28.8 ms. 0.5 ms is the only other value tried (a shorter one switches the
deciding thread out more often). Set only by :func:`serve`, whose process is the service; a
service run in a thread of another program (:func:`serving_in_thread`) leaves that program's
setting alone."""


class _Server(uvicorn.Server):
    """uvicorn's server, but a handled SIGTERM or SIGINT ends the run normally instead of being
    raised again once the server has stopped: the caller's clean-up (the state file) still runs
    and the command exits 0 after a drain. ``on_started`` runs once it accepts calls (its signal
    handlers are in place by then)."""

    on_started: Callable[[], None] | None = None
    backend: Backend | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.backend is not None:
            await self.backend.open()
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)  # the drain: the calls in flight are answered first
        if self.backend is not None:
            await self.backend.aclose()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _server(backend: Backend, token: str | None, max_body_bytes: int) -> _Server:
    config = uvicorn.Config(
        create_app(backend, token, max_body_bytes),
        log_level="warning",
        access_log=False,  # a line per call would cost more than the call (a gateway's rate)
        timeout_graceful_shutdown=DRAIN_TIMEOUT_S,
        lifespan="off",
    )
    server = _Server(config)
    server.backend = backend
    backend.on_lost = lambda: setattr(server, "should_exit", True)
    return server


def _backend(service: Service | Backend) -> Backend:
    return InThread(service) if isinstance(service, Service) else service


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on the connections it accepts only then,
    # and without it Nagle's algorithm and delayed ACKs held every keep-alive answer ~40 ms
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def serve(
    service: Service | Backend,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    token: str | None = None,
    announce: Callable[[str], None] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> None:
    """Serve ``service`` (a Service decided in worker threads, or a :class:`.DeciderProcess`,
    started here) until SIGTERM or SIGINT; ``announce`` gets the address once bound.

    Raises
    ------
    InputError
        When a decider process cannot build its service (before anything listens).
    DeciderLost
        When the decider process ended while serving (the server stops at once).
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    backend = _backend(service)
    backend.start()
    try:
        sock = bind(host, port)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        server = _server(backend, token, max_body_bytes)
        server.on_started = lambda: (announce or _stderr)(f"http://{shown}:{bound_port}")
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
    finally:
        backend.close(save=True)
    if backend.lost is not None:
        raise DeciderLost(backend.lost)


def _stderr(address: str) -> None:
    print(f"listening on {address}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def serving_in_thread(
    service: Service | Backend, *, token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES
) -> Iterator[str]:
    """Serve ``service`` (a Service decided in worker threads, or a :class:`.DeciderProcess`,
    started here) on a free loopback port in a thread of this process; yields its address and
    stops it (draining) on exit. For tests and benchmarks that want the real HTTP server next to
    in-process calls."""
    backend = _backend(service)
    backend.start()
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = _server(backend, token, max_body_bytes)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            threading.Event().wait(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
        backend.close(save=False)
