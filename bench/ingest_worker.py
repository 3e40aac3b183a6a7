"""One ingestion system, run in its own process by ``bench.ingest`` so its time and memory are its own.

Usage: ``python -m bench.ingest_worker '<json spec>'``; prints one JSON line with the result.
Imports happen before the timer starts; ``seconds`` covers model loading and the whole job.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import emit, own_peak_rss_mib


def _threads(spec: dict[str, Any]) -> None:
    if spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))


def _records(corpus: Path) -> list[dict[str, Any]]:
    with corpus.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _settings(spec: dict[str, Any]) -> Any:
    from bench.retrieval_study import embedder_overrides
    from rag.settings import Settings

    return Settings(
        data_dir=Path(spec["data_dir"]),
        **embedder_overrides(spec["backend"]),
        torch_threads=int(spec.get("threads") or 0),
        chunk_size=int(spec["chunk_size"]),
        chunk_overlap=int(spec["chunk_overlap"]),
        embedding_batch_size=int(spec["batch_size"]),
        ingest_batch_chunks=int(spec.get("ingest_batch_chunks", 256)),
    )


def run_langchain(spec: dict[str, Any]) -> dict[str, Any]:
    """What a user would write with LangChain: split, embed with HuggingFaceEmbeddings, Chroma.from_documents."""
    import warnings

    warnings.filterwarnings("ignore")
    from langchain_chroma import Chroma
    from langchain_community.embeddings import HuggingFaceEmbeddings
    from langchain_core.documents import Document
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from rag.indexing.chunking import SEPARATORS, TITLE_PREFIX_CHARS
    from rag.indexing.embedding import bundled_model_path

    _threads(spec)
    model_path = spec.get("model_path") or str(bundled_model_path())
    started = time.perf_counter()
    records = _records(Path(spec["corpus"]))
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=int(spec["chunk_size"]),
        chunk_overlap=int(spec["chunk_overlap"]),
        separators=SEPARATORS,
        keep_separator="end",
        strip_whitespace=True,
    )
    # The same chunk texts as ours: the body is split, then the title is put in front of every chunk. (Putting
    # "title\n\ntext" through the splitter instead made ~840 extra, title-only chunks per 1,000 documents: more, cheaper
    # chunks, which flattered LangChain's chunks/s and gave a worse index; docs/PERFORMANCE.md.)
    chunks = [
        Document(
            page_content=f"{title[:TITLE_PREFIX_CHARS]}\n{piece}" if title else piece,
            metadata={"doc_id": str(r["_id"])},
        )
        for r in records
        for title in [str(r.get("title") or "")]
        for piece in splitter.split_text(str(r["text"]))
    ]
    split_s = time.perf_counter() - started
    embeddings = HuggingFaceEmbeddings(
        model_name=model_path,
        model_kwargs={"device": "cpu"},
        encode_kwargs={"normalize_embeddings": True, "batch_size": int(spec["batch_size"])},
    )
    store = Chroma.from_documents(
        chunks,
        embeddings,
        persist_directory=spec["data_dir"],
        collection_name="bench",
        collection_metadata={"hnsw:space": "cosine"},
    )
    seconds = time.perf_counter() - started
    stored = store._collection.get(include=["documents", "metadatas"])
    distinct = {(m.get("doc_id"), d) for m, d in zip(stored["metadatas"], stored["documents"], strict=True)}
    return {
        "chunks_written": len(chunks),
        "chunks_embedded": len(chunks),
        "chars_embedded": sum(len(c.page_content) for c in chunks),
        "documents": len(records),
        "seconds": round(seconds, 3),
        "split_seconds": round(split_s, 3),
        "chunks_in_store": len(stored["ids"]),
        "duplicate_chunks_in_store": len(stored["ids"]) - len(distinct),
    }


def _our_chunks(settings: Any, embedder: Any, corpus: Path) -> list[str]:
    """Exactly the texts our pipeline embeds for ``corpus`` (title prefix included)."""
    from ingest.loaders import iter_jsonl
    from rag.indexing.chunking import Chunker, ChunkerConfig

    chunker = Chunker(
        ChunkerConfig(settings.chunk_size, settings.chunk_overlap, settings.embed_titles),
        embedder.count_tokens,
        embedder.max_tokens,
    )
    texts: list[str] = []
    for record in iter_jsonl(corpus, settings.max_file_bytes):
        if record.document is not None:
            texts.extend(c.embed_text for c in chunker.split(record.document))
    return texts


def run_encoder(spec: dict[str, Any]) -> dict[str, Any]:
    """The floor: the same encoder on exactly our chunks, nothing else (chunking is not timed)."""
    from rag.indexing.embedding import Embedder

    _threads(spec)
    settings = _settings(spec)
    embedder = Embedder(settings)
    tick = time.perf_counter()
    _ = embedder.model
    load_s = time.perf_counter() - tick
    texts = _our_chunks(settings, embedder, Path(spec["corpus"]))
    tick = time.perf_counter()
    vectors = embedder.embed(texts)
    seconds = time.perf_counter() - tick
    return {
        "chunks_written": 0,
        "chunks_embedded": len(texts),
        "chars_embedded": sum(len(t) for t in texts),
        "seconds": round(seconds, 3),
        "model_load_seconds": round(load_s, 3),
        "vector_shape": list(vectors.shape),
    }


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """``IngestionPipeline.run`` on the corpus; the data directory decides whether this is a first run or not."""
    from ingest.pipeline import IngestionPipeline

    _threads(spec)
    settings = _settings(spec)
    started = time.perf_counter()
    summary = IngestionPipeline(settings, progress=False).run([Path(spec["corpus"])])
    seconds = time.perf_counter() - started
    return {
        "chunks_written": summary.chunks_written,
        "chunks_embedded": summary.chunks_embedded,
        "chunks_reused": summary.chunks_reused,
        "documents_added": summary.documents_added,
        "documents_updated": summary.documents_updated,
        "documents_unchanged": summary.documents_unchanged,
        "chunks_in_store": summary.total_chunks,
        "seconds": round(seconds, 3),
        "seconds_by_stage": summary.seconds_by_stage,
        "index_version": summary.index_version,
        "embedding_backend": settings.embedding_backend,
    }


SYSTEMS = {"langchain": run_langchain, "encoder": run_encoder, "ours": run_ours}


def skipped(spec: dict[str, Any]) -> bool:
    """An operator can drop a pending step of a long run by naming it (e.g. ``encoder-torch``) in ``<work>/skip``."""
    flag = Path(spec["corpus"]).parent / "skip"
    name = f"{spec['system']}-{spec['backend']}"
    return flag.is_file() and name in flag.read_text().split()


def main() -> None:
    spec = json.loads(sys.argv[1])
    if skipped(spec):
        emit({"skipped": True, "seconds": None, "note": "skipped by the operator (listed in <work>/skip)"})
        return
    emit({**SYSTEMS[spec["system"]](spec), "peak_rss_mib": round(own_peak_rss_mib(), 1)})


if __name__ == "__main__":
    main()
