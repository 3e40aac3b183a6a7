"""End to end: headings travel from the sample files through ingestion into the store, BM25 and retrieval."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ingest.report import IngestionSummary
from rag.answering.retrieval import Retriever
from rag.indexing.embedding import Embedder
from rag.indexing.sparse import SparseIndex
from rag.indexing.store import VectorStore
from rag.settings import Settings
from tests.conftest import SAMPLES

WAGGLE = "How a Honeybee Colony Works › The waggle dance"


def long_section_doc(tmp_path: Path) -> Path:
    """A section over one chunk long: only its first chunk holds the heading line itself."""
    body = [
        "A forager that finds a rich source of food returns to the hive and moves on the vertical face of the comb. "
        * 4,
        "The angle of her run relative to vertical tells other bees the direction of the food relative to the sun. "
        * 4,
        "The duration of the run indicates how far away the food is; longer runs mean more distant flowers. " * 4,
    ]
    path = tmp_path / "docs" / "bees.md"
    path.parent.mkdir()
    path.write_text("# Honeybees\n\nBees live in colonies.\n\n## The waggle dance\n\n" + "\n\n".join(body)
                    + "\n\n## Swarming\n\nColonies reproduce by swarming in spring.\n")
    return path.parent


def test_every_chunk_of_a_long_section_is_found_by_its_heading(
    ingest: Callable[..., IngestionSummary], embedder: Embedder, make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    source = long_section_doc(tmp_path)
    found: dict[bool, list[str]] = {}
    for on in (False, True):  # same data dir: switching the setting changes the index version and re-embeds
        ingest(source, embed_sections=on)
        retriever = Retriever(make_settings(embed_sections=on), embedder=embedder)
        chunks = retriever.retrieve("waggle dance", k=10, mode="bm25").chunks
        found[on] = [c.text for c in chunks]
        if on:
            dance = [c for c in chunks if c.metadata.get("section") == "Honeybees › The waggle dance"]
            assert len(dance) >= 2 and all("food" in c.text for c in dance)
    assert len(found[True]) >= 2 and len(found[False]) == 1  # without the prefix: only the chunk with the heading
    assert any("how far away" in text for text in found[True])
    assert not any("how far away" in text for text in found[False])


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
