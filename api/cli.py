"""``rag serve``: registered into the core CLI through the ``rag.commands`` entry point."""

from __future__ import annotations

import typer

from api.keys import register as register_keys
from rag.console import handles_errors, load_settings


def register(app: typer.Typer) -> None:
    register_keys(app)

    @app.command()
    @handles_errors
    def serve(
        host: str = typer.Option("127.0.0.1", help="Interface to bind."),
        port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
        workers: int = typer.Option(1, min=1, max=32, help="Worker processes (each loads its own models)."),
        generator: str | None = typer.Option(None, help="local, openai or extractive (default RAG_GENERATOR)."),
    ) -> None:
        """Serve the HTTP API and the web page (POST /v1/query, /v1/query/stream, GET /)."""
        import os

        import uvicorn

        from api.app import create_app

        settings = load_settings(generator=generator)
        if workers > 1:  # each worker builds its app from the environment
            if generator:
                os.environ["RAG_GENERATOR"] = generator
            uvicorn.run(
                "api.app:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="warning"
            )
            return
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
