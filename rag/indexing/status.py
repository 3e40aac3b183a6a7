"""What ``rag status`` and the API's readiness check report about a collection."""

from __future__ import annotations

from typing import Any

from rag.indexing.manifest import Manifest
from rag.indexing.sparse import SparseIndex
from rag.indexing.store import VectorStore
from rag.settings import Settings


def index_status(settings: Settings, store: VectorStore | None = None) -> dict[str, Any]:
    manifest = Manifest.load(settings.manifest_dir, settings.collection)
    store = store or VectorStore(settings)
    stored = store.count()
    return {
        "collection": settings.collection,
        "index_version": manifest.index_version,
        "corpus_hash": manifest.corpus_hash or None,
        "embedding_model": manifest.embedding,
        "chunker": manifest.chunker,
        "documents": len(manifest.documents),
        "chunks": manifest.chunk_count,
        "chunks_in_store": stored,
        "consistent": not manifest.dirty and stored == manifest.chunk_count,
        "bm25_index_version": SparseIndex.stored_version(
            SparseIndex.directory(settings.bm25_dir, settings.collection)
        ),
        "updated_at": manifest.updated_at if manifest.index_version else None,
        "store": settings.chroma_url or str(settings.chroma_dir),
        "versions": len(manifest.history),
    }
