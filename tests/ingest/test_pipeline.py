from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.report import IngestionSummary
from rag.errors import SourceNotFoundError
from rag.indexing.manifest import Manifest
from rag.indexing.sparse import SparseIndex
from rag.indexing.store import VectorStore
from rag.settings import Settings
from tests.ingest.conftest import write_pdf

Ingest = Callable[..., IngestionSummary]


def paragraph(topic: str, n: int = 3) -> str:
    return " ".join(f"{topic} fact number {i} is described here in plain words." for i in range(n))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "science").mkdir(parents=True)
    (root / "bees.md").write_text("# Honeybees\n\n" + paragraph("Honeybee", 40))
    (root / "science" / "volcano.txt").write_text("Volcanoes\n\n" + paragraph("Volcano", 8))
    (root / "lighthouse.html").write_text(
        "<html><head><title>Lighthouses</title></head><body><main><p>"
        + paragraph("Lighthouse", 6)
        + "</p></main></body></html>"
    )
    write_pdf(root / "reef.pdf", "Coral reefs", [paragraph("Coral", 6)])
    return root


def store_state(settings: Settings) -> tuple[dict[str, list[str]], Manifest]:
    """Chunk ids per document as Chroma holds them, and the manifest."""
    by_doc: dict[str, list[str]] = {}
    for chunk in VectorStore(settings).iter_chunks():
        by_doc.setdefault(chunk.metadata["doc_id"], []).append(chunk.chunk_id)
    return by_doc, Manifest.load(settings.manifest_dir, settings.collection)


def assert_consistent(settings: Settings) -> Manifest:
    by_doc, manifest = store_state(settings)
    assert not manifest.dirty
    assert {d: sorted(ids) for d, ids in by_doc.items()} == {
        d: sorted(r.chunk_ids) for d, r in manifest.documents.items()
    }
    return manifest


def test_first_ingest_writes_every_format_with_metadata(ingest: Ingest, corpus: Path, make_settings) -> None:
    summary = ingest(corpus)
    assert summary.documents_added == 4 and not summary.documents_failed
    assert summary.chunks_written == summary.chunks_embedded == summary.total_chunks > 4
    settings = make_settings()
    manifest = assert_consistent(settings)
    assert set(manifest.documents) == {"bees.md", "science/volcano.txt", "lighthouse.html", "reef.pdf"}
    chunk = next(c for c in VectorStore(settings).iter_chunks() if c.metadata["doc_id"] == "reef.pdf")
    meta = chunk.metadata
    assert meta["title"] == "Coral reefs" and meta["source"].endswith("reef.pdf")
    assert {"chunk_index", "char_start", "char_end", "content_hash"} <= set(meta)
    assert summary.index_version == manifest.index_version
    report = json.loads(Path(summary.report_path or "").read_text())
    assert (
        report["corpus"]["documents"] == 4
        and report["corpus"]["chunk_chars"]["count"] == summary.total_chunks
    )
    assert report["corpus"]["chunks_over_token_limit"] == 0
    sparse = SparseIndex.load(SparseIndex.directory(settings.bm25_dir, settings.collection))
    assert sparse is not None and sparse.version == manifest.index_version
    assert sorted(sparse.chunk_ids) == sorted(manifest.chunk_ids())


def test_unchanged_rerun_writes_nothing(ingest: Ingest, corpus: Path, make_settings) -> None:
    first = ingest(corpus)
    manifest_file = Manifest.path_for(make_settings().manifest_dir, "documents")
    before = manifest_file.stat().st_mtime_ns
    second = ingest(corpus)
    assert second.documents_unchanged == 4
    assert second.chunks_written == second.chunks_embedded == second.chunks_deleted == 0
    assert second.index_version == first.index_version
    assert manifest_file.stat().st_mtime_ns == before


def test_changed_document_replaces_its_old_chunks(ingest: Ingest, corpus: Path, make_settings) -> None:
    first = ingest(corpus)
    settings = make_settings()
    old_ids = set(Manifest.load(settings.manifest_dir, "documents").documents["bees.md"].chunk_ids)
    (corpus / "bees.md").write_text("# Honeybees\n\nA colony has one queen and thousands of workers.")
    second = ingest(corpus)
    assert (second.documents_updated, second.documents_added, second.documents_unchanged) == (1, 0, 3)
    manifest = assert_consistent(settings)
    new_ids = set(manifest.documents["bees.md"].chunk_ids)
    assert len(new_ids) == 1 and new_ids.isdisjoint(old_ids)
    assert second.chunks_deleted == len(old_ids)
    assert second.index_version != first.index_version
    assert VectorStore(settings).count() == first.total_chunks - len(old_ids) + 1


def test_removed_document_is_pruned_exactly(ingest: Ingest, corpus: Path, make_settings) -> None:
    first = ingest(corpus)
    settings = make_settings()
    removed = Manifest.load(settings.manifest_dir, "documents").documents["science/volcano.txt"].chunk_ids
    (corpus / "science" / "volcano.txt").unlink()
    kept = ingest(corpus, prune=False)
    assert kept.documents_deleted == 0 and VectorStore(settings).count() == first.total_chunks
    pruned = ingest(corpus)
    assert pruned.documents_deleted == 1 and pruned.chunks_deleted == len(removed)
    assert VectorStore(settings).count() == first.total_chunks - len(removed)
    assert "science/volcano.txt" not in assert_consistent(settings).documents
    assert pruned.index_version not in {first.index_version, None}


def test_renamed_document_reuses_embeddings(ingest: Ingest, corpus: Path, make_settings) -> None:
    first = ingest(corpus)
    (corpus / "science" / "volcano.txt").rename(corpus / "science" / "volcanoes.txt")
    second = ingest(corpus)
    assert (second.documents_added, second.documents_deleted) == (1, 1)
    assert second.chunks_embedded == 0 and second.chunks_reused == second.chunks_written > 0
    manifest = assert_consistent(make_settings())
    assert "science/volcanoes.txt" in manifest.documents and manifest.chunk_count == first.total_chunks


def test_bad_files_are_reported_and_the_rest_ingested(ingest: Ingest, corpus: Path) -> None:
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)
    (corpus / "latin1.md").write_bytes("crème brûlée".encode("latin-1"))
    (corpus / "corrupt.pdf").write_bytes(b"%PDF-1.7 garbage")
    (corpus / "photo.png").write_bytes(b"\x89PNG")
    summary = ingest(corpus)
    assert summary.documents_added == 4
    failed = {Path(f.path).name: f.reason for f in summary.documents_failed}
    assert set(failed) == {"empty.txt", "binary.txt", "latin1.md", "corrupt.pdf"}
    assert "empty" in failed["empty.txt"] and "binary" in failed["binary.txt"]
    assert "UTF-8" in failed["latin1.md"] and "PDF" in failed["corrupt.pdf"]
    assert [Path(p).name for p in summary.files_ignored] == ["photo.png"]


def test_changed_embedding_weights_force_a_full_re_embed(
    ingest: Ingest, corpus: Path, embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ingest(corpus)
    monkeypatch.setitem(embedder.__dict__, "weights_sha256", "0" * 64)
    second = ingest(corpus)
    assert second.documents_updated == 4
    assert second.chunks_embedded == first.total_chunks and second.chunks_reused == 0
    assert second.index_version != first.index_version


def test_jsonl_corpus_uses_ids_and_prunes_removed_records(
    ingest: Ingest, tmp_path: Path, make_settings
) -> None:
    path = tmp_path / "corpus.jsonl"
    records = [{"_id": f"d{i}", "title": f"Doc {i}", "text": paragraph(f"Topic{i}", 2)} for i in range(5)]
    path.write_text("\n".join(json.dumps(r) for r in records))
    assert ingest(path).documents_added == 5
    path.write_text("\n".join(json.dumps(r) for r in records[:3]))
    summary = ingest(path)
    assert summary.documents_deleted == 2 and summary.documents_unchanged == 3
    assert set(assert_consistent(make_settings()).documents) == {"d0", "d1", "d2"}


def test_missing_source_is_a_clear_error(ingest: Ingest, tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"source not found: .*nope"):
        ingest(tmp_path / "nope")


def test_store_losing_chunks_is_repaired(ingest: Ingest, corpus: Path, make_settings) -> None:
    first = ingest(corpus)
    settings = make_settings()
    lost = Manifest.load(settings.manifest_dir, "documents").documents["bees.md"].chunk_ids
    VectorStore(settings).delete(lost[:1])
    summary = ingest(corpus)
    assert summary.documents_repaired == 1 and summary.documents_updated == 1
    assert summary.chunks_embedded == 1  # only the lost chunk is encoded again
    assert VectorStore(settings).count() == first.total_chunks
    assert_consistent(settings)
