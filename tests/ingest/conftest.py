from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingest.pipeline import IngestionPipeline
from ingest.report import IngestionSummary
from rag.indexing.embedding import Embedder
from rag.settings import Settings


def write_pdf(path: Path, title: str, paragraphs: list[str]) -> Path:
    """A real multi-paragraph PDF made with reportlab."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    styles = getSampleStyleSheet()
    document = SimpleDocTemplate(str(path), pagesize=A4, title=title)
    document.build(
        [Paragraph(title, styles["Title"]), *[Paragraph(p, styles["BodyText"]) for p in paragraphs]]
    )
    return path


@pytest.fixture
def ingest(embedder: Embedder, make_settings: Callable[..., Settings]) -> Callable[..., IngestionSummary]:
    """Run the real pipeline (shared encoder, fresh Chroma in the test's data dir)."""
    settings_cache: dict[str, Settings] = {}

    def run(*sources: Path, prune: bool = True, **overrides: Any) -> IngestionSummary:
        key = repr(sorted(overrides.items()))
        settings = settings_cache.setdefault(key, make_settings(**overrides))
        pipeline = IngestionPipeline(settings, embedder=embedder, progress=False)
        return pipeline.run(list(sources), prune=prune)

    return run
