"""The ``extractive`` generator: no LLM, the best-supported sentences of the sources, each cited.

A deterministic, instant baseline (and a fallback where no model can run): it cannot paraphrase or combine
facts, but it never states anything the sources do not say.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rag.answering.generation.prompt import UNKNOWN_ANSWER, Context
from rag.answering.generation.sentences import question_weights, split_sentences, terms


class ExtractiveGenerator:
    """Up to ``max_sentences`` sentences chosen greedily for the question words they add (each later one at least
    half as much as the first); the fixed "don't know" sentence when together they cover less than
    ``min_overlap`` of the question's (IDF-weighted) words.

    Greedy coverage rather than per-sentence scores, so "X and Y?" can be answered by one sentence on X and
    one on Y.
    """

    model_id = "extractive"

    def __init__(self, *, max_sentences: int = 2, min_overlap: float = 0.3, min_words: int = 4) -> None:
        if not 0 < min_overlap <= 1:
            raise ValueError("min_overlap must be in (0, 1]")
        self.max_sentences = max_sentences
        self.min_overlap = min_overlap
        self.min_words = min_words

    def answer(self, question: str, contexts: Sequence[Context]) -> str:
        """Chosen sentences in source order, each followed by its [n]."""
        candidates = [
            (ctx.index, position, sentence, terms(sentence))
            for ctx in contexts
            for position, sentence in enumerate(gap_free_sentences(ctx.text))
            if len(sentence.split()) >= self.min_words
        ]
        weights = question_weights(question, [c[3] for c in candidates])
        covered: set[str] = set()
        picked: list[int] = []
        first_gain = 0.0
        while len(picked) < self.max_sentences:
            best, best_gain = -1, first_gain / 2  # a later sentence must add at least half as much as the first
            for k, (_, _, _, found) in enumerate(candidates):
                gain = sum(weights.get(t, 0.0) for t in found - covered)
                if k not in picked and gain > best_gain:  # ties: the higher-ranked source, the earlier sentence
                    best, best_gain = k, gain
            if best < 0:
                break
            picked.append(best)
            covered |= candidates[best][3] & weights.keys()
            first_gain = first_gain or best_gain
        if sum(weights[t] for t in covered) < self.min_overlap:
            return UNKNOWN_ANSWER
        parts = []
        for k in sorted(picked, key=lambda k: candidates[k][:2]):
            index, _, sentence, _ = candidates[k]
            body = sentence.rstrip()
            end = body[-1] if body[-1] in ".!?" else "."
            parts.append(f"{body.rstrip('.!?')} [{index}]{end}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": "extractive",
            "model_id": self.model_id,
            "max_sentences": self.max_sentences,
            "min_overlap": self.min_overlap,
            "min_words": self.min_words,
        }


def gap_free_sentences(text: str) -> list[str]:
    """The context's sentences, cut at its gap marker "…": pieces of non-adjacent source sentences are separate
    claims (the verifier cuts there too), so each one gets its own [n]."""
    return [piece.strip() for sentence in split_sentences(text) for piece in sentence.split("…") if piece.strip()]
