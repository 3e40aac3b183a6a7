"""Citations in generated answers ([n], [n, m], [n-m]) and detection of "the context does not answer"."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.answering.generation.prompt import UNKNOWN_ANSWER, Context
from rag.answering.generation.sentences import terms

MAX_RANGE = 50  # "[1-9999]" is a malformed citation, not 9999 sources

_NUMBER_LIST = r"\d{1,4}(?:\s*(?:[-–]|,|;|and)\s*\d{1,4})*"
_CITATION = re.compile(
    rf"\[\s*(?:(?:sources?|context|doc(?:ument)?s?|ref)\s*#?\s*)?({_NUMBER_LIST})\s*\]", re.IGNORECASE
)
_ITEM = re.compile(r"(\d{1,4})(?:\s*[-–]\s*(\d{1,4}))?")

_UNKNOWN_PATTERNS = [
    r"\bi (?:do not|don't|dont) know\b",
    r"\bi(?: cannot| can't| can not| am unable to|'m unable to| am not able to|'m not able to)"
    r" (?:answer|find|determine|tell)\b",
    r"\b(?:contexts?|sources?|documents?|passages?|(?:provided|given) (?:text|information|data))"
    r"\s+(?:does|do|did)(?: not|n't)\s+(?:contain|mention|provide|include|say|specify|state|answer|cover|"
    r"give|have|discuss|address|describe)\b",
    r"\bnot (?:mentioned|provided|found|specified|stated|given|covered|included|available|addressed)"
    r" in the (?:provided |given |available )?(?:context|sources?|documents?|text|information|passages?)\b",
    r"\b(?:there is|there's) no (?:relevant )?(?:information|mention|data)\b.{0,60}"
    r"\b(?:context|sources?|documents?|passages?|provided)\b",
    r"\b(?:not enough|insufficient|no sufficient) information\b",
    r"\bcannot be (?:answered|determined) (?:from|based on|with)\b",
]
_UNKNOWN = re.compile("|".join(f"(?:{p})" for p in _UNKNOWN_PATTERNS), re.IGNORECASE)


@dataclass(frozen=True)
class CitationReport:
    """Cited numbers that exist (``cited``) and those that do not (``invalid``), in order of appearance."""

    cited: list[int] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"cited": list(self.cited), "invalid": list(self.invalid)}


def parse_citations(text: str) -> list[int]:
    """Every source number cited in ``text``, deduplicated, in order of first appearance."""
    numbers: list[int] = []
    for match in _CITATION.finditer(text):
        for item in _ITEM.finditer(match.group(1)):
            start = int(item.group(1))
            end = int(item.group(2)) if item.group(2) else start
            malformed = end < start or end - start >= MAX_RANGE  # keep both ends, let validation judge
            span = [start, end] if malformed else list(range(start, end + 1))
            numbers.extend(n for n in span if n not in numbers)
    return numbers


def check_citations(text: str, n_contexts: int) -> CitationReport:
    """Split the cited numbers into those in 1..n_contexts and out-of-range ones."""
    numbers = parse_citations(text)
    return CitationReport(
        cited=[n for n in numbers if 1 <= n <= n_contexts],
        invalid=[n for n in numbers if not 1 <= n <= n_contexts],
    )


def cited_contexts(text: str, contexts: Sequence[Context]) -> list[Context]:
    """The contexts an answer cites, by their ``index``, in order of first citation."""
    by_index = {c.index: c for c in contexts}
    return [by_index[n] for n in parse_citations(text) if n in by_index]


def infer_citations(answer: str, contexts: Sequence[Context], *, min_coverage: float = 0.6) -> list[int]:
    """Sources holding most of an answer's content words: a fallback for small models that forget [n].

    Returns the best-covering source(s) when they contain at least ``min_coverage`` of the answer's words;
    nothing for answers too short to judge (fewer than two content words, e.g. a bare number).
    """
    wanted = terms(_CITATION.sub(" ", answer))
    if len(wanted) < 2 or not contexts:
        return []
    coverage = {c.index: len(wanted & terms(c.text)) / len(wanted) for c in contexts}
    best = max(coverage.values())
    return [index for index, value in coverage.items() if value == best] if best >= min_coverage else []


def _opening(text: str) -> str:
    """The first sentence, or the first two when the first is a mere "Sorry." or "Unfortunately,"."""
    ends = [m.end() for m in re.finditer(r"[.!?](?:\s|$)", text)]
    if not ends:
        return text
    return text[: ends[1]] if ends[0] < 25 and len(ends) > 1 else text[: ends[0]]


def is_unknown_answer(text: str) -> bool:
    """True when the answer says the sources do not answer the question (an empty answer counts too).

    The fixed sentence anywhere, or a common paraphrase ("I don't know", "the context does not mention",
    "not mentioned in the provided documents"...) in the opening sentence: an answer that gives facts first
    and then notes one missing detail is still an answer.
    """
    normalized = " ".join(text.replace("’", "'").replace("‘", "'").split())
    if not normalized:
        return True
    if UNKNOWN_ANSWER.lower().rstrip(".") in normalized.lower():
        return True
    return bool(_UNKNOWN.search(_opening(normalized)))
