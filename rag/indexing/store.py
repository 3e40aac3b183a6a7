"""Chroma wrapper: embedded ``PersistentClient`` by default, ``HttpClient`` when ``RAG_CHROMA_URL`` is set.

Embeddings are always passed in, so Chroma never tries to fetch its own default model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np

from rag.errors import ConfigError, StoreUnavailableError
from rag.settings import Settings

log = logging.getLogger(__name__)

PAGE = 5000


@dataclass
class StoredChunk:
    chunk_id: str
    text: str
    metadata: dict[str, Any]
    score: float = 0.0
    embedding: np.ndarray | None = field(default=None, repr=False)


def make_client(settings: Settings) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    try:
        if settings.chroma_url:
            url = urlparse(settings.chroma_url)
            if url.scheme not in {"http", "https"} or not url.hostname:
                raise ConfigError(
                    f"RAG_CHROMA_URL={settings.chroma_url!r} is not an http(s) URL",
                    hint="use e.g. http://127.0.0.1:8001",
                )
            return chromadb.HttpClient(
                host=url.hostname,
                port=url.port or (443 if url.scheme == "https" else 80),
                ssl=url.scheme == "https",
                settings=chroma_settings,
            )
        settings.chroma_dir.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)
    except ConfigError:
        raise
    except Exception as exc:
        where = settings.chroma_url or settings.chroma_dir
        raise StoreUnavailableError(f"cannot open the Chroma store at {where}: {exc}") from exc


class VectorStore:
    """One Chroma collection of chunks (cosine space)."""

    def __init__(self, settings: Settings, collection: str | None = None, client: Any | None = None) -> None:
        self.settings = settings
        self.name = collection or settings.collection
        self._client = client
        self._collection: Any | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client

    @property
    def collection(self) -> Any:
        if self._collection is None:
            self._collection = self._call(
                lambda: self.client.get_or_create_collection(
                    name=self.name, metadata={"hnsw:space": "cosine"}, embedding_function=None
                )
            )
        return self._collection

    def _call(self, action: Any) -> Any:
        try:
            return action()
        except (ConfigError, StoreUnavailableError):
            raise
        except Exception as exc:
            self._collection = None
            where = self.settings.chroma_url or self.settings.chroma_dir
            raise StoreUnavailableError(f"Chroma at {where} failed: {type(exc).__name__}: {exc}") from exc

    @property
    def batch_size(self) -> int:
        try:
            return max(1, min(PAGE, int(self.client.get_max_batch_size())))
        except Exception:
            return 1000

    def heartbeat(self) -> None:
        self._call(self.client.heartbeat)

    def count(self) -> int:
        return int(self._call(self.collection.count))

    def upsert(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray | Sequence[np.ndarray],
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
    ) -> None:
        size = self.batch_size
        for start in range(0, len(ids), size):
            end = start + size
            self._call(
                lambda s=start, e=end: self.collection.upsert(
                    ids=list(ids[s:e]),
                    embeddings=np.asarray(embeddings[s:e], dtype=np.float32),
                    documents=list(texts[s:e]),
                    metadatas=list(metadatas[s:e]),
                )
            )

    def delete(self, ids: Sequence[str]) -> None:
        size = self.batch_size
        for start in range(0, len(ids), size):
            self._call(lambda s=start: self.collection.delete(ids=list(ids[s : s + size])))

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        size = self.batch_size
        for start in range(0, len(ids), size):
            result = self._call(lambda s=start: self.collection.get(ids=list(ids[s : s + size]), include=[]))
            found.update(result["ids"])
        return found

    def embeddings_for(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        vectors: dict[str, np.ndarray] = {}
        size = self.batch_size
        for start in range(0, len(ids), size):
            result = self._call(
                lambda s=start: self.collection.get(ids=list(ids[s : s + size]), include=["embeddings"])
            )
            for chunk_id, vector in zip(result["ids"], result["embeddings"], strict=True):
                vectors[chunk_id] = np.asarray(vector, dtype=np.float32)
        return vectors

    def all_ids(self) -> set[str]:
        ids: set[str] = set()
        for page in self._pages(include=[]):
            ids.update(page["ids"])
        return ids

    def iter_chunks(self) -> Iterator[StoredChunk]:
        for page in self._pages(include=["documents", "metadatas"]):
            for chunk_id, text, meta in zip(page["ids"], page["documents"], page["metadatas"], strict=True):
                yield StoredChunk(chunk_id=chunk_id, text=text or "", metadata=dict(meta or {}))

    def _pages(self, include: list[str]) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self._call(
                lambda o=offset: self.collection.get(include=include, limit=PAGE, offset=o)
            )
            if not page["ids"]:
                return
            yield page
            offset += len(page["ids"])

    def get_chunks(self, ids: Sequence[str]) -> list[StoredChunk]:
        if not ids:
            return []
        result = self._call(lambda: self.collection.get(ids=list(ids), include=["documents", "metadatas"]))
        by_id = {
            cid: StoredChunk(chunk_id=cid, text=text or "", metadata=dict(meta or {}))
            for cid, text, meta in zip(result["ids"], result["documents"], result["metadatas"], strict=True)
        }
        return [by_id[cid] for cid in ids if cid in by_id]

    def query(self, embedding: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[StoredChunk]:
        """Nearest chunks by cosine similarity (1 - cosine distance), best first."""
        total = self.count()
        if total == 0:
            return []
        result = self._call(
            lambda: self.collection.query(
                query_embeddings=[np.asarray(embedding, dtype=np.float32)],
                n_results=min(k, total),
                where=where or None,
                include=["documents", "metadatas", "distances"],
            )
        )
        return [
            StoredChunk(chunk_id=cid, text=text or "", metadata=dict(meta or {}), score=1.0 - float(dist))
            for cid, text, meta, dist in zip(
                result["ids"][0],
                result["documents"][0],
                result["metadatas"][0],
                result["distances"][0],
                strict=True,
            )
        ]
