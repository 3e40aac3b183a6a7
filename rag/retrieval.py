"""Dense (Chroma), sparse (BM25) and hybrid retrieval fused by weighted reciprocal rank fusion.

Every returned chunk carries its cosine similarity to the question, also when BM25 found it, because
abstention and confidence are decided on that one comparable scale.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from rag.embedding import Embedder
from rag.errors import IndexNotReadyError, InvalidInputError
from rag.manifest import Manifest
from rag.settings import Settings
from rag.sparse import FILTERABLE_KEYS, SparseIndex
from rag.store import StoredChunk, VectorStore

Mode = Literal["dense", "bm25", "hybrid"]
FILTER_OPERATORS = {"$eq", "$ne", "$in", "$nin"}
QUERY_CACHE_SIZE = 1024


@dataclass
class RetrievedChunk:
    chunk_id: str
    doc_id: str
    source: str
    title: str
    text: str
    score: float
    dense_score: float
    bm25_score: float | None = None
    dense_rank: int | None = None
    bm25_rank: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RetrievalResult:
    chunks: list[RetrievedChunk]
    mode: Mode
    index_version: str | None
    query_embedding: np.ndarray
    seconds: float

    @property
    def top_dense(self) -> float | None:
        return max((c.dense_score for c in self.chunks), default=None)


def normalise_filters(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate the metadata filter and turn it into Chroma's ``where`` syntax."""
    if not filters:
        return None
    clauses: list[dict[str, Any]] = []
    for key, condition in filters.items():
        if key not in FILTERABLE_KEYS:
            raise InvalidInputError(
                f"cannot filter on {key!r}", hint=f"filterable fields: {', '.join(FILTERABLE_KEYS)}"
            )
        if isinstance(condition, dict):
            if not condition or set(condition) - FILTER_OPERATORS:
                raise InvalidInputError(
                    f"filter on {key!r} uses {sorted(set(condition) - FILTER_OPERATORS) or 'no operator'}",
                    hint=f"operators: {', '.join(sorted(FILTER_OPERATORS))}",
                )
            for op, operand in condition.items():
                if op in {"$in", "$nin"} and (not isinstance(operand, list) or not operand):
                    raise InvalidInputError(f"{key}.{op} needs a non-empty list")
                if op in {"$eq", "$ne"} and not isinstance(operand, str | int | float | bool):
                    raise InvalidInputError(f"{key}.{op} needs a string, number or boolean")
        elif not isinstance(condition, str | int | float | bool):
            raise InvalidInputError(f"filter value for {key!r} must be a string, number, boolean or operator object")
        clauses.append({key: condition})
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


class Retriever:
    """Holds the encoder, the store and the BM25 index; safe to share between request threads."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None, store: VectorStore | None = None) -> None:
        self.settings = settings
        self.embedder = embedder or Embedder(settings)
        self.store = store or VectorStore(settings)
        self._sparse: SparseIndex | None = None
        self._sparse_lock = threading.Lock()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "mode": s.retrieval_mode,
            "top_k": s.top_k,
            "candidate_k": s.candidate_k,
            "rrf_k": s.rrf_k,
            "dense_weight": s.dense_weight,
            "bm25_weight": s.bm25_weight,
            "collection": self.store.name,
        }

    def index_version(self) -> str | None:
        return Manifest.load(self.settings.manifest_dir, self.store.name).index_version

    def embed_query(self, question: str) -> np.ndarray:
        with self._cache_lock:
            cached = self._query_cache.get(question)
            if cached is not None:
                self._query_cache.move_to_end(question)
                return cached
        vector = self.embedder.embed_query(question)
        with self._cache_lock:
            self._query_cache[question] = vector
            while len(self._query_cache) > QUERY_CACHE_SIZE:
                self._query_cache.popitem(last=False)
        return vector

    def sparse_index(self, version: str | None) -> SparseIndex | None:
        """The BM25 index for ``version``; reloaded when ingestion has published a new one."""
        with self._sparse_lock:
            if self._sparse is None or self._sparse.version != version:
                self._sparse = SparseIndex.load(SparseIndex.directory(self.settings.bm25_dir, self.store.name))
            return self._sparse

    def retrieve(
        self,
        question: str,
        k: int | None = None,
        mode: Mode | None = None,
        filters: dict[str, Any] | None = None,
    ) -> RetrievalResult:
        started = time.perf_counter()
        k = k or self.settings.top_k
        mode = mode or self.settings.retrieval_mode
        where = normalise_filters(filters)
        version = self.index_version()
        if version is None:
            raise IndexNotReadyError(
                f"collection {self.store.name!r} has no documents yet", hint="run `rag ingest PATH` first"
            )
        query = self.embed_query(question)
        pool = max(k, self.settings.candidate_k)
        dense: list[StoredChunk] = self.store.query(query, pool, where) if mode != "bm25" else []
        sparse = []
        if mode != "dense":
            index = self.sparse_index(version)
            if index is None:
                raise IndexNotReadyError("the BM25 index is missing", hint="run `rag ingest` again to rebuild it")
            sparse = index.search(question, pool, where)

        dense_rank = {c.chunk_id: rank for rank, c in enumerate(dense, start=1)}
        sparse_rank = {h.chunk_id: rank for rank, h in enumerate(sparse, start=1)}
        sparse_score = {h.chunk_id: h.score for h in sparse}
        fused: dict[str, float] = {}
        rrf_k = self.settings.rrf_k
        if mode == "dense":
            fused = {c.chunk_id: c.score for c in dense}
        elif mode == "bm25":
            fused = dict(sparse_score)
        else:
            for chunk_id, rank in dense_rank.items():
                fused[chunk_id] = fused.get(chunk_id, 0.0) + self.settings.dense_weight / (rrf_k + rank)
            for chunk_id, rank in sparse_rank.items():
                fused[chunk_id] = fused.get(chunk_id, 0.0) + self.settings.bm25_weight / (rrf_k + rank)
        top_ids = sorted(fused, key=lambda cid: (-fused[cid], cid))[:k]

        known = {c.chunk_id: c for c in dense}
        missing = [cid for cid in top_ids if cid not in known]
        for chunk in self.store.get_chunks(missing):
            known[chunk.chunk_id] = chunk
        if missing:  # BM25-only hits: compute their cosine from the stored vectors
            vectors = self.store.embeddings_for(missing)
            for cid, vector in vectors.items():
                if cid in known:
                    known[cid].score = float(np.dot(vector, query))
        chunks = [
            RetrievedChunk(
                chunk_id=cid,
                doc_id=str(known[cid].metadata.get("doc_id", "")),
                source=str(known[cid].metadata.get("source", "")),
                title=str(known[cid].metadata.get("title", "")),
                text=known[cid].text,
                score=round(float(fused[cid]), 6),
                dense_score=round(float(known[cid].score), 6),
                bm25_score=sparse_score.get(cid),
                dense_rank=dense_rank.get(cid),
                bm25_rank=sparse_rank.get(cid),
                metadata=known[cid].metadata,
            )
            for cid in top_ids
            if cid in known  # a chunk deleted between the two lookups is dropped, never invented
        ]
        return RetrievalResult(chunks, mode, version, query, time.perf_counter() - started)
