"""The service on HTTP: a FastAPI app over a :class:`~.core.Service`.

Bodies are read as bytes and validated by the service (so a refusal says what the command line
would say about the same data), solving runs in a worker thread (the event loop stays free for
``/healthz`` and ``/metrics``), and the OpenAPI schema names the bodies' models.
"""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from qlmio_opt.domain.solution import Solution
from qlmio_opt.faces.service.bodies import (
    CompletionBody,
    Health,
    NodeStateBody,
    Problem,
    StateView,
    WindowBody,
)
from qlmio_opt.faces.service.core import Refused, Service

API_VERSION = "1"
"""The version of the HTTP interface (the paths carry it as /v1). The package's version stays out
of the schema, so the shipped schema changes only when the interface does."""

REF = "#/components/schemas/{model}"
_bearer = HTTPBearer(auto_error=False, description="Required when the service has --token-file.")


def create_app(service: Service | None, token: str | None = None) -> FastAPI:
    """The HTTP face of ``service``; every path but ``/healthz`` needs ``token`` when given.
    (Without a service the app only describes itself: :func:`openapi_document`.)"""
    app = FastAPI(
        title="qlmio-opt scheduling service",
        version=API_VERSION,
        description="Window after window, which node serves each request (docs/service.md).",
    )
    app.state.service = service
    guard = [Depends(_authorised(token))]

    @app.post(
        "/v1/windows",
        dependencies=guard,
        openapi_extra=_io(WindowBody, Solution, "The window's decision: a solution document."),
        summary="Decide the window closing now",
    )
    async def windows(request: Request) -> Response:
        service = _service(request)
        result = await run_in_threadpool(service.decide_window, await request.body())
        headers = {
            "X-Qlmio-Decision-Seconds": f"{result.decision_s:.6f}",
            "X-Qlmio-Wait-Seconds": f"{result.wait_s:.6f}",
        }
        if result.fallback:
            headers["X-Qlmio-Fallback"] = result.fallback
        return JSONResponse(result.solution, headers=headers)

    @app.post(
        "/v1/completions",
        dependencies=guard,
        openapi_extra=_io(CompletionBody, None, "The request is no longer in flight."),
        summary="A dispatched request finished",
    )
    async def completions(request: Request) -> Any:
        return await run_in_threadpool(_service(request).complete, await request.body())

    @app.post(
        "/v1/nodes/{node_id}/state",
        dependencies=guard,
        openapi_extra=_io(NodeStateBody, None, "The state replaces the node's record."),
        summary="A node's state as its engine reports it",
    )
    async def node_state(node_id: str, request: Request) -> Any:
        body = await request.body()
        return await run_in_threadpool(_service(request).observe, node_id, body)

    @app.get("/v1/state", dependencies=guard, response_model=StateView, summary="Nodes and pending")
    async def state(request: Request) -> Any:
        return await run_in_threadpool(_service(request).state)

    @app.get("/healthz", response_model=Health, summary="Liveness")
    async def healthz(request: Request) -> Any:
        return _service(request).health()

    @app.get(
        "/metrics",
        dependencies=guard,
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text."}},
    )
    async def metrics(request: Request) -> Response:
        text = await run_in_threadpool(_service(request).metrics_text)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, Refused)
        _service(request).metrics.refused.labels(str(error.status)).inc()
        return JSONResponse(
            _problem(error.kind, error.error.render(), error.error.issues), error.status
        )

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException is one too
    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        _service(request).metrics.refused.labels(str(error.status_code)).inc()
        body = _problem("refused", str(error.detail), [])
        return JSONResponse(body, error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        _service(request).metrics.refused.labels("500").inc()
        message = f"internal error: {type(error).__name__}: {error} (a bug in qlmio-opt)"
        return JSONResponse(_problem("internal error", message, []), 500)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


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
    "409": "A time earlier than the previous call's.",
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
