"""Typed records passed between pipeline steps."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Document:
    """A loaded document. ``content_hash`` is taken over the raw source bytes (files) or record (JSONL)."""

    doc_id: str
    text: str
    title: str
    source: str
    source_root: str
    content_hash: str
    format: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """A span ``document.text[char_start:char_end]``; ``embed_text`` is what the encoder sees."""

    chunk_id: str
    doc_id: str
    index: int
    text: str
    embed_text: str
    char_start: int
    char_end: int
    chunk_hash: str
    n_tokens: int

    def metadata(self, document: Document) -> dict[str, Any]:
        return {
            "doc_id": document.doc_id,
            "source": document.source,
            "title": document.title,
            "format": document.format,
            "chunk_index": self.index,
            "char_start": self.char_start,
            "char_end": self.char_end,
            "content_hash": self.chunk_hash,
            "doc_hash": document.content_hash,
            "n_tokens": self.n_tokens,
        }


def make_chunk_id(doc_id: str, index: int, chunk_hash: str) -> str:
    """Deterministic: same document, position and content give the same id, so re-runs never duplicate."""
    return hashlib.sha256(f"{doc_id}\x1f{index}\x1f{chunk_hash}".encode()).hexdigest()[:32]
