"""The shared ``Services`` and the dependencies routes declare to reach them (readiness, rate limit, API keys).

Routes take one of the ``Annotated`` aliases (``ServicesDep``, ``QueryAccess``, ``AdminAccess``) instead of
repeating ``Depends(...)``; each alias runs the checks in order and hands the route the ready ``Services``.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from api.guards import GenerationGate, KeyChecker, RateLimiter, client_id
from api.jobs import JobRunner
from api.observability import Metrics, QueryLogWriter
from api.problems import ApiError
from ingest.pipeline import IngestionPipeline
from rag.answering.generation.answerer import Answerer, make_answerer
from rag.answering.pipeline import QueryPipeline
from rag.answering.rerank import CrossEncoder
from rag.errors import NotFoundError
from rag.indexing.embedding import Embedder
from rag.indexing.manifest import Manifest
from rag.indexing.store import VectorStore, make_client
from rag.settings import Settings

# Problems the guards can answer on any guarded route with a body (documented per route in the OpenAPI schema).
GUARD_PROBLEMS = ("validation_error", "malformed_request", "rate_limited", "not_ready", "payload_too_large")
# Problems of a route that checks an API key.
KEY_PROBLEMS = ("unauthorized", "auth_not_configured", "forbidden")

# Declared so the OpenAPI schema names the two ways to send a key; ``KeyChecker`` does the checking.
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from RAG_API_KEYS.")
BEARER = HTTPBearer(auto_error=False, description="An API key from RAG_API_KEYS as a bearer token.")


class Services:
    """Everything a request needs, built once per process and shared by all requests."""

    def __init__(
        self, settings: Settings, *, embedder: Embedder | None = None, answerer: Answerer | None = None
    ) -> None:
        self.settings = settings
        self.embedder = embedder or Embedder(settings)
        # checks the reranker's files now (a bad file stops start-up); every collection's pipeline shares it
        self.cross_encoder = CrossEncoder(settings)
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
        self.query_log = QueryLogWriter(settings)
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
                settings,
                embedder=self.embedder,
                store=self.store(name),
                answerer=self.answerer,
                cross_encoder=self.cross_encoder,
            )
        return self._pipelines[name]

    def ingestion_pipeline(self, collection: str) -> IngestionPipeline:
        settings = self.settings.with_overrides(collection=collection)
        return IngestionPipeline(settings, embedder=self.embedder, store=self.store(collection), progress=False)

    def warm_up(self) -> None:
        """Load the encoder and the generator before the first request, so readiness means ready."""
        _ = self.embedder.model
        self.cross_encoder.load()
        load = getattr(self.answerer.generator, "load", None)
        if callable(load):
            load()
        self.ready = True


def app_services(request: Request) -> Services | None:
    """The process's ``Services``, or None while the lifespan is still building them (ops routes cope)."""
    return request.app.state.services


def ready_services(request: Request) -> Services:
    """``Services`` once models are loaded; 503 ``not_ready`` (with Retry-After) before."""
    services = app_services(request)
    if services is None or not services.ready:
        raise ApiError(503, "not_ready", "the service is still loading its models", {"Retry-After": "5"})
    return services


ServicesDep = Annotated[Services, Depends(ready_services)]


def rate_limited(request: Request, services: ServicesDep) -> Services:
    """Ready services, after charging this client's rate-limit bucket (429 ``rate_limited``)."""
    services.limiter.check(client_id(request, services.keys))
    return services


RateLimited = Annotated[Services, Depends(rate_limited)]


def query_access(request: Request, services: RateLimited) -> Services:
    """Query routes: open, or keyed when RAG_REQUIRE_KEY_FOR_QUERY is set."""
    if services.settings.require_key_for_query:
        services.keys.require(request)
    request.state.key_scope = services.keys.scoped(request)
    return services


def admin_access(
    request: Request,
    services: RateLimited,
    _header: Annotated[str | None, Security(API_KEY_HEADER)],
    _bearer: Annotated[Any, Security(BEARER)],
) -> Services:
    """Admin routes: always keyed (401 ``unauthorized``, 403 ``auth_not_configured``; 403 ``forbidden`` for a
    stored key with the query role)."""
    services.keys.require(request)
    scope = services.keys.scoped(request)
    if scope is not None and scope.role != "admin":
        raise ApiError(403, "forbidden", "this key has the query role; admin routes need an admin key")
    request.state.key_scope = scope
    return services


def check_collection(request: Request, collection: str) -> str:
    """``collection`` when the request's key may read it (every key from RAG_API_KEYS may), else 403 ``forbidden``.

    Called by every route that reads documents, after its access dependency has set ``request.state.key_scope``.
    """
    scope = getattr(request.state, "key_scope", None)
    if scope is not None and not scope.allows(collection):
        raise ApiError(403, "forbidden", f"this key may not read collection {collection!r}")
    return collection


def readable(request: Request, collections: list[str]) -> list[str]:
    """The subset of ``collections`` the request's key may read."""
    scope = getattr(request.state, "key_scope", None)
    return [c for c in collections if scope is None or scope.allows(c)]


QueryAccess = Annotated[Services, Depends(query_access)]
AdminAccess = Annotated[Services, Depends(admin_access)]
