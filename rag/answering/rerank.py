"""Cross-encoder reranking of the fused candidates (bundled ms-marco-MiniLM-L-12-v2, int8 ONNX).

A cross-encoder reads the question and a passage together, so it judges "does this passage answer the question"
better than a cosine between two separately made vectors. It is also ~100x dearer per passage, so it only
re-scores the top ``rerank_candidates`` fused chunks. Its raw logit is exposed on every chunk either way
(``RetrievedChunk.rerank_score``); whether it reorders them is ``RAG_RERANK`` (default by measurement on SciFact
train, docs/PERFORMANCE.md).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import ModelError
from rag.indexing.bundled import (
    PINNED_SHA256,
    RERANKER_DIR,
    bundled_dir,
    load_tokenizer,
    onnx_session,
    verify_files,
)
from rag.settings import Settings

RERANKER_NAME = "cross-encoder/ms-marco-MiniLM-L-12-v2 (onnx-int8)"


class CrossEncoder:
    """Relevance logits for (query, passage) pairs; files checked at construction, session loaded on first use.

    Thread-safe: ONNX Runtime sessions may be run concurrently, and the lazy load is guarded by a lock. Pairs are
    sorted by length before batching so padding stays small; a batch's int8 activation scale is shared, so a score
    can move by a few tenths of a logit with its batch-mates (measured: -4.01 batched vs -3.73 alone), small next
    to the ~10-logit gap between relevant and irrelevant passages. ``rerank_batch_size=1`` makes scores exact.
    """

    def __init__(self, settings: Settings, model_dir: Path | None = None) -> None:
        self.model_dir = model_dir or bundled_dir(RERANKER_DIR)
        self.max_tokens = settings.rerank_max_tokens
        self.batch_size = settings.rerank_batch_size
        self.threads = settings.rerank_threads
        self._lock = threading.Lock()
        verify_files(self.model_dir, PINNED_SHA256[RERANKER_DIR], settings.models_dir / "verified-files.json")

    @cached_property
    def _runtime(self) -> tuple[Any, Any, set[str]]:
        with self._lock:
            session = onnx_session(self.model_dir / "model.onnx", self.threads)
            tokenizer = load_tokenizer(self.model_dir / "tokenizer.json")
            tokenizer.enable_truncation(self.max_tokens, strategy="longest_first")
            tokenizer.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]")
            return session, tokenizer, {i.name for i in session.get_inputs()}

    def load(self) -> CrossEncoder:
        """Load the session now (start-up), instead of on the first query."""
        _ = self._runtime
        return self

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Raw relevance logits, one per (query, passage) pair, in the order given."""
        scores = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return scores
        session, tokenizer, inputs = self._runtime
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            encoded = tokenizer.encode_batch([(pairs[i][0], pairs[i][1]) for i in batch])
            feeds = {
                "input_ids": np.asarray([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encoded], dtype=np.int64),
                "token_type_ids": np.asarray([e.type_ids for e in encoded], dtype=np.int64),
            }
            try:
                logits = session.run(None, {k: v for k, v in feeds.items() if k in inputs})[0]
            except Exception as exc:
                raise ModelError(f"the reranker failed on a batch of {len(batch)} pairs: {exc}") from exc
            scores[batch] = np.asarray(logits, dtype=np.float32).reshape(len(batch), -1)[:, 0]
        return scores

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": RERANKER_NAME,
            "model_sha256": PINNED_SHA256[RERANKER_DIR]["model.onnx"],
            "max_tokens": self.max_tokens,
            "batch_size": self.batch_size,
            "threads": self.threads,
        }


def passage_text(title: str, text: str) -> str:
    """What the cross-encoder reads for a chunk: its document title, then its text (as the embedder sees it)."""
    title = title.strip()
    return f"{title}\n{text}" if title and not text.startswith(title) else text


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, value))))


@dataclass(frozen=True)
class RerankOutcome:
    """Reranker logits per chunk id and the blended order of the candidates."""

    scores: dict[str, float]
    order: list[str]
    blended: dict[str, float]


class Reranker:
    """The reranking step: re-scores the top fused candidates and, when enabled, reorders by the blend."""

    def __init__(self, settings: Settings, encoder: CrossEncoder | None = None) -> None:
        self.enabled = settings.rerank
        self.candidates = settings.rerank_candidates
        self.weight = settings.rerank_weight
        self.encoder = encoder or CrossEncoder(settings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "candidates": self.candidates,
            "weight": self.weight,
            "encoder": self.encoder.to_dict(),
        }

    def rerank(self, question: str, ranked: Sequence[tuple[str, str, float]], k: int) -> RerankOutcome:
        """``ranked``: (chunk id, text, fused score), best first. Scores the top ``max(k, candidates)``.

        Blended score = weight x sigmoid(logit) + (1 - weight) x fused score; chunks past the re-scored head keep
        their fused order behind it. When disabled only the final top ``k`` are scored (the signal is still exposed).
        """
        head = list(ranked[: max(k, self.candidates)] if self.enabled else ranked[:k])
        logits = self.encoder.score([(question, text) for _, text, _ in head])
        scores = {cid: float(s) for (cid, _, _), s in zip(head, logits, strict=True)}
        if not self.enabled:
            return RerankOutcome(scores, [cid for cid, _, _ in ranked], {cid: f for cid, _, f in ranked})
        blended = {cid: self.weight * sigmoid(scores[cid]) + (1 - self.weight) * fused for cid, _, fused in head}
        order = sorted(blended, key=lambda cid: (-blended[cid], cid))
        tail = [cid for cid, _, _ in ranked[len(head) :]]
        blended.update({cid: (1 - self.weight) * fused for cid, _, fused in ranked[len(head) :]})
        return RerankOutcome(scores, order + tail, blended)
