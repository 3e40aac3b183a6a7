"""``rag ingest``: registered into the core CLI through the ``rag.commands`` entry point."""

from __future__ import annotations

from pathlib import Path

import typer

from rag.console import emit_json, handles_errors, load_settings


def register(app: typer.Typer) -> None:
    @app.command()
    @handles_errors
    def ingest(
        sources: list[Path] = typer.Argument(
            ..., help="Directories, files (.txt .md .html .pdf) or .jsonl corpora."
        ),
        collection: str | None = typer.Option(None, help="Collection name (default: RAG_COLLECTION)."),
        prune: bool = typer.Option(
            True,
            "--prune/--no-prune",
            help="Delete documents that disappeared from a directory or .jsonl source.",
        ),
        strict: bool = typer.Option(False, "--strict", help="Exit 1 if any document failed to load."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no progress bar)."),
    ) -> None:
        """Load, chunk, embed and sync documents into Chroma. Unchanged documents are skipped."""
        from ingest.pipeline import IngestionPipeline
        from ingest.report import render_text

        settings = load_settings(collection=collection)
        pipeline = IngestionPipeline(settings, progress=None if not as_json else False)
        summary = pipeline.run(sources, prune=prune)
        if as_json:
            emit_json(summary.model_dump(exclude={"report"}))
        else:
            typer.echo(render_text(summary))
        if strict and summary.documents_failed:
            raise typer.Exit(1)
