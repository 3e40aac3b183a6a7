"""The ingestion manifest: per document its content hash and chunk ids, plus what defines the index version.

Written atomically (temp file + fsync + rename). ``dirty`` is set before the first store write of a run and
cleared after the last, so a run killed in between is detected and reconciled by the next one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from rag.errors import ConfigError
from rag.hashing import sha256_json

SCHEMA_VERSION = 1


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class DocumentRecord(BaseModel):
    doc_id: str
    source: str
    source_root: str
    title: str = ""
    format: str = ""
    content_hash: str
    chunk_ids: list[str]
    chunk_hashes: list[str]
    chunk_chars: list[int]
    chunk_tokens: list[int]
    n_chars: int
    embedding_sha256: str = Field(description="Weights that produced this document's vectors.")
    chunker_hash: str = Field(description="Chunker config that produced these chunks.")
    ingested_at: str = Field(default_factory=utcnow)


class VersionEntry(BaseModel):
    index_version: str
    corpus_hash: str
    created_at: str
    documents: int
    chunks: int


class Manifest(BaseModel):
    schema_version: int = SCHEMA_VERSION
    collection: str
    embedding: dict[str, Any] | None = None
    chunker: dict[str, Any] | None = None
    documents: dict[str, DocumentRecord] = Field(default_factory=dict)
    corpus_hash: str = ""
    index_version: str | None = None
    dirty: bool = False
    updated_at: str = Field(default_factory=utcnow)
    history: list[VersionEntry] = Field(default_factory=list)

    @classmethod
    def path_for(cls, manifest_dir: Path, collection: str) -> Path:
        return manifest_dir / f"{collection}.json"

    @classmethod
    def load(cls, manifest_dir: Path, collection: str) -> Manifest:
        path = cls.path_for(manifest_dir, collection)
        if not path.exists():
            return cls(collection=collection)
        try:
            manifest = cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(
                f"manifest {path} is unreadable: {exc}",
                hint="restore it from a backup, or delete it together with the collection to rebuild",
            ) from exc
        if manifest.schema_version != SCHEMA_VERSION:
            raise ConfigError(
                f"manifest {path} has schema {manifest.schema_version}, expected {SCHEMA_VERSION}"
            )
        return manifest

    def save(self, manifest_dir: Path) -> None:
        manifest_dir.mkdir(parents=True, exist_ok=True)
        self.updated_at = utcnow()
        path = self.path_for(manifest_dir, self.collection)
        fd, tmp = tempfile.mkstemp(dir=manifest_dir, prefix=f".{self.collection}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.model_dump_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @property
    def chunk_count(self) -> int:
        return sum(len(record.chunk_ids) for record in self.documents.values())

    def chunk_ids(self) -> set[str]:
        return {cid for record in self.documents.values() for cid in record.chunk_ids}

    def compute_corpus_hash(self) -> str:
        digest = hashlib.sha256()
        for doc_id in sorted(self.documents):
            digest.update(f"{doc_id}\x1f{self.documents[doc_id].content_hash}\n".encode())
        return digest.hexdigest()

    def compute_index_version(self) -> str:
        payload = {
            "corpus_hash": self.corpus_hash,
            "chunker": self.chunker,
            "embedding": {k: (self.embedding or {}).get(k) for k in ("name", "weights_sha256")},
        }
        return sha256_json(payload)[:16]

    def seal(self) -> bool:
        """Recompute corpus hash and index version; record a history entry if the version changed."""
        self.corpus_hash = self.compute_corpus_hash()
        version = self.compute_index_version()
        changed = version != self.index_version
        if changed:
            self.index_version = version
            self.history.append(
                VersionEntry(
                    index_version=version,
                    corpus_hash=self.corpus_hash,
                    created_at=utcnow(),
                    documents=len(self.documents),
                    chunks=self.chunk_count,
                )
            )
        self.dirty = False
        return changed
