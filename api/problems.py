"""The one place where errors become RFC 9457 problem+json responses, each with a stable ``code``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.errors import RagError

log = logging.getLogger("rag.api")

PROBLEM_TYPE = "urn:rag:problem:{code}"
MEDIA_TYPE = "application/problem+json"


class ApiError(RagError):
    """An error raised by the HTTP layer itself (auth, limits); carries its status and headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


# code -> (HTTP status, title). Every code the API can answer with is listed here and in docs/OPERATIONS.md.
PROBLEMS: dict[str, tuple[int, str]] = {
    "invalid_input": (422, "Invalid input"),
    "validation_error": (422, "Request body failed validation"),
    "malformed_request": (400, "Request body could not be parsed"),
    "unsafe_input": (400, "Unsafe input rejected"),
    "source_not_found": (404, "Source not found"),
    "not_found": (404, "Not found"),
    "document_unreadable": (422, "Document unreadable"),
    "unauthorized": (401, "Missing or invalid API key"),
    "auth_not_configured": (403, "No API keys configured for this route"),
    "forbidden": (403, "This key may not do that"),
    "forbidden_path": (403, "Path outside the allowed ingestion roots"),
    "payload_too_large": (413, "Request body too large"),
    "rate_limited": (429, "Too many requests"),
    "ingestion_running": (409, "An ingestion is already running"),
    "index_not_ready": (503, "Index not ready"),
    "store_unavailable": (503, "Vector store unavailable"),
    "overloaded": (503, "Server busy"),
    "not_ready": (503, "Service not ready"),
    "model_error": (502, "Generator failed"),
    "generation_timeout": (504, "Generator timed out"),
    "timeout": (504, "Request timed out"),
    "invalid_config": (500, "Server misconfigured"),
    "internal_error": (500, "Internal error"),
    "method_not_allowed": (405, "Method not allowed"),
}
RETRY_AFTER_S = {"store_unavailable": 5, "index_not_ready": 30, "overloaded": 2, "not_ready": 5}


class Problem(BaseModel):
    """The body of every error answer (RFC 9457 problem details plus the project's stable ``code``)."""

    type: str = Field(description="urn:rag:problem:<code>")
    title: str
    status: int
    detail: str = Field(description="What was wrong and what to do about it.")
    code: str = Field(description="Stable, machine-readable error code (see docs/OPERATIONS.md).")
    instance: str | None = Field(None, description="The request path.")
    request_id: str | None = None


def problem_responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problem codes a route can answer with, grouped by HTTP status.

    Declaring them keeps the published schema honest: fuzzing checks every answer against it.
    """
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(PROBLEMS[code][0], []).append(code)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, members in sorted(by_status.items()):
        entry: dict[str, Any] = {
            "description": "; ".join(f"`{code}`: {PROBLEMS[code][1]}" for code in members),
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if status in {429, 503}:
            entry["headers"] = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}}
        responses[status] = entry
    return responses


def _document_problem_schema(app: FastAPI) -> None:
    """Add ``Problem`` to the OpenAPI components, where ``problem_responses`` points."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def problem(
    code: str,
    detail: str,
    request: Request | None = None,
    *,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    default_status, title = PROBLEMS.get(code, (status or 500, code.replace("_", " ").capitalize()))
    status = status or default_status
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE.format(code=code),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    headers = dict(headers or {})
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    if code in RETRY_AFTER_S and "Retry-After" not in headers:
        headers["Retry-After"] = str(RETRY_AFTER_S[code])
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def code_for(exc: RagError) -> str:
    """The exception's own code, else the nearest base class's (a new subclass never turns into a 500)."""
    for cls in type(exc).__mro__:
        code = getattr(cls, "code", None)
        if code in PROBLEMS:
            return str(code)
    return "internal_error"


def install_problem_handlers(app: FastAPI) -> None:
    _document_problem_schema(app)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.code, str(exc), request, status=exc.status, headers=exc.headers)

    @app.exception_handler(RagError)
    async def _rag_error(request: Request, exc: RagError) -> JSONResponse:
        return problem(code_for(exc), str(exc), request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {err.get('msg')}")
        return problem("validation_error", "; ".join(parts), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "malformed_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return problem(code, str(exc.detail), request, status=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
        return problem("internal_error", "an unexpected error occurred; see the server log", request)
