"""The observe middleware: a request id on every response, per-route metrics and one JSON log line per request."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import Response

from api.deps import app_services
from api.guards import client_id
from api.problems import ApiError, problem

log = logging.getLogger("rag.api")
MAX_REQUEST_ID_CHARS = 64


def request_id_for(request: Request) -> str:
    """The caller's X-Request-ID when it is short and plain (it is echoed and logged), else a fresh one."""
    request_id = request.headers.get("x-request-id", "")[:MAX_REQUEST_ID_CHARS] or uuid.uuid4().hex
    if not all(ch.isalnum() or ch in "-_" for ch in request_id):
        request_id = uuid.uuid4().hex
    return request_id


async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Installed with ``app.middleware("http")``; sets ``request.state.request_id`` for the routes."""
    request_id = request_id_for(request)
    request.state.request_id = request_id
    started = time.perf_counter()
    try:
        response = await call_next(request)
    except ApiError as exc:  # raised while reading the body (size limit)
        response = problem(exc.code, str(exc), request, status=exc.status, headers=exc.headers)
    route = getattr(request.scope.get("route"), "path", "unmatched")
    elapsed = time.perf_counter() - started
    services = app_services(request)
    if services is not None:
        services.metrics.requests.labels(route=route, method=request.method, status=str(response.status_code)).inc()
        services.metrics.latency.labels(route=route).observe(elapsed)
    response.headers["X-Request-ID"] = request_id
    log.info(
        "request",
        extra={
            "request_id": request_id,
            "route": route,
            "method": request.method,
            "status": response.status_code,
            "duration_ms": round(elapsed * 1000, 2),
            "client": client_id(request),
        },
    )
    return response
