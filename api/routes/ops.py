"""Operations: the web page, liveness, readiness and Prometheus metrics (no key, no rate limit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import app_services
from rag.errors import RagError
from rag.indexing.status import index_status
from rag.ml.drift_report import latest_drift_status

STATIC = Path(__file__).resolve().parent.parent / "static"
READINESS: dict[int | str, dict[str, Any]] = {
    503: {"description": "Not ready: the body says which check failed.", "content": {"application/json": {}}}
}

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"], responses=READINESS)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: models loaded, store reachable, index present."""
    services = app_services(request)
    checks: dict[str, Any] = {"models_loaded": bool(services and services.ready)}
    if services is not None:
        try:
            store = services.store(services.settings.collection)
            info = await run_in_threadpool(index_status, services.settings, store)
            checks.update(store="ok", index_version=info["index_version"], chunks=info["chunks_in_store"])
        except RagError as exc:
            checks.update(store=f"unavailable: {exc}")
    ready = checks["models_loaded"] and checks.get("store") == "ok" and bool(checks.get("index_version"))
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


@router.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    services = app_services(request)
    if services is None:
        return Response(b"", media_type=CONTENT_TYPE_LATEST)
    services.metrics.queue_depth.set(services.gate.depth)
    services.metrics.observe_drift(latest_drift_status(services.settings, kind="query_log"))
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
