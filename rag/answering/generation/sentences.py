"""Sentence splitting and lexical overlap, shared by context budgeting and the extractive generator."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[._'-][A-Za-z0-9]+)*")

_STOPWORDS_TEXT = """
a about above after again all also am an and any are as at be because been before being below between both but
by can could did do does doing done down during each few for from further had has have having he her here hers
him his how i if in into is it its itself just me more most my no nor not of off on once only or other our out
over own same she should so some such than that the their them then there these they this those through to too
under until up very was we were what when where which while who whom why will with would you your yours tell
explain describe give please list name know get got
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


_RULE_LINE = re.compile(r"^\s*([-=_*~])\1{2,}\s*$")


def split_sentences(text: str) -> list[str]:
    """Lines first (lists, headings, code), then sentence ends followed by a capital or a digit.

    Heading underlines and horizontal rules ("-----", "=====") carry no content: they are dropped, so they never
    reach a prompt or an extractive answer glued to the next sentence.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        if _RULE_LINE.match(line):
            continue
        sentences.extend(part.strip() for part in _SENTENCE_END.split(line) if part.strip())
    return sentences


def stem(token: str) -> str:
    """Crude suffix stripping so that change/changes/changed and listen/listens/listening meet, and British and
    American spellings too: a model writes "330 meters" about a source that says "330 metres" (colour/color)."""
    for suffix in ("ies", "ing", "ed", "es", "s"):
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            token = token[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    token = token[:-1] if token.endswith("e") and len(token) > 4 else token
    if token.endswith(("tr", "br")) and len(token) > 3:  # metr(e) -> meter, fibr(e) -> fiber
        return token[:-1] + "er"
    if token.endswith("our") and len(token) > 4:  # colour -> color
        return token[:-2] + "r"
    return token


def terms(text: str) -> set[str]:
    """Lower-cased, lightly stemmed content words (stopwords and 1-letter tokens dropped).

    Compound tokens also contribute their parts, so "listen_port" meets a question about the listening port.
    """
    found: set[str] = set()
    for token in _TOKEN.findall(text.lower()):
        parts = re.split(r"[._'-]", token)
        for word in {token, *parts} if len(parts) > 1 else {token}:
            if word not in STOPWORDS and len(word) > 1:
                found.add(stem(word))
    return found


def question_weights(question: str, sentence_terms: Sequence[set[str]]) -> dict[str, float]:
    """The question's words, each weighted by its IDF over the sentences and normalised to sum to 1.

    Rare question words (a product name, a parameter) count more than words found in every sentence; words
    found nowhere weigh the most, so a question about something absent scores low everywhere.
    """
    wanted = terms(question)
    n = len(sentence_terms)
    idf = {t: math.log(1.0 + (n + 1) / (1 + sum(t in st for st in sentence_terms))) for t in wanted}
    total = sum(idf.values())
    return {t: w / total for t, w in idf.items()} if total else {}


def overlap_scores(question: str, sentences: Sequence[str]) -> list[float]:
    """Share of the question's IDF weight that each sentence covers, in [0, 1]."""
    sentence_terms = [terms(s) for s in sentences]
    weights = question_weights(question, sentence_terms)
    return [sum(weights[t] for t in weights.keys() & st) for st in sentence_terms]
