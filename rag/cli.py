"""The ``rag`` command line. Core commands live here; job packages add theirs through the ``rag.commands``
entry-point group, so the core never imports a job package.
"""

from __future__ import annotations

import json
import logging
import sys
from importlib.metadata import entry_points

import typer

# The helpers live in the foundation module rag.console; re-exported for the job packages' commands.
from rag.console import emit_json, fail, handles_errors, load_settings
from rag.runtime import configure_runtime

__all__ = ["app", "emit_json", "fail", "handles_errors", "load_settings"]

app = typer.Typer(
    name="rag",
    help="Offline retrieval-augmented QA: ingest documents, ask questions, evaluate, monitor drift.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details to stderr.")) -> None:
    configure_runtime()
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
    streamed = ""
    for event in pipeline.stream(question, top_k=top_k):
        if isinstance(event, TokenEvent):
            streamed += event.delta
            typer.echo(event.delta, nl=False)
        elif isinstance(event, ResultEvent):
            response = event.response
    if response is None:  # pragma: no cover - the pipeline always ends with a result
        fail("the pipeline ended without a result")
        return
    if response.abstained:
        typer.echo(f"\n{response.answer}  (abstained: {response.abstain_reason})")
    elif response.answer != streamed.strip():  # verification cut unsupported sentences or repaired a citation
        typer.echo(f"\nverified answer: {response.answer}")
    meaning = f" ({response.confidence_meaning})" if response.confidence_meaning else ""
    typer.echo(f"\nconfidence {response.confidence:.2f}{meaning} · index {response.versions.index}")
    for citation in response.citations:
        typer.echo(f"  [{citation.index}] {citation.title} — {citation.source} (score {citation.score:.2f})")
        if citation.quote is not None:  # the supporting span, highlighted within a little of its context
            quote = citation.quote
            before, after = citation.text[max(0, quote.start - 60) : quote.start], citation.text[quote.end :][:60]
            shown = " ".join(f"…{before}".split()) + " " + typer.style(quote.text, bold=True, underline=True)
            typer.echo(f"      {shown} {' '.join(after.split())}…")


def _register_plugins() -> None:
    for entry in sorted(entry_points(group="rag.commands"), key=lambda e: e.name):
        entry.load()(app)


_register_plugins()
