"""Metrics that need no LLM: retrieval (hit@k, recall@k, MRR@k, nDCG@k) and answers (token F1, ROUGE-L,
abstention, yes/no/maybe decisions).

Every function scores ONE sample and returns a float in [0, 1], or NaN when the metric does not apply (no
relevant documents, no reference). Means, intervals and slices are computed elsewhere from these values, with
NaN excluded and counted. The definitions follow trec_eval/BEIR (linear gains, log2 discount, binary hits) and
SQuAD (token F1), so the numbers can be checked by hand.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from eval.datasets import Decision
from rag.answering.decisions import HEDGES, NEGATIONS

NAN = float("nan")
CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")
ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation, " "))
RETRIEVAL_CUTOFFS = {"hit": (1, 3, 5, 10), "recall": (10, 100), "mrr": (10,), "ndcg": (10,)}


def ranked_documents(doc_ids: Iterable[str]) -> list[str]:
    """Chunks (best first) → documents (best first): a document scores as its best chunk (max aggregation).

    Chunks arrive sorted by score, so a document's first occurrence is its best chunk's rank.
    """
    return list(dict.fromkeys(d for d in doc_ids if d))


def hit_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """1 when any relevant document is in the top k."""
    relevant = {d for d, g in relevance.items() if g > 0}
    if not relevant:
        return NAN
    return 1.0 if any(d in relevant for d in ranked[:k]) else 0.0


def recall_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the top k."""
    relevant = {d for d, g in relevance.items() if g > 0}
    if not relevant:
        return NAN
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant document in the top k (0 when there is none)."""
    relevant = {d for d, g in relevance.items() if g > 0}
    if not relevant:
        return NAN
    for rank, doc_id in enumerate(ranked[:k], start=1):
        if doc_id in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """DCG@k / ideal DCG@k with gain = relevance grade and discount log2(rank + 1) (trec_eval's ndcg_cut)."""
    grades = sorted((g for g in relevance.values() if g > 0), reverse=True)
    if not grades:
        return NAN
    dcg = sum(max(relevance.get(d, 0), 0) / math.log2(rank + 1) for rank, d in enumerate(ranked[:k], start=1))
    ideal = sum(g / math.log2(rank + 1) for rank, g in enumerate(grades[:k], start=1))
    return dcg / ideal


def retrieval_scores(ranked: Sequence[str], relevance: Mapping[str, int]) -> dict[str, float]:
    """All retrieval metrics at the standard cut-offs, keyed like ``ndcg_at_10``."""
    functions = {"hit": hit_at_k, "recall": recall_at_k, "mrr": mrr_at_k, "ndcg": ndcg_at_k}
    return {
        f"{name}_at_{k}": functions[name](ranked, relevance, k)
        for name, cutoffs in RETRIEVAL_CUTOFFS.items()
        for k in cutoffs
    }


RETRIEVAL_METRICS = tuple(f"{name}_at_{k}" for name, cutoffs in RETRIEVAL_CUTOFFS.items() for k in cutoffs)


def normalize_tokens(text: str) -> list[str]:
    """SQuAD normalisation (lower case, no punctuation, no articles), citation markers [n] removed first."""
    text = CITATION.sub(" ", text.lower())
    text = ARTICLES.sub(" ", text.translate(PUNCTUATION))
    return text.split()


def token_f1(prediction: str, reference: str | None) -> float:
    """Harmonic mean of token precision and recall against the reference (SQuAD's F1)."""
    if not reference:
        return NAN
    pred, ref = normalize_tokens(prediction), normalize_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str | None) -> float:
    """ROUGE-L F1: longest common subsequence of normalised tokens over prediction and reference lengths."""
    if not reference:
        return NAN
    pred, ref = normalize_tokens(prediction), normalize_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def abstention_correct(abstained: bool, answerable: bool | None) -> float:
    """1 when the pipeline abstained exactly on the unanswerable questions; NaN without the label."""
    if answerable is None:
        return NAN
    return 1.0 if abstained == (not answerable) else 0.0


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def extract_decision(answer: str, *, abstained: bool = False) -> Decision | None:
    """The yes / no / maybe decision an answer expresses (PubMedQA), or None for an abstention.

    Rules, applied to the first sentence with citations removed: it starts with "yes" → yes, with "no" →
    no; a hedge ("maybe", "unclear", "inconclusive", "may or may not"...) → maybe; otherwise a negation
    ("not", "no", "did not", "n't"...) → no; otherwise an affirmative statement → yes.
    """
    if abstained or not answer.strip():
        return None
    text = CITATION.sub(" ", answer).strip().lower()
    first = _SENTENCE_END.split(text, maxsplit=1)[0]
    words = first.translate(PUNCTUATION).split()
    if not words:
        return None
    if words[0] == "yes":
        return "yes"
    if words[0] == "no":
        return "no"
    if HEDGES.search(first):
        return "maybe"
    if NEGATIONS.search(first):
        return "no"
    return "yes"


def decision_correct(predicted: Decision | None, gold: Decision | None) -> float:
    """1 when the extracted decision equals the label (an abstention counts as wrong); NaN without a label."""
    if gold is None:
        return NAN
    return 1.0 if predicted == gold else 0.0
