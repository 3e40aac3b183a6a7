"""The FastAPI application. ``create_app`` builds everything from one ``Settings``; no module-level state."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from api.guards import BodySizeLimit, GenerationGate, KeyChecker, RateLimiter, client_id
from api.jobs import Job, JobRunner, allowed_path
from api.observability import Metrics, QueryLog, configure_json_logging
from api.problems import ApiError, install_problem_handlers, problem
from ingest.pipeline import IngestionPipeline
from rag.embedding import Embedder
from rag.errors import RagError
from rag.generation.answerer import Answerer, make_answerer
from rag.index_status import index_status
from rag.pipeline import QueryPipeline, QueryResponse, StreamEvent
from rag.settings import Settings
from rag.store import VectorStore, make_client

log = logging.getLogger("rag.api")
STATIC = Path(__file__).parent / "static"
COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$"


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(max_length=100_000, description="The question; normalised and screened before use.")
    top_k: int | None = Field(None, ge=1, le=20, description="Chunks to retrieve (default 4, RAG_TOP_K).")
    collection: str | None = Field(None, pattern=COLLECTION_PATTERN, description="Default: RAG_COLLECTION.")
    mode: Literal["dense", "bm25", "hybrid"] | None = Field(None, description="Default: RAG_RETRIEVAL_MODE.")
    filters: dict[str, Any] | None = Field(
        None, description='Metadata filter on doc_id, source, title or format, e.g. {"format": {"$in": ["pdf"]}}.'
    )


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(min_length=1, max_length=100, description="Paths under RAG_INGEST_ROOTS.")
    collection: str | None = Field(None, pattern=COLLECTION_PATTERN)
    prune: bool = True


class JobAccepted(BaseModel):
    job_id: str
    state: str
    status_url: str


class Services:
    """Everything a request needs, built once per process and shared by all requests."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, answerer: Answerer | None = None) -> None:
        self.settings = settings
        self.embedder = embedder or Embedder(settings)
        self.client = make_client(settings)
        self.answerer: Answerer = answerer or make_answerer(settings, embed=self.embedder.embed)
        self._pipelines: dict[str, QueryPipeline] = {}
        self.gate = GenerationGate(
            settings.max_concurrent_generations, settings.max_queued_requests, settings.request_timeout_s
        )
        self.keys = KeyChecker(settings)
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self.metrics = Metrics()
        self.query_log = QueryLog(settings)
        self.jobs = JobRunner(settings, self.ingestion_pipeline)
        self.ready = False

    def store(self, collection: str) -> VectorStore:
        return VectorStore(self.settings, collection, client=self.client)

    def pipeline(self, collection: str | None = None) -> QueryPipeline:
        name = collection or self.settings.collection
        if name not in self._pipelines:
            settings = (
                self.settings if name == self.settings.collection else self.settings.with_overrides(collection=name)
            )
            self._pipelines[name] = QueryPipeline(
                settings, embedder=self.embedder, store=self.store(name), answerer=self.answerer
            )
        return self._pipelines[name]

    def ingestion_pipeline(self, collection: str) -> IngestionPipeline:
        settings = self.settings.with_overrides(collection=collection)
        return IngestionPipeline(settings, embedder=self.embedder, store=self.store(collection), progress=False)

    def warm_up(self) -> None:
        """Load the encoder and the generator before the first request, so readiness means ready."""
        _ = self.embedder.model
        load = getattr(self.answerer.generator, "load", None)
        if callable(load):
            load()
        self.ready = True


def create_app(settings: Settings | None = None, *, services: Services | None = None, warm: bool = True) -> FastAPI:
    settings = settings or Settings()
    configure_json_logging()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.services is None:
            app.state.services = await run_in_threadpool(Services, settings)
        if warm and not app.state.services.ready:
            await run_in_threadpool(app.state.services.warm_up)
        yield

    app = FastAPI(
        title="rag",
        version="0.1.0",
        description="Grounded answers with citations over your documents, or an honest abstention.",
        lifespan=lifespan,
    )
    app.state.services = services
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Response:
        request_id = request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
        if not all(ch.isalnum() or ch in "-_" for ch in request_id):
            request_id = uuid.uuid4().hex
        request.state.request_id = request_id
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except ApiError as exc:  # raised while reading the body (size limit)
            response = problem(exc.code, str(exc), request, status=exc.status, headers=exc.headers)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        elapsed = time.perf_counter() - started
        services: Services | None = request.app.state.services
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

    def services_dep(request: Request) -> Services:
        services: Services | None = request.app.state.services
        if services is None or not services.ready:
            raise ApiError(503, "not_ready", "the service is still loading its models", {"Retry-After": "5"})
        return services

    def rate_limited(request: Request, services: Services = Depends(services_dep)) -> Services:
        services.limiter.check(client_id(request))
        return services

    def query_access(request: Request, services: Services = Depends(rate_limited)) -> Services:
        if services.settings.require_key_for_query:
            services.keys.require(request)
        return services

    def admin_access(request: Request, services: Services = Depends(rate_limited)) -> Services:
        services.keys.require(request)
        return services

    def record(services: Services, question: str, event: StreamEvent) -> None:
        response = event.data
        assert isinstance(response, QueryResponse)
        services.metrics.observe_answer(response)
        try:
            services.query_log.append(question, response, event.query_embedding, event.top_score)
        except OSError:
            log.exception("could not append to the query log", extra={"request_id": response.request_id})

    def events(services: Services, body: QueryRequest, request_id: str) -> Iterator[StreamEvent]:
        return services.pipeline(body.collection).stream(
            body.question,
            top_k=body.top_k,
            mode=body.mode,
            filters=body.filters,
            request_id=request_id,
            generation_slot=services.gate.slot,
        )

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: models loaded, store reachable, index present."""
        services: Services | None = request.app.state.services
        checks: dict[str, Any] = {"models_loaded": bool(services and services.ready)}
        if services is not None:
            try:
                info = await run_in_threadpool(
                    index_status, services.settings, services.store(services.settings.collection)
                )
                checks.update(store="ok", index_version=info["index_version"], chunks=info["chunks_in_store"])
            except RagError as exc:
                checks.update(store=f"unavailable: {exc}")
        ready = checks["models_loaded"] and checks.get("store") == "ok" and bool(checks.get("index_version"))
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["ops"])
    async def metrics(request: Request) -> Response:
        services: Services | None = request.app.state.services
        if services is None:
            return Response(b"", media_type=CONTENT_TYPE_LATEST)
        services.metrics.queue_depth.set(services.gate.depth)
        return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/info", tags=["query"])
    async def info(services: Services = Depends(query_access)) -> dict[str, Any]:
        """Versions and the pipeline configuration this process serves."""
        pipeline = services.pipeline()
        return {
            "versions": pipeline.versions(pipeline.retriever.index_version()).model_dump(),
            "config": pipeline.to_dict(),
        }

    @app.post("/v1/query", response_model=QueryResponse, tags=["query"])
    async def query(body: QueryRequest, request: Request, services: Services = Depends(query_access)) -> QueryResponse:
        """Answer a question with citations, or abstain with the fixed answer."""

        def run() -> StreamEvent:
            for event in events(services, body, request.state.request_id):
                if event.event == "result":
                    return event
            raise RuntimeError("pipeline produced no result")

        try:
            event = await asyncio.wait_for(run_in_threadpool(run), timeout=services.settings.request_timeout_s)
        except TimeoutError as exc:
            raise ApiError(504, "timeout", f"no answer within {services.settings.request_timeout_s:.0f}s") from exc
        record(services, body.question, event)
        assert isinstance(event.data, QueryResponse)
        return event.data

    @app.post("/v1/query/stream", tags=["query"], response_class=StreamingResponse)
    async def query_stream(
        body: QueryRequest, request: Request, services: Services = Depends(query_access)
    ) -> Response:
        """Server-sent events: `token` events with text deltas, then one `result` event with the full response."""
        iterator = events(services, body, request.state.request_id)
        first = await run_in_threadpool(next, iterator)  # validation, retrieval and queueing errors → HTTP problems

        def sse() -> Iterator[str]:
            event: StreamEvent | None = first
            try:
                while event is not None:
                    if event.event == "token":
                        yield f"event: token\ndata: {json.dumps({'delta': event.data})}\n\n"
                    else:
                        record(services, body.question, event)
                        assert isinstance(event.data, QueryResponse)
                        yield f"event: result\ndata: {event.data.model_dump_json()}\n\n"
                    event = next(iterator, None)
            except RagError as exc:
                yield f"event: error\ndata: {json.dumps({'code': exc.code, 'detail': str(exc)})}\n\n"
            finally:
                iterator.close()  # type: ignore[attr-defined]

        return StreamingResponse(
            iterate_in_threadpool(sse()),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/v1/ingest", status_code=202, response_model=JobAccepted, tags=["admin"])
    async def ingest(body: IngestRequest, request: Request, services: Services = Depends(admin_access)) -> JobAccepted:
        """Start a background ingestion of paths under the configured roots (API key required)."""
        paths = [allowed_path(raw, services.settings.ingest_roots) for raw in body.paths]
        job = services.jobs.submit(paths, body.collection or services.settings.collection, body.prune)
        return JobAccepted(job_id=job.id, state=job.state, status_url=f"/v1/jobs/{job.id}")

    @app.get("/v1/jobs/{job_id}", response_model=Job, tags=["admin"])
    async def job_status(job_id: str, services: Services = Depends(admin_access)) -> Job:
        """State and summary of an ingestion job (API key required)."""
        return services.jobs.get(job_id)

    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory api.app:app_from_env` (used with several workers)."""
    return create_app(Settings())
