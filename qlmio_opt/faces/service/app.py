"""The service on HTTP: a FastAPI app over a :class:`~.core.Service`.

Bodies are read as bytes and validated by the service (so a refusal says what the command line
would say about the same data), in a worker thread or in the decider process (:mod:`.relay`: the
event loop stays free for ``/healthz`` and for other calls), and the OpenAPI schema names the
bodies' models.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from qlmio_opt.domain.errors import InputError, Issue
from qlmio_opt.domain.solution import Solution
from qlmio_opt.faces.service.bodies import (
    MAX_WAIT_S,
    ClockBody,
    CompletionBody,
    Health,
    NodeStateBody,
    Problem,
    RequestAnswer,
    RequestBody,
    StateView,
    WindowBody,
)
from qlmio_opt.faces.service.core import Refused, Service
from qlmio_opt.faces.service.relay import Backend, InThread

API_VERSION = "1"
"""The version of the HTTP interface (the paths carry it as /v1). The package's version stays out
of the schema, so the shipped schema changes only when the interface does."""

MAX_BODY_BYTES = 16 * 2**20
"""The largest body a call may send (``--max-body-mb``): a request object of the shipped traces
is under 1 KB as JSON, so 16 MiB holds a window of more than 10,000 of them (the load benchmark's
largest is 1,000), while a runaway client cannot make the service buffer gigabytes."""

_WAIT_PARAMETER = {
    "name": "wait_s",
    "in": "query",
    "required": False,
    "description": "Seconds to wait for the request's window to decide it (default 0).",
    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S, "default": 0},
}

ANSWER_STATUS = {"dispatched": 200, "waiting": 202, "failed": 500}

REF = "#/components/schemas/{model}"
_bearer = HTTPBearer(auto_error=False, description="Required when the service has --token-file.")


def create_app(
    service: Service | Backend | None,
    token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The HTTP face of ``service`` (a Service is decided in worker threads: :class:`.InThread`);
    every path but ``/healthz`` needs ``token`` when given, and a body over ``max_body_bytes`` is
    refused (413). (Without a service the app only describes itself: :func:`openapi_document`.)"""
    app = FastAPI(
        title="qlmio-opt scheduling service",
        version=API_VERSION,
        description="Window after window, which node serves each request (docs/service.md).",
    )
    app.state.backend = InThread(service) if isinstance(service, Service) else service
    app.state.max_body_bytes = max_body_bytes
    guard = [Depends(_authorised(token))]

    @app.post(
        "/v1/windows",
        dependencies=guard,
        openapi_extra=_io(WindowBody, Solution, "The window's decision: a solution document."),
        summary="Decide the window closing now",
    )
    async def windows(request: Request) -> Response:
        result = await _backend(request).decide_window(await _body(request))
        headers = {
            "X-Qlmio-Decision-Seconds": f"{result.decision_s:.6f}",
            "X-Qlmio-Wait-Seconds": f"{result.wait_s:.6f}",
        }
        if result.fallback:
            headers["X-Qlmio-Fallback"] = result.fallback
        # encoded by the decider (as JSONResponse would): the event loop only sends it
        return Response(result.document, headers=headers, media_type="application/json")

    @app.post(
        "/v1/completions",
        dependencies=guard,
        openapi_extra=_io(CompletionBody, None, "The request is no longer in flight."),
        summary="A dispatched request finished",
    )
    async def completions(request: Request) -> Any:
        return await _backend(request).call("complete", await _body(request))

    @app.post(
        "/v1/nodes/{node_id}/state",
        dependencies=guard,
        openapi_extra=_io(NodeStateBody, None, "The state replaces the node's record."),
        summary="A node's state as its engine reports it",
    )
    async def node_state(node_id: str, request: Request) -> Any:
        body = await _body(request)
        return await _backend(request).call("observe", node_id, body)

    @app.post(
        "/v1/requests",
        dependencies=guard,
        openapi_extra=_io(
            RequestBody,
            RequestAnswer,
            "Dispatched: its node (202 while its window has not decided it within wait_s).",
        ),
        summary="One request, into the window of its arrival (windowing mode)",
    )
    async def single_request(request: Request) -> Response:
        backend = _backend(request)
        request_id, wait_s = await backend.call("submit_request", await _body(request))
        return await _answer_when_decided(backend, request_id, wait_s)

    @app.get(
        "/v1/requests/{request_id}",
        dependencies=guard,
        response_model=RequestAnswer,
        openapi_extra={"parameters": [_WAIT_PARAMETER]},
        summary="A request posted one at a time: its node, or that it waits",
    )
    async def single_answer(request_id: str, request: Request) -> Response:
        backend = _backend(request)
        wait = _checked_wait(request.query_params.get("wait_s"), request_id)
        await backend.call("request_answer", request_id)  # 404 for an unknown id
        return await _answer_when_decided(backend, request_id, wait)

    @app.post(
        "/v1/clock",
        dependencies=guard,
        openapi_extra=_io(ClockBody, None, "The windows due by now are decided."),
        summary="The gateway's clock: close the windows due (windowing mode)",
    )
    async def clock(request: Request) -> Any:
        return await _backend(request).call("tick", await _body(request))

    @app.get("/v1/state", dependencies=guard, response_model=StateView, summary="Nodes and pending")
    async def state(request: Request) -> Any:
        return await _backend(request).call("state")

    @app.get("/healthz", response_model=Health, summary="Liveness")
    async def healthz(request: Request) -> Any:
        return _backend(request).health()

    @app.get(
        "/metrics",
        dependencies=guard,
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text."}},
    )
    async def metrics(request: Request) -> Response:
        text = await _backend(request).metrics_text()
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, Refused)
        _backend(request).metrics.refused.labels(str(error.status)).inc()
        return JSONResponse(
            _problem(error.kind, error.error.render(), error.error.issues), error.status
        )

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException is one too
    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        _backend(request).metrics.refused.labels(str(error.status_code)).inc()
        body = _problem("refused", str(error.detail), [])
        return JSONResponse(body, error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        _backend(request).metrics.refused.labels("500").inc()
        kind = getattr(error, "type_name", type(error).__name__)  # the decider's, when relayed
        message = f"internal error: {kind}: {error} (a bug in qlmio-opt)"
        return JSONResponse(_problem("internal error", message, []), 500)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


async def _body(request: Request) -> bytes:
    """The call's body, refused (413) past the app's limit before it is all read."""
    limit: int = request.app.state.max_body_bytes
    source = f"{request.method} {request.url.path}"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(source, f"{int(declared)} bytes", limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(source, f"over {limit} bytes", limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(source: str, size: str, limit: int) -> Refused:
    issue = Issue(
        "",
        f"the body ({size}) is over the service's limit of {limit} bytes "
        f"({limit / 2**20:g} MiB, --max-body-mb); send smaller windows or raise the limit",
    )
    return Refused(413, InputError(issue, source), "body too large")


async def _answer_when_decided(backend: Backend, request_id: str, wait_s: float) -> Response:
    """The request's answer once its window decides it, or after ``wait_s`` (202: waiting).
    The wait holds no thread: the window's closer wakes this call through the event loop."""
    loop = asyncio.get_running_loop()
    decided = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(decided.set)

    handle = await backend.watch_request(request_id, wake)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(decided.wait(), wait_s)
    finally:
        if handle is not None:
            await backend.unwatch_request(request_id, handle)
    answer = await backend.call("request_answer", request_id)
    return JSONResponse(answer, ANSWER_STATUS[answer["status"]])


def _checked_wait(text: str | None, request_id: str) -> float:
    """The ``wait_s`` query parameter: seconds in ``[0, MAX_WAIT_S]`` (default 0)."""
    if text is None:
        return 0.0
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT_S:
        issue = Issue("wait_s", f"must be a number of seconds in [0, {MAX_WAIT_S:g}]; got {text!r}")
        raise Refused(422, InputError(issue, f"GET /v1/requests/{request_id}"))
    return wait


def openapi_document() -> dict[str, Any]:
    """The service's OpenAPI schema (shipped as ``openapi.json`` beside this module; regenerate
    it with ``python -m qlmio_opt.faces.service.app > qlmio_opt/faces/service/openapi.json``)."""
    return create_app(None).openapi()


def _authorised(token: str | None) -> Any:
    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
            )

    return check


def _problem(kind: str, message: str, issues: list[Any]) -> dict[str, Any]:
    return {
        "error": kind,
        "message": message,
        "issues": [{"path": i.path, "message": i.message} for i in issues],
    }


_ERRORS = {
    "400": "Malformed JSON.",
    "401": "Missing or wrong bearer token.",
    "404": "Unknown node or request.",
    "409": "A time earlier than the previous call's, or a call of another mode.",
    "413": "A body over the service's size limit.",
    "422": "Invalid body: every issue with its JSON path.",
}


def _io(body: type[BaseModel], answer: type[BaseModel] | None, said: str) -> dict[str, Any]:
    """The OpenAPI request body and responses of a call whose body the service reads itself."""
    ok: dict[str, Any] = {"description": said}
    if answer is not None:
        ok["content"] = {
            "application/json": {"schema": {"$ref": REF.format(model=answer.__name__)}}
        }
    problem = {"application/json": {"schema": {"$ref": REF.format(model="Problem")}}}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=body.__name__)}}},
        },
        "responses": {
            "200": ok,
            **{code: {"description": d, "content": problem} for code, d in _ERRORS.items()},
        },
    }


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        models: list[tuple[type[BaseModel], Any]] = [
            (WindowBody, "validation"),
            (CompletionBody, "validation"),
            (NodeStateBody, "validation"),
            (RequestBody, "validation"),
            (ClockBody, "validation"),
            (RequestAnswer, "serialization"),
            (Solution, "serialization"),
            (Problem, "serialization"),
        ]
        _, defs = models_json_schema(models, ref_template=REF)
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            schemas.setdefault(name, definition)
        app.openapi_schema = schema
    return app.openapi_schema


if __name__ == "__main__":
    print(json.dumps(openapi_document(), indent=1))
