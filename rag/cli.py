"""The ``rag`` command line. Core commands live here; job packages add theirs through the ``rag.commands``
entry-point group, so the core never imports a job package.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

import typer
from pydantic import ValidationError

from rag.errors import RagError
from rag.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="rag",
    help="Offline retrieval-augmented QA: ingest documents, ask questions, evaluate, monitor drift.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def load_settings(**overrides: Any) -> Settings:
    """Settings from env/config file with CLI overrides; invalid values become a clear one-line error."""
    try:
        return Settings().with_overrides(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise typer.BadParameter(f"invalid configuration: {problems}") from None


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handles_errors(func: F) -> F:
    """Turn the project's exceptions into a one-line message and exit status 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RagError as exc:
            fail(f"{exc} [{exc.code}]")
        except KeyboardInterrupt:
            fail("interrupted; the store is consistent and the next run resumes", 130)

    return wrapper  # type: ignore[return-value]


def emit_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details to stderr.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
@handles_errors
def status(
    collection: str | None = typer.Option(None, help="Collection name (default: RAG_COLLECTION)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the index version, corpus hash, embedding model, chunker config and counts."""
    from rag.indexing.status import index_status

    settings = load_settings(collection=collection)
    info = index_status(settings)
    if as_json:
        emit_json(info)
        return
    for key, value in info.items():
        typer.echo(f"{key:>18}: {json.dumps(value) if isinstance(value, dict | list) else value}")


@app.command()
@handles_errors
def ask(
    question: str = typer.Argument(..., help="The question to answer from the ingested documents."),
    top_k: int | None = typer.Option(None, "--top-k", min=1, max=20, help="Chunks to retrieve (default RAG_TOP_K)."),
    mode: str | None = typer.Option(None, help="Retrieval mode: dense, bm25 or hybrid (default RAG_RETRIEVAL_MODE)."),
    generator: str | None = typer.Option(None, help="local, openai or extractive (default RAG_GENERATOR)."),
    collection: str | None = typer.Option(None, help="Collection name (default: RAG_COLLECTION)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full response object as JSON."),
) -> None:
    """Answer a question with citations, or abstain; the same pipeline as the HTTP API."""
    from rag.answering.pipeline import QueryPipeline, ResultEvent, TokenEvent

    settings = load_settings(collection=collection, generator=generator, retrieval_mode=mode)
    pipeline = QueryPipeline(settings)
    if as_json:
        emit_json(pipeline.run(question, top_k=top_k).response.model_dump())
        return
    response = None
    for event in pipeline.stream(question, top_k=top_k):
        if isinstance(event, TokenEvent):
            typer.echo(event.delta, nl=False)
        elif isinstance(event, ResultEvent):
            response = event.response
    if response is None:  # pragma: no cover - the pipeline always ends with a result
        fail("the pipeline ended without a result")
        return
    if response.abstained:
        typer.echo(f"\r{response.answer}  (abstained: {response.abstain_reason})")
    typer.echo(f"\nconfidence {response.confidence:.2f} · index {response.versions.index}")
    for citation in response.citations:
        typer.echo(f"  [{citation.index}] {citation.title} — {citation.source} (score {citation.score:.2f})")


def _register_plugins() -> None:
    for entry in sorted(entry_points(group="rag.commands"), key=lambda e: e.name):
        entry.load()(app)


_register_plugins()
