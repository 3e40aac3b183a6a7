"""Character-based recursive chunking along natural boundaries, with a token guard.

Chunks are sized in characters (easy to reason about and tune), then any chunk whose encoder input would exceed
the model's token limit is split again by tokens, so nothing is silently truncated. Each chunk carries the heading
path of the section it sits in ("Honeybees › The waggle dance"), which is prefixed to the text the encoder and
BM25 see: a passage about "food" is then found by a question about "the waggle dance" its heading names.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag.hashing import sha256_text
from rag.indexing.documents import SECTION_SEPARATOR, Chunk, Document, make_chunk_id

SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]
TITLE_PREFIX_CHARS = 200
SECTION_PREFIX_CHARS = 300


def heading_prefix(title: str, section: str) -> str:
    """The title and section path as one line when the path starts with the title, else as two lines."""
    section = section[:SECTION_PREFIX_CHARS]
    if section and title and (section == title or section.startswith(title + SECTION_SEPARATOR)):
        return section
    return "\n".join(part for part in (title, section) if part)


@dataclass(frozen=True)
class ChunkerConfig:
    chunk_size: int
    chunk_overlap: int
    embed_titles: bool = True
    embed_sections: bool = True
    # A chunk never straddles a heading, so its section path is exact; off until it measures better (PERFORMANCE.md).
    split_at_sections: bool = False
    splitter: str = "RecursiveCharacterTextSplitter"
    separators: tuple[str, ...] = tuple(SEPARATORS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "splitter": self.splitter,
            "chunk_size": self.chunk_size,
            "chunk_overlap": self.chunk_overlap,
            "embed_titles": self.embed_titles,
            # a changed value changes the config hash, hence the index version: existing indexes re-embed
            "embed_sections": "title › heading path" if self.embed_sections else False,
            "split_at_sections": self.split_at_sections,
            "separators": list(self.separators),
        }


@dataclass
class ChunkingStats:
    resplit_for_token_limit: int = 0
    over_token_limit: int = 0


class Chunker:
    """Splits a document into chunks with exact character offsets and deterministic ids."""

    def __init__(
        self,
        config: ChunkerConfig,
        count_tokens: Callable[[Sequence[str]], list[int]],
        max_tokens: int,
    ) -> None:
        self.config = config
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=config.chunk_size,
            chunk_overlap=config.chunk_overlap,
            separators=list(config.separators),
            keep_separator="end",
            strip_whitespace=True,
        )
        self.stats = ChunkingStats()

    def embed_text(self, document: Document, text: str, section: str = "") -> str:
        title = document.title[:TITLE_PREFIX_CHARS] if self.config.embed_titles else ""
        prefix = heading_prefix(title, section if self.config.embed_sections else "")
        return f"{prefix}\n{text}" if prefix else text

    def section(self, document: Document, start: int, text: str) -> str:
        return document.section_of(start, start + len(text)) if self.config.embed_sections else ""

    def split(self, document: Document) -> list[Chunk]:
        pieces: list[tuple[int, str]] = []
        for start, end in self._section_bounds(document):
            part = document.text[start:end]
            if part.strip():
                pieces.extend(self._spans(part, self._splitter.split_text(part), start))
        pieces = self._enforce_token_limit(document, pieces)
        sections = [self.section(document, start, text) for start, text in pieces]
        embed_texts = [
            self.embed_text(document, text, section) for (_, text), section in zip(pieces, sections, strict=True)
        ]
        token_counts = self.count_tokens(embed_texts)
        chunks: list[Chunk] = []
        for index, ((start, text), embed_text, n_tokens, section) in enumerate(
            zip(pieces, embed_texts, token_counts, sections, strict=True)
        ):
            if n_tokens > self.max_tokens:
                self.stats.over_token_limit += 1
            chunk_hash = sha256_text(embed_text)
            chunks.append(
                Chunk(
                    chunk_id=make_chunk_id(document.doc_id, index, chunk_hash),
                    doc_id=document.doc_id,
                    index=index,
                    text=text,
                    embed_text=embed_text,
                    char_start=start,
                    char_end=start + len(text),
                    chunk_hash=chunk_hash,
                    n_tokens=n_tokens,
                    section=section,
                )
            )
        return chunks

    def _section_bounds(self, document: Document) -> list[tuple[int, int]]:
        """Spans split separately: the whole text, or (``split_at_sections``) each section on its own."""
        end = len(document.text)
        if not (self.config.embed_sections and self.config.split_at_sections and document.sections):
            return [(0, end)]
        bounds = sorted({0, end, *(offset for offset, _ in document.sections if 0 < offset < end)})
        return list(itertools.pairwise(bounds))

    @staticmethod
    def _spans(text: str, pieces: list[str], offset: int) -> list[tuple[int, str]]:
        """Locate each piece in ``text``; pieces come in order, so search forward from the last start."""
        spans: list[tuple[int, str]] = []
        cursor = 0
        for piece in pieces:
            start = text.find(piece, cursor)
            if start < 0:
                start = text.find(piece)
            if start < 0:  # the splitter only strips whitespace, so this means a bug upstream
                raise ValueError(f"chunk not found in its document: {piece[:60]!r}")
            spans.append((offset + start, piece))
            cursor = start + 1
        return spans

    def _enforce_token_limit(
        self, document: Document, pieces: list[tuple[int, str]]
    ) -> list[tuple[int, str]]:
        sections = [self.section(document, start, text) for start, text in pieces]
        counts = self.count_tokens(
            [self.embed_text(document, text, section) for (_, text), section in zip(pieces, sections, strict=True)]
        )
        if all(count <= self.max_tokens for count in counts):
            return pieces
        result: list[tuple[int, str]] = []
        for (start, text), count, section in zip(pieces, counts, sections, strict=True):
            if count <= self.max_tokens:
                result.append((start, text))
                continue
            self.stats.resplit_for_token_limit += 1
            # budget for the longest prefix a sub-piece can get: this piece's section (sub-pieces stay inside it
            # unless it straddles a heading, whose path is then counted by the final over-limit check)
            prefix_tokens = self.count_tokens([self.embed_text(document, "", section)])[0]
            budget = max(16, self.max_tokens - prefix_tokens - 2)
            token_splitter = RecursiveCharacterTextSplitter(
                chunk_size=budget,
                chunk_overlap=min(budget // 8, 32),
                separators=list(self.config.separators),
                keep_separator="end",
                length_function=lambda s: self.count_tokens([s])[0] - 2,
            )
            result.extend(self._spans(text, token_splitter.split_text(text), start))
        return result
