"""The FastAPI application. ``create_app`` builds everything from one ``Settings``; no module-level state.

The routes live in ``api.routes`` (one router per resource), their dependencies and the shared ``Services`` in
``api.deps``, the request bodies in ``api.schemas``; this module only assembles them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from api.deps import Services
from api.guards import BodySizeLimit
from api.middleware import observe
from api.observability import configure_json_logging
from api.problems import install_problem_handlers
from api.routes import chat, documents, feedback, ingest, openai_compat, ops, query
from rag.console import load_settings
from rag.runtime import configure_runtime
from rag.settings import Settings

__all__ = ["Services", "app_from_env", "create_app"]


def _lifespan(settings: Settings, warm: bool) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Build the ``Services`` (unless injected) and, with ``warm``, load the models before serving."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.services is None:
            app.state.services = await run_in_threadpool(Services, settings)
        if warm and not app.state.services.ready:
            await run_in_threadpool(app.state.services.warm_up)
        yield

    return lifespan


def create_app(settings: Settings | None = None, *, services: Services | None = None, warm: bool = True) -> FastAPI:
    configure_runtime()
    settings = settings or Settings()
    configure_json_logging()
    app = FastAPI(
        title="rag",
        version="0.1.0",
        description="Grounded answers with citations over your documents, or an honest abstention.",
        lifespan=_lifespan(settings, warm),
    )
    app.state.services = services
    install_problem_handlers(app)
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_body_bytes, path_limits={"/v1/documents": settings.upload_max_bytes}
    )
    app.middleware("http")(observe)
    for router in (ops.router, query.router, ingest.router, chat.router, openai_compat.router, documents.router):
        app.include_router(router)
    app.include_router(feedback.router)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory api.app:app_from_env` (used with several workers)."""
    return create_app(load_settings())  # a bad setting: one line on stderr, exit 2
