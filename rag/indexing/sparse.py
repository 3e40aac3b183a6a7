"""BM25 index over the same chunks as the vector store (bm25s, English stemmer), persisted per collection.

Ingestion rebuilds it after each change and stamps it with the index version; readers reload when the stamp
differs from the manifest, so dense and sparse retrieval always describe the same chunks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.indexing.chunking import heading_prefix
from rag.indexing.store import StoredChunk

log = logging.getLogger(__name__)

FILTERABLE_KEYS = ("doc_id", "source", "title", "format")


def _bm25s() -> Any:
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets DEBUG on import
    return bm25s


def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


@dataclass
class SparseHit:
    chunk_id: str
    score: float
    metadata: dict[str, Any]


class SparseIndex:
    """A loaded BM25 index with the chunk ids and filterable metadata of each row."""

    def __init__(
        self, retriever: Any, chunk_ids: list[str], metadata: list[dict[str, Any]], version: str
    ) -> None:
        self.retriever = retriever
        self.chunk_ids = chunk_ids
        self.metadata = metadata
        self.version = version
        self.stemmer = _stemmer()

    @staticmethod
    def directory(bm25_dir: Path, collection: str) -> Path:
        return bm25_dir / collection

    @staticmethod
    def index_text(chunk: StoredChunk, with_title: bool) -> str:
        if not with_title:
            return chunk.text
        # the same title and heading-path prefix the encoder sees (rag.indexing.chunking.heading_prefix)
        prefix = heading_prefix(str(chunk.metadata.get("title") or ""), str(chunk.metadata.get("section") or ""))
        return f"{prefix}\n{chunk.text}" if prefix else chunk.text

    @classmethod
    def build(
        cls, chunks: Iterable[StoredChunk], directory: Path, version: str, *, with_title: bool = True
    ) -> SparseIndex | None:
        bm25s = _bm25s()

        ids: list[str] = []
        texts: list[str] = []
        metadata: list[dict[str, Any]] = []
        for chunk in chunks:
            ids.append(chunk.chunk_id)
            texts.append(cls.index_text(chunk, with_title))
            metadata.append({k: chunk.metadata.get(k) for k in FILTERABLE_KEYS})
        directory.parent.mkdir(parents=True, exist_ok=True)
        if not ids:
            shutil.rmtree(directory, ignore_errors=True)
            return None
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
        try:
            retriever.save(str(staging / "bm25"))
            (staging / "rows.json").write_text(json.dumps({"ids": ids, "metadata": metadata}))
            (staging / "VERSION").write_text(version)
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            if directory.exists():
                os.replace(directory, old)
            os.replace(staging, directory)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return cls(retriever, ids, metadata, version)

    @classmethod
    def stored_version(cls, directory: Path) -> str | None:
        try:
            return (directory / "VERSION").read_text().strip()
        except OSError:
            return None

    @classmethod
    def load(cls, directory: Path) -> SparseIndex | None:
        bm25s = _bm25s()

        version = cls.stored_version(directory)
        if version is None:
            return None
        rows = json.loads((directory / "rows.json").read_text())
        retriever = bm25s.BM25.load(str(directory / "bm25"), mmap=False)
        return cls(retriever, rows["ids"], rows["metadata"], version)

    def search(self, query: str, k: int, where: dict[str, Any] | None = None) -> list[SparseHit]:
        bm25s = _bm25s()

        tokens = bm25s.tokenize([query], stopwords="en", stemmer=self.stemmer, show_progress=False)
        if not tokens.vocab or not any(len(row) for row in tokens.ids):
            return []
        # bm25s scores every row; filters become a 0/1 mask so filtered retrieval keeps its full recall.
        mask = None
        if where:
            mask = np.array([matches(meta, where) for meta in self.metadata], dtype=np.float32)
            if not mask.any():
                return []
        k = min(k, len(self.chunk_ids) if mask is None else int(mask.sum()))
        docs, scores = self.retriever.retrieve(
            tokens, k=k, show_progress=False, weight_mask=mask, n_threads=1
        )
        hits = []
        for row, score in zip(docs[0], scores[0], strict=True):
            if score <= 0:
                continue
            hits.append(SparseHit(self.chunk_ids[int(row)], float(score), self.metadata[int(row)]))
        return hits


def matches(metadata: dict[str, Any], where: dict[str, Any]) -> bool:
    """Evaluate the subset of Chroma's ``where`` syntax the API accepts: equality, $eq, $ne, $in, $nin, $and."""
    for key, condition in where.items():
        if key == "$and":
            if not all(matches(metadata, part) for part in condition):
                return False
            continue
        value = metadata.get(key)
        if isinstance(condition, dict):
            for op, operand in condition.items():
                ok = {
                    "$eq": lambda v, o: v == o,
                    "$ne": lambda v, o: v != o,
                    "$in": lambda v, o: v in o,
                    "$nin": lambda v, o: v not in o,
                }[op](value, operand)
                if not ok:
                    return False
        elif value != condition:
            return False
    return True
