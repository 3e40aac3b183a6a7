"""End to end: headings travel from the sample files through ingestion into the store, BM25 and retrieval."""

from __future__ import annotations

from collections.abc import Callable

from ingest.report import IngestionSummary
from rag.answering.retrieval import Retriever
from rag.indexing.embedding import Embedder
from rag.indexing.sparse import SparseIndex
from rag.indexing.store import VectorStore
from rag.settings import Settings
from tests.conftest import SAMPLES

WAGGLE = "How a Honeybee Colony Works › The waggle dance"


def test_honeybee_question_retrieves_the_waggle_dance_section(
    ingest: Callable[..., IngestionSummary], embedder: Embedder, make_settings: Callable[..., Settings]
) -> None:
    ingest(SAMPLES / "corpus")
    settings = make_settings()
    retriever = Retriever(settings, embedder=embedder)
    result = retriever.retrieve("How do honeybees communicate the location of flowers?", k=3, mode="hybrid")
    sections = [c.metadata.get("section") for c in result.chunks]
    assert WAGGLE in sections, sections
    top = next(c for c in result.chunks if c.metadata.get("section") == WAGGLE)
    assert "waggle run" in top.text and top.doc_id == "science/honeybees.md"


def test_sections_are_stored_and_indexed_for_bm25(
    ingest: Callable[..., IngestionSummary], make_settings: Callable[..., Settings]
) -> None:
    ingest(SAMPLES / "corpus")
    settings = make_settings()
    chunks = list(VectorStore(settings).iter_chunks())
    sparse = SparseIndex.load(SparseIndex.directory(settings.bm25_dir, settings.collection))
    assert sparse is not None
    sections = {c.metadata["doc_id"]: c.metadata.get("section") for c in chunks}
    assert sections["lighthouses.txt"] == ""  # plain text has no headings
    waggle = next(c for c in chunks if c.metadata.get("section") == WAGGLE)
    # BM25 reads the same heading-path prefix the encoder does (the path starts with the title: one line)
    assert SparseIndex.index_text(waggle, with_title=True) == f"{WAGGLE}\n{waggle.text}"
    assert sparse.chunk_ids.count(waggle.chunk_id) == 1
    rows = {m["doc_id"] for m in sparse.metadata}
    assert {"science/honeybees.md", "history/rosetta_stone.html"} <= rows


def test_html_sections_reach_the_store(
    ingest: Callable[..., IngestionSummary], embedder: Embedder, make_settings: Callable[..., Settings]
) -> None:
    ingest(SAMPLES / "corpus" / "history" / "rosetta_stone.html")
    retriever = Retriever(make_settings(), embedder=embedder)
    result = retriever.retrieve("Who deciphered the hieroglyphs?", k=4, mode="hybrid")
    assert any((c.metadata.get("section") or "").startswith("The Rosetta Stone › ") for c in result.chunks)


def test_citations_carry_the_section(
    ingest: Callable[..., IngestionSummary], embedder: Embedder, make_settings: Callable[..., Settings]
) -> None:
    from rag.answering.pipeline import QueryPipeline

    ingest(SAMPLES / "corpus" / "science" / "honeybees.md")
    settings = make_settings(generator="extractive")
    response = QueryPipeline(settings, embedder=embedder).run(
        "Who decoded the language of the bee dance, and which prize did he share?"
    ).response
    assert response.citations, response
    assert all(c.section.startswith("How a Honeybee Colony Works") for c in response.citations)
    assert any(c.section == WAGGLE for c in response.citations)
