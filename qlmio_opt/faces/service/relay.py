"""Who decides the HTTP face's calls: a :class:`~.core.Service` in worker threads of the serving
process (:class:`InThread`), or a decider process the calls are relayed to (:class:`DeciderProcess`,
``qlmio-opt serve --decider process``; the other side is :mod:`.decider`). The app
(:mod:`.app`) awaits the same calls on either."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool

from qlmio_opt.domain.errors import InputError, Issue
from qlmio_opt.faces.service.core import Refused, Service, WindowResult
from qlmio_opt.faces.service.decider import FRONT_END_METRICS, HEADER, encode_frame, read_frame
from qlmio_opt.faces.service.metrics import Metrics
from qlmio_opt.faces.service.windowing import Watcher

DECIDERS = ("thread", "process")

DECIDER_EXIT_TIMEOUT_S = 10.0
"""Seconds a stopping service waits for its decider process to answer what it still holds, write
the state file and exit, before it kills it: a call being decided takes at most the solver's
time limit (``auto``: 1 s), and the calls it holds were cut by the drain (5 s) already."""

_LAUNCH = "import sys; from qlmio_opt.faces.service.decider import main; main()"


class DeciderLost(RuntimeError):
    """The decider process ended while the service was serving."""


class RelayedError(RuntimeError):
    """An error the decider did not expect, told to the serving process (its type's name kept
    for the 500's message)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


class InThread:
    """The service's calls decided in worker threads of this process (one lock: :mod:`.core`).

    Parameters
    ----------
    service
        The service (its scheduler, state file and metrics).
    """

    def __init__(self, service: Service) -> None:
        self.service = service
        self.metrics = service.metrics
        self.site_name = service.site_name
        self.solver_name = service.solver_name
        self.restored = service.restored
        self.on_lost: Callable[[], None] | None = None
        self.lost: str | None = None

    def start(self) -> None:
        """Nothing to start: the service is built."""

    async def open(self) -> None:
        """Nothing to open on the event loop."""

    async def decide_window(self, body: bytes) -> WindowResult:
        return await run_in_threadpool(self.service.decide_window, body)

    async def call(self, name: str, *args: Any) -> Any:
        """Any other call of the service (:data:`.decider.RELAYED_CALLS`), in a worker thread."""
        return await run_in_threadpool(getattr(self.service, name), *args)

    async def watch_request(self, request_id: str, wake: Watcher) -> Any:
        return await run_in_threadpool(self.service.watch_request, request_id, wake)

    async def unwatch_request(self, request_id: str, handle: Any) -> None:
        await run_in_threadpool(self.service.unwatch_request, request_id, handle)

    async def metrics_text(self) -> bytes:
        return await run_in_threadpool(self.service.metrics_text)

    def health(self) -> dict[str, Any]:
        return self.service.health()

    async def aclose(self) -> None:
        """Nothing to close on the event loop."""

    def close(self, save: bool = True) -> None:
        """Stop the windowing clock and (``save``) write the state file."""
        self.service.stop()
        if save:
            self.service.save()


class DeciderProcess:
    """The service's calls relayed to a decider process that owns the Service (:mod:`.decider`).

    Parameters
    ----------
    recipe
        A picklable callable that builds the Service in the decider process (a module-level
        function or a ``functools.partial`` of one, e.g. of :func:`.decider.service_of`).
    """

    def __init__(self, recipe: Callable[[], Service]) -> None:
        self.recipe = recipe
        self.metrics = Metrics()  # the calls this process refuses itself (FRONT_END_METRICS)
        self.site_name = self.solver_name = ""
        self.restored = False
        self.on_lost: Callable[[], None] | None = None
        self.lost: str | None = None
        self._health: dict[str, Any] = {}
        self._windows = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._connecting: asyncio.Task[asyncio.StreamWriter] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        self._answers: dict[int, asyncio.Future[tuple[Any, ...]]] = {}
        self._wakes: dict[int, Watcher] = {}

    # -- starting and stopping (outside the event loop) ------------------------------------------
    def start(self) -> None:
        """Start the decider process and wait until its Service is built.

        Raises
        ------
        InputError
            What the recipe raised (a bad site, solver or state file), as the command line
            says it.
        """
        if self._process is not None:
            return
        ours, theirs = socket.socketpair()
        # the child imports what this process imports: the same package, the same recipe
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        self._sock = ours
        try:
            ours.sendall(encode_frame(self.recipe))
            with ours.makefile("rb") as stream:
                ready = read_frame(stream)
        except BaseException:
            self.close()
            raise
        if ready is None or ready[0] != "ready":
            self.close()
            raise _start_error(ready, self._process.returncode)
        info = ready[1]
        self._health = dict(info["health"])
        self._windows = int(self._health["windows"])
        self.site_name, self.solver_name = info["site_name"], info["solver_name"]
        self.restored = bool(info["restored"])
        ours.setblocking(False)

    def close(self, save: bool = True) -> None:
        """Close the pair (the decider then stops its clock, writes the state file and exits)
        and wait for the process (killed after :data:`DECIDER_EXIT_TIMEOUT_S`). ``save`` is the
        decider's to do: it always writes the state file as it exits."""
        if self._writer is None and self._sock is not None:
            self._sock.close()  # never handed to the event loop
        self._sock = None
        if self._process is not None:
            try:
                self._process.wait(timeout=DECIDER_EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    # -- the calls (on the event loop) -----------------------------------------------------------
    async def open(self) -> None:
        """Connect to the decider on the server's event loop (as it starts: a decider that ends
        before any call stops the server all the same)."""
        await self._connected()

    async def decide_window(self, body: bytes) -> WindowResult:
        document, fallback, decision_s, wait_s = await self._relay("decide_window", body)
        return WindowResult(document, fallback, decision_s, wait_s)

    async def call(self, name: str, *args: Any) -> Any:
        """Any other relayed call (:data:`.decider.RELAYED_CALLS`)."""
        return await self._relay(name, *args)

    async def watch_request(self, request_id: str, wake: Watcher) -> Any:
        """Have ``wake`` called once the request is decided (at once when it is); the handle for
        :meth:`unwatch_request`, or None."""
        token = next(self._ids)
        self._wakes[token] = wake
        if await self._relay("watch", request_id, token):
            return token
        self._wakes.pop(token, None)
        return None

    async def unwatch_request(self, request_id: str, handle: Any) -> None:
        self._wakes.pop(handle, None)
        await self._relay("unwatch", request_id, handle)

    async def metrics_text(self) -> bytes:
        theirs: bytes = await self._relay("metrics_text")
        return theirs + self.metrics.text(only=FRONT_END_METRICS)

    def health(self) -> dict[str, Any]:
        """Without asking the decider (it answers while a window is decided): the windows it
        had decided at its last answer."""
        return {**self._health, "windows": self._windows}

    async def aclose(self) -> None:
        """Close this end of the pair (once the server has drained its calls)."""
        if self._reading is not None:
            self._reading.cancel()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    # -- the parts -------------------------------------------------------------------------------
    async def _relay(self, call: str, *args: Any) -> Any:
        writer = await self._connected()
        if self.lost is not None:
            raise DeciderLost(self.lost)
        call_id = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._answers[call_id] = answer
        try:
            # no drain: a call waiting for the socket to empty (the decider reads a frame once
            # done with the one before) would not see its answer until every queued frame but
            # a few was read, hundreds of ms after it came under 8 clients of
            # benchmarks/service_load.py; what the transport buffers is the bodies of the calls
            # in flight, which are in memory already
            writer.write(encode_frame((call_id, time.monotonic(), call, args)))
            reply = await answer
        finally:
            self._answers.pop(call_id, None)
        return _result(reply)

    async def _connected(self) -> asyncio.StreamWriter:
        """The pair's end as an asyncio stream, opened at the first call (on the server's loop)."""
        if self._writer is not None:
            return self._writer
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_unix_connection(sock=self._sock)
        self._writer = writer
        self._reading = asyncio.ensure_future(self._read_answers(reader))
        return writer

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
                call_id, windows, *reply = pickle.loads(await reader.readexactly(size))
                self._windows = windows
                if call_id is None:  # a request is decided: wake its waiting call
                    wake = self._wakes.pop(reply[1], None)
                    if wake is not None:
                        wake()
                    continue
                answer = self._answers.get(call_id)
                if answer is not None and not answer.done():
                    answer.set_result(tuple(reply))
        except (asyncio.IncompleteReadError, ConnectionError):
            self._lose("the decider process ended")
        except Exception as error:  # a frame this side cannot read: no answer would come again
            self._lose(f"the decider's answers cannot be read ({type(error).__name__}: {error})")

    def _lose(self, what: str) -> None:
        """The decider is gone: every waiting call hears it, and the server stops."""
        code = None if self._process is None else self._process.poll()
        self.lost = what + (f" (exit code {code})" if code else "")
        for answer in self._answers.values():
            if not answer.done():
                answer.set_exception(DeciderLost(self.lost))
        if self.on_lost is not None:
            self.on_lost()


Backend = InThread | DeciderProcess


def _result(reply: tuple[Any, ...]) -> Any:
    """A relayed call's result, or what it raised: the decider's refusal as a :class:`Refused`
    (the same status, messages and issues), anything else as a :class:`RelayedError`."""
    kind = reply[0]
    if kind == "ok":
        return reply[1]
    if kind == "refused":
        status, refusal, issues, source = reply[1:]
        return _raise(Refused(status, InputError([Issue(*i) for i in issues], source), refusal))
    return _raise(RelayedError(reply[1], reply[2]))


def _raise(error: Exception) -> Any:
    raise error


def _start_error(ready: Any, code: int | None) -> Exception:
    if ready is None:
        return DeciderLost(f"the decider process ended before it was ready (exit code {code})")
    if ready[0] == "input error":
        return InputError([Issue(*i) for i in ready[1]], ready[2])
    return RelayedError(ready[1], ready[2])
