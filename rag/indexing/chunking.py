"""Character-based recursive chunking along natural boundaries, with a token guard.

Chunks are sized in characters (easy to reason about and tune), then any chunk whose encoder input would exceed
the model's token limit is split again by tokens, so nothing is silently truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag.indexing.documents import Chunk, Document, make_chunk_id, sha256_text

SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]
TITLE_PREFIX_CHARS = 200


@dataclass(frozen=True)
class ChunkerConfig:
    chunk_size: int
    chunk_overlap: int
    embed_titles: bool = True
    splitter: str = "RecursiveCharacterTextSplitter"
    separators: tuple[str, ...] = tuple(SEPARATORS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "splitter": self.splitter,
            "chunk_size": self.chunk_size,
            "chunk_overlap": self.chunk_overlap,
            "embed_titles": self.embed_titles,
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

    def embed_text(self, document: Document, text: str) -> str:
        if self.config.embed_titles and document.title:
            return f"{document.title[:TITLE_PREFIX_CHARS]}\n{text}"
        return text

    def split(self, document: Document) -> list[Chunk]:
        pieces = self._spans(document.text, self._splitter.split_text(document.text), 0)
        pieces = self._enforce_token_limit(document, pieces)
        embed_texts = [self.embed_text(document, text) for _, text in pieces]
        token_counts = self.count_tokens(embed_texts)
        chunks: list[Chunk] = []
        for index, ((start, text), embed_text, n_tokens) in enumerate(
            zip(pieces, embed_texts, token_counts, strict=True)
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
                )
            )
        return chunks

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
        counts = self.count_tokens([self.embed_text(document, text) for _, text in pieces])
        if all(count <= self.max_tokens for count in counts):
            return pieces
        title_tokens = (
            self.count_tokens([self.embed_text(document, "")])[0] if self.config.embed_titles else 2
        )
        budget = max(16, self.max_tokens - title_tokens - 2)
        token_splitter = RecursiveCharacterTextSplitter(
            chunk_size=budget,
            chunk_overlap=min(budget // 8, 32),
            separators=list(self.config.separators),
            keep_separator="end",
            length_function=lambda s: self.count_tokens([s])[0] - 2,
        )
        result: list[tuple[int, str]] = []
        for (start, text), count in zip(pieces, counts, strict=True):
            if count <= self.max_tokens:
                result.append((start, text))
                continue
            self.stats.resplit_for_token_limit += 1
            result.extend(self._spans(text, token_splitter.split_text(text), start))
        return result
