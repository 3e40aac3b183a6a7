"""Typed records passed between pipeline steps."""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Any

from rag.hashing import sha256_text

SECTION_SEPARATOR = " › "


@dataclass(frozen=True)
class Document:
    """A loaded document. ``content_hash`` is taken over the raw source bytes (files) or record (JSONL).

    ``sections`` is the heading structure: ``(char_offset, path)`` pairs in offset order, each path (headings
    joined by " › ") holding from its offset to the next pair's; empty for text without headings.
    """

    doc_id: str
    text: str
    title: str
    source: str
    source_root: str
    content_hash: str
    format: str
    metadata: dict[str, Any] = field(default_factory=dict)
    sections: tuple[tuple[int, str], ...] = ()

    def section_at(self, offset: int) -> str:
        """The heading path in force at ``offset`` ("" before the first heading)."""
        index = bisect.bisect_right([start for start, _ in self.sections], offset) - 1
        return self.sections[index][1] if index >= 0 else ""

    def section_of(self, start: int, end: int) -> str:
        """The heading path covering most of ``text[start:end]`` (a chunk can straddle a heading)."""
        if not self.sections:
            return ""
        covered: dict[str, int] = {}
        bounds = [start] + [s for s, _ in self.sections if start < s < end] + [end]
        for left, right in itertools.pairwise(bounds):
            path = self.section_at(left)
            covered[path] = covered.get(path, 0) + right - left
        return max(covered.items(), key=lambda item: (item[1], item[0] != ""))[0]


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
    section: str = ""

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
            "section": self.section,
        }


def make_chunk_id(doc_id: str, index: int, chunk_hash: str) -> str:
    """Deterministic: same document, position and content give the same id, so re-runs never duplicate."""
    return sha256_text(f"{doc_id}\x1f{index}\x1f{chunk_hash}")[:32]
