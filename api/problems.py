"""The one place where errors become RFC 9457 problem+json responses, each with a stable ``code``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
    "unsafe_input": (400, "Unsafe input rejected"),
    "source_not_found": (404, "Source not found"),
    "not_found": (404, "Not found"),
    "document_unreadable": (422, "Document unreadable"),
    "unauthorized": (401, "Missing or invalid API key"),
    "auth_not_configured": (403, "No API keys configured for this route"),
    "forbidden_path": (403, "Path outside the allowed ingestion roots"),
    "payload_too_large": (413, "Request body too large"),
    "rate_limited": (429, "Too many requests"),
    "ingestion_running": (409, "An ingestion is already running"),
    "index_not_ready": (503, "Index not ready"),
    "store_unavailable": (503, "Vector store unavailable"),
    "overloaded": (503, "Server busy"),
    "not_ready": (503, "Service not ready"),
    "model_error": (502, "Generator failed"),
    "timeout": (504, "Request timed out"),
    "invalid_config": (500, "Server misconfigured"),
    "internal_error": (500, "Internal error"),
    "method_not_allowed": (405, "Method not allowed"),
}
RETRY_AFTER_S = {"store_unavailable": 5, "index_not_ready": 30, "overloaded": 2, "not_ready": 5}


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


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.code, str(exc), request, status=exc.status, headers=exc.headers)

    @app.exception_handler(RagError)
    async def _rag_error(request: Request, exc: RagError) -> JSONResponse:
        return problem(exc.code if exc.code in PROBLEMS else "internal_error", str(exc), request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {err.get('msg')}")
        return problem("validation_error", "; ".join(parts), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return problem(code, str(exc.detail), request, status=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
        return problem("internal_error", "an unexpected error occurred; see the server log", request)
