"""The FastAPI application. ``create_app`` builds everything from one ``Settings``; no module-level state."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request, Security
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from api.guards import BodySizeLimit, GenerationGate, KeyChecker, RateLimiter, client_id
from api.jobs import Job, JobRunner, allowed_path
from api.observability import Metrics, QueryLog, configure_json_logging
from api.problems import ApiError, install_problem_handlers, problem, problem_responses
from ingest.pipeline import IngestionPipeline
from rag.answering.generation.answerer import Answerer, make_answerer
from rag.answering.pipeline import PipelineResult, QueryPipeline, QueryResponse, ResultEvent, StreamEvent, TokenEvent
from rag.errors import NotFoundError, RagError
from rag.indexing.embedding import Embedder
from rag.indexing.manifest import Manifest
from rag.indexing.sparse import FILTERABLE_KEYS
from rag.indexing.status import index_status
from rag.indexing.store import VectorStore, make_client
from rag.ml.drift_report import latest_drift_status
from rag.settings import Settings

log = logging.getLogger("rag.api")
STATIC = Path(__file__).parent / "static"
COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$"

# What each route may answer besides its success (documented in the OpenAPI schema, checked by fuzzing).
_GUARDS = ("validation_error", "malformed_request", "rate_limited", "not_ready", "payload_too_large")
_KEYED = ("unauthorized", "auth_not_configured")
QUERY_PROBLEMS = problem_responses(
    *_GUARDS, *_KEYED, "invalid_input", "unsafe_input", "not_found", "index_not_ready", "store_unavailable",
    "overloaded", "model_error", "timeout", "generation_timeout",
)  # fmt: skip
INFO_PROBLEMS = problem_responses("rate_limited", "not_ready", *_KEYED, "index_not_ready", "store_unavailable")
INGEST_PROBLEMS = problem_responses(
    *_GUARDS, *_KEYED, "forbidden_path", "invalid_input", "source_not_found", "ingestion_running"
)
JOB_PROBLEMS = problem_responses("validation_error", "rate_limited", "not_ready", *_KEYED, "not_found")
READINESS = {
    503: {"description": "Not ready: the body says which check failed.", "content": {"application/json": {}}}
}
# Declared so the OpenAPI schema names the two ways to send a key; ``KeyChecker`` does the checking.
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from RAG_API_KEYS.")
BEARER = HTTPBearer(auto_error=False, description="An API key from RAG_API_KEYS as a bearer token.")


_SCALAR: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
_LIST = {"type": "array", "items": _SCALAR, "minItems": 1}
# The filter grammar, published in the OpenAPI schema (``normalise_filters`` in retrieval enforces it, with 422).
FILTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"enum": list(FILTERABLE_KEYS)},
    "additionalProperties": {
        "anyOf": [
            _SCALAR,
            {
                "type": "object",
                "properties": {"$eq": _SCALAR, "$ne": _SCALAR, "$in": _LIST, "$nin": _LIST},
                "additionalProperties": False,
                "minProperties": 1,
            },
        ]
    },
}


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(
        max_length=100_000,
        description="The question; normalised and screened before use.",
        json_schema_extra={"minLength": 1},  # documented; a blank question is refused by the screening (422)
    )
    top_k: int | None = Field(None, ge=1, le=20, description="Chunks to retrieve (default 4, RAG_TOP_K).")
    collection: str | None = Field(None, pattern=COLLECTION_PATTERN, description="Default: RAG_COLLECTION.")
    mode: Literal["dense", "bm25", "hybrid"] | None = Field(None, description="Default: RAG_RETRIEVAL_MODE.")
    filters: Annotated[dict[str, Any], WithJsonSchema(FILTER_SCHEMA)] | None = Field(
        None,
        description='Metadata filter on doc_id, source, title or format, e.g. {"format": {"$in": ["pdf"]}}.',
    )


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        min_length=1, max_length=100, description="Paths under RAG_INGEST_ROOTS."
    )
    collection: str | None = Field(None, pattern=COLLECTION_PATTERN)
    prune: bool = True


class JobAccepted(BaseModel):
    job_id: str
    state: str
    status_url: str


class Services:
    """Everything a request needs, built once per process and shared by all requests."""

    def __init__(
        self, settings: Settings, *, embedder: Embedder | None = None, answerer: Answerer | None = None
    ) -> None:
        self.settings = settings
        self.embedder = embedder or Embedder(settings)
        self._client: Any | None = None
        self._client_lock = threading.Lock()
        self.answerer: Answerer = answerer or make_answerer(settings)
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

    @property
    def client(self) -> Any:
        """The Chroma client shared by every collection, made on first use.

        Made lazily (and again after a failed attempt) so the API starts, and answers 503 ``store_unavailable``,
        while a Chroma server is still down; ``chromadb.HttpClient`` refuses to construct without a server.
        Once made, it reconnects by itself when a restarted server comes back.
        """
        with self._client_lock:
            if self._client is None:
                self._client = make_client(self.settings)
            return self._client

    def store(self, collection: str) -> VectorStore:
        return VectorStore(self.settings, collection, client=self.client)

    def pipeline(self, collection: str | None = None) -> QueryPipeline:
        name = collection or self.settings.collection
        if name not in self._pipelines:
            if name != self.settings.collection and not Manifest.path_for(self.settings.manifest_dir, name).exists():
                # Only ingested collections get a pipeline: a made-up name must not grow this cache.
                raise NotFoundError(f"collection {name!r} does not exist", hint="ingest into it first")
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
        services.limiter.check(client_id(request, services.keys))
        return services

    def query_access(request: Request, services: Services = Depends(rate_limited)) -> Services:
        if services.settings.require_key_for_query:
            services.keys.require(request)
        return services

    def admin_access(
        request: Request,
        services: Services = Depends(rate_limited),
        _header: str | None = Security(API_KEY_HEADER),
        _bearer: Any = Security(BEARER),
    ) -> Services:
        services.keys.require(request)
        return services

    def record(services: Services, question: str, result: PipelineResult) -> None:
        response = result.response
        services.metrics.observe_answer(response)
        try:
            services.query_log.append(question, response, result.query_embedding, result.top_score)
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

    @app.get("/readyz", tags=["ops"], responses=READINESS)
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

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        services: Services | None = request.app.state.services
        if services is None:
            return Response(b"", media_type=CONTENT_TYPE_LATEST)
        services.metrics.queue_depth.set(services.gate.depth)
        services.metrics.observe_drift(latest_drift_status(services.settings, kind="query_log"))
        return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/info", tags=["query"], responses=INFO_PROBLEMS)
    async def info(services: Services = Depends(query_access)) -> dict[str, Any]:
        """Versions and the pipeline configuration this process serves."""
        pipeline = services.pipeline()
        return {
            "versions": pipeline.versions(pipeline.retriever.index_version()).model_dump(),
            "config": pipeline.to_dict(),
        }

    @app.post("/v1/query", response_model=QueryResponse, tags=["query"], responses=QUERY_PROBLEMS)
    async def query(body: QueryRequest, request: Request, services: Services = Depends(query_access)) -> QueryResponse:
        """Answer a question with citations, or abstain with the fixed answer."""

        def run() -> PipelineResult:
            for event in events(services, body, request.state.request_id):
                if isinstance(event, ResultEvent):
                    return event.result
            raise RuntimeError("pipeline produced no result")

        try:
            result = await asyncio.wait_for(run_in_threadpool(run), timeout=services.settings.request_timeout_s)
        except TimeoutError as exc:
            raise ApiError(504, "timeout", f"no answer within {services.settings.request_timeout_s:.0f}s") from exc
        record(services, body.question, result)
        return result.response

    @app.post(
        "/v1/query/stream",
        tags=["query"],
        response_class=StreamingResponse,
        responses={200: {"description": "text/event-stream", "content": {"text/event-stream": {}}}, **QUERY_PROBLEMS},
    )
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
                    if isinstance(event, TokenEvent):
                        yield f"event: token\ndata: {json.dumps({'delta': event.delta})}\n\n"
                    else:
                        record(services, body.question, event.result)
                        yield f"event: result\ndata: {event.response.model_dump_json()}\n\n"
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

    @app.post("/v1/ingest", status_code=202, response_model=JobAccepted, tags=["admin"], responses=INGEST_PROBLEMS)
    async def ingest(body: IngestRequest, request: Request, services: Services = Depends(admin_access)) -> JobAccepted:
        """Start a background ingestion of paths under the configured roots (API key required)."""
        paths = [allowed_path(raw, services.settings.ingest_roots) for raw in body.paths]
        job = services.jobs.submit(paths, body.collection or services.settings.collection, body.prune)
        return JobAccepted(job_id=job.id, state=job.state, status_url=f"/v1/jobs/{job.id}")

    @app.get("/v1/jobs/{job_id}", response_model=Job, tags=["admin"], responses=JOB_PROBLEMS)
    async def job_status(job_id: str, services: Services = Depends(admin_access)) -> Job:
        """State and summary of an ingestion job (API key required)."""
        return services.jobs.get(job_id)

    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory api.app:app_from_env` (used with several workers)."""
    return create_app(Settings())
