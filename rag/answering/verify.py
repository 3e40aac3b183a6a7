"""Answer verification: every sentence of a generated answer checked against the sources it cites.

A 1.5B model cites sources it was not shown, forgets ``[n]``, and copies a date from the wrong event. This step
catches that after generation, offline and cheaply (regexes, word sets and one batched cross-encoder call).

Per answer sentence (split like the sources, a trailing bare ``[n]`` joined to the sentence before it, and cut at
the prompt's gap marker "…": a model copying it glues pieces of different passages into one "sentence"):

1. **Citation.** It must carry at least one ``[n]`` that maps to a source it was shown, and no ``[n]`` that does
   not (an invalid number fails the sentence; it is never dropped silently). A sentence without content words
   ("Sure.") needs none. **Repair rule** (``verify_repair``): an uncited sentence gets ``[k]`` when shown source
   ``k`` contains all its numbers and named entities and at least ``repair_min_overlap`` of its content words, so
   that it passes checks 2-4 against ``k`` (several such sources: the one the answer cites elsewhere if exactly one
   is, else the one holding most of its content words, ties to the higher-ranked). The same rule
   moves a misattributed citation: a cited sentence that fails checks 2-4 against its sources, but passes them
   against exactly one other shown source, cites that one instead (the wrong ``[n]`` is removed). Both count in
   ``n_repaired``; the returned answer carries the repaired ``[k]``.
2. **Numbers** (digits with thousands separators, decimals, percentages, ordinals, years and the words
   "two" to "ninety-nine", "hundred", "thousand", "million", "billion"; "one" is too often a pronoun) must all
   occur in the cited chunks' text: "1,200" = "1200" = "1.2 thousand", "forty-nine" = "49". A number given with a
   unit of measurement must not occur there only with units of another dimension: "45 years old" from "45 pounds"
   fails (``unit_not_in_source``; ``verify_units``; ``rag.answering.units``). Answer-level, with the same setting:
   when the question's wording asks for a dimension ("How old", "how tall", "how many glaciers": a count) and every
   number the answer gives has a unit of another one, the answer is ``unsupported`` (``units_not_asked``).
3. **Named entities** (capitalised words not opening the sentence, runs of them, acronyms) must occur in the
   cited text or its title (shown to the model too), word by word, case-insensitively (a possessive "'s" is
   ignored).
4. **Overlap**: the share of the sentence's content words (``sentences.terms``) found in the cited text must be at
   least ``verify_min_overlap``.

   In 2-4 (and the repair rule), what the sentence repeats from the question is given, not claimed
   (``verify_question_given``): "Coleman was a dispatcher in Halifax in 1917" for "What was Coleman's job in
   Halifax in 1917?" needs no "1917" or "Halifax" in the source. The overlap is then the larger of the share of
   all the sentence's words and the share of the words it adds; a sentence adding nothing is checked in full.
5. **The question's subject** (answer-level): when the question names someone or something (capitalised names as
   in 3; acronyms left out, since sources often spell them out, and so is a nationality word qualifying a noun,
   "Which Japanese dish"), at least one of those names must occur in the
   sources the answer cites (text, title or section path). An answer whose sources never mention what was asked
   about is a fact about something else ("AD 79" for "When did Mount Fuji last erupt?", from a passage on
   Vesuvius), so the whole answer is ``unsupported`` (``verify_question_subject``).
6. **Decisions**: a sentence opening with "yes", "no" or "maybe" makes a decision that checks 2-4 cannot see (its
   other words are the question's, found in any source that asks the question: "We investigated whether X
   improves Y"). It passes only if one of its quotes states that decision: a finding (not a question, an aim, a
   method or "is unknown"), whose polarity (a hedge: maybe; a negation: no; else yes) is the decision's, and which
   holds ``decision_min_overlap`` (default: all) of the sentence's content words by itself; that sentence becomes
   the citation's quote (``verify_decisions``; ``rag.answering.decisions``).
7. **Evidence relevance** (answer-level): the cross-encoder logit of (question, the best quote of the answer's
   claims) must reach ``min_quote_relevance`` (``verify_min_quote_relevance``), else the whole answer is
   ``unsupported``. A bare "1971 [1]" for "When did the Privy Council rule on the collision?" passes checks 1-5
   when its quote is "... a Christmas tree to Boston every year since 1971": every word is there, but the quote
   does not answer the question (``irrelevant_evidence`` in the report).
8. Features only (the calibration model weighs them): the cross-encoder logit of (answer sentence, its supporting
   quote), the mean/min token log-probability of the sentence's span, and, per answer, the cross-encoder logit of
   (question, the answer's claims) (``ce_question``: a supported copy of a passage that does not answer the
   question scores low).

A sentence is **supported** when 1-4 and 6 pass (and, if ``verify_min_cross_encoder`` is set, its cross-encoder logit
reaches it). The **supporting quote** of each citation is the exact span of the chunk text as stored (``start``,
``end``; ``text == chunk[start:end]``): the chunk sentence that shares the most content words, numbers and
entities with the answer sentence, extended to the sentence after or before it when that covers numbers or
entities the first one misses.

Policy (``unsupported_policy``): ``abstain`` makes the whole answer abstain when any sentence fails; ``cut``
keeps the supported sentences (and abstains when none is left). The verdict says which happened.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

from rag.answering.decisions import Decision, is_finding, opening_decision, stated_decision, without_decision
from rag.answering.generation.answerer import GeneratedAnswer
from rag.answering.generation.citations import parse_citations
from rag.answering.generation.sentences import terms
from rag.answering.units import asked_dimensions, dimension_after
from rag.settings import Settings

Verdict = Literal["supported", "cut", "uncited", "unsupported", "empty"]
Policy = Literal["abstain", "cut"]

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_CITATION_MARK = re.compile(
    r"\[\s*(?:(?:sources?|context|doc(?:ument)?s?|ref)\s*#?\s*)?\d{1,4}(?:\s*(?:[-–]|,|;|and)\s*\d{1,4})*\s*\]",
    re.IGNORECASE,
)
_ONLY_CITATIONS = re.compile(rf"^(?:\s*{_CITATION_MARK.pattern}\s*)+[.!?]?\s*$", re.IGNORECASE)
_GAP = re.compile(r"\s*…\s*")  # prompt.GAP, the marker between non-adjacent sentences of one source
_LEADING_CITATIONS = re.compile(rf"(?:{_CITATION_MARK.pattern}\s*)+", re.IGNORECASE)
_DIGITS = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)(?:st|nd|rd|th|s)?(?![\w])")
_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
_UNITS += "seventeen eighteen nineteen"
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety"
WORD_VALUES = {w: i for i, w in enumerate(_UNITS.split())} | {w: 20 + 10 * i for i, w in enumerate(_TENS.split())}
SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_WORD_NUMBER = re.compile(
    rf"\b(?:({'|'.join(_TENS.split())})(?:[-\s]({'|'.join(_UNITS.split()[1:10])}))?|({'|'.join(_UNITS.split())}))\b",
    re.IGNORECASE,
)
_SCALE_AFTER = re.compile(r"^\s*(hundred|thousand|million|billion)\b", re.IGNORECASE)
_CAPITALISED = re.compile(r"\b(?:[A-Z][a-z]+(?:['’]s)?|[A-Z]{2,}[a-z]?s?|[A-Z]\.)(?=\W|$)")
_WORD = re.compile(r"[A-Za-z0-9]+")
SOFT_WRAP_MIN_CHARS = 50  # a shorter line without end punctuation is a heading or a list item, not wrapped prose
_BLOCK_STARTS = ("#", "-", "*", "•", "|", ">")
_PRONOUN = re.compile(r"\b(?:it|its|he|him|his|she|her|they|them|their|this|these|those)\b", re.IGNORECASE)
ENTITY_STOPWORDS = frozenset(
    {"I", "A", "An", "The", "This", "That", "These", "Those", "It", "Its", "In", "On", "At", "Of", "For", "And"}
    | {"But", "Or", "If", "When", "Yes", "No"}
)


class Quote(BaseModel):
    """The exact span of the chunk text (as stored) that supports a cited sentence: ``chunk[start:end] == text``."""

    text: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class PairScorer(Protocol):
    """What the verifier needs from ``rag.answering.rerank.CrossEncoder``: raw logits for text pairs."""

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray: ...


# ------------------------------------------------------------------------------------------ text features


def _soft_break(previous: str, following: str) -> bool:
    """A line break inside a sentence (text wrapped by a PDF or a hard-wrapping editor), not a block boundary."""
    previous, following = previous.strip(), following.strip()
    return (
        len(previous) >= SOFT_WRAP_MIN_CHARS
        and previous[-1] not in ".!?:;"
        and not previous.startswith(("#", "|"))
        and bool(following)
        and not following.startswith(_BLOCK_STARTS)
    )


def blocks(text: str) -> list[tuple[int, int]]:
    """(start, end) of the text's blocks: lines, with soft-wrapped lines joined to the line before them."""
    found: list[tuple[int, int]] = []
    offset = 0
    for line in text.splitlines(keepends=True):
        if found and _soft_break(text[found[-1][0] : found[-1][1]].splitlines()[-1], line):
            found[-1] = (found[-1][0], offset + len(line))
        else:
            found.append((offset, offset + len(line)))
        offset += len(line)
    return found


def spans(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end) of ``text``: blocks (lines, soft wraps joined), then sentence ends, like
    ``sentences.split_sentences``."""
    found: list[tuple[int, int]] = []
    for offset, stop in blocks(text):
        block = text[offset:stop]
        cursor = 0
        for match in [*_SENTENCE_END.finditer(block), None]:
            end = match.start() if match else len(block)
            piece = block[cursor:end]
            if piece.strip():
                lead = len(piece) - len(piece.lstrip())
                found.append((offset + cursor + lead, offset + cursor + len(piece.rstrip())))
            cursor = match.end() if match else cursor
    return found


def _gap_pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """A span cut at the prompt's gap marker ("…" between non-adjacent source sentences): a model that copies
    that marker glues pieces of different passages into one "sentence", and each piece is a claim of its own."""
    pieces: list[tuple[int, int]] = []
    cursor = start
    for match in [*_GAP.finditer(text, start, end), None]:
        stop = match.start() if match else end
        piece = text[cursor:stop]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            pieces.append((cursor + lead, cursor + len(piece.rstrip())))
        cursor = match.end() if match else cursor
    return pieces


def answer_spans(text: str) -> list[tuple[int, int]]:
    """Answer sentences. Citations that open a piece after a sentence end ("Mainz. [1] He died...") belong to the
    sentence before them, and a piece that is only citations is joined to it. A sentence is also cut at the
    context's gap marker (``_gap_pieces``)."""
    merged: list[tuple[int, int]] = []
    for start, end in (piece for span in spans(text) for piece in _gap_pieces(text, *span)):
        if merged and _ONLY_CITATIONS.match(text[start:end]):
            merged[-1] = (merged[-1][0], end)
            continue
        lead = _LEADING_CITATIONS.match(text, start, end)
        if merged and lead and lead.end() > start:
            merged[-1] = (merged[-1][0], start + len(text[start : lead.end()].rstrip()))
            start = lead.end()
        merged.append((start, end))
    return merged


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _number_matches(text: str) -> list[tuple[set[str], int]]:
    """Each number in ``text`` (citation marks already blanked), as the set of its accepted normalised values
    ("1.2 million" -> {1.2, 1200000}), with the offset where the number (before any scale word) ends."""
    found: list[tuple[set[str], int]] = []
    for match in _DIGITS.finditer(text):
        value = float(match.group(1).replace(",", ""))
        forms = {_fmt(value)}
        scale = _SCALE_AFTER.match(text[match.end() :])
        if scale:
            forms.add(_fmt(value * SCALES[scale.group(1).lower()]))
        found.append((forms, match.end()))
    for match in _WORD_NUMBER.finditer(text):
        words = [w.lower() for w in match.groups() if w]
        if words == ["one"] or words == ["zero"]:
            continue  # "one of the ..." is a pronoun far more often than a count
        value = float(sum(WORD_VALUES[w] for w in words))
        scale = _SCALE_AFTER.match(text[match.end() :])
        found.append(({_fmt(value * SCALES[scale.group(1).lower()])} if scale else {_fmt(value)}, match.end()))
    return found


def numbers(text: str) -> list[set[str]]:
    """Each number mentioned, as the set of its accepted normalised values ("1.2 million" -> {1.2, 1200000})."""
    return [forms for forms, _ in _number_matches(_CITATION_MARK.sub(" ", text))]


def measures(text: str) -> list[tuple[set[str], str | None]]:
    """Each number with the dimension of the unit after it ("45 years old": time), None when it has no known unit."""
    clean = _CITATION_MARK.sub(" ", text)
    return [(forms, dimension_after(clean[end:])) for forms, end in _number_matches(clean)]


def number_values(text: str) -> set[str]:
    """Every normalised value a text mentions, for membership tests."""
    return {form for forms in numbers(text) for form in forms}


def entities(sentence: str) -> list[str]:
    """Capitalised names (runs of capitalised words) and acronyms, not counting the sentence's first word."""
    clean = _CITATION_MARK.sub(" ", sentence)
    first = _WORD.search(clean)
    skip = first.start() if first else -1
    runs: list[list[str]] = []
    last_end = -2
    for match in _CAPITALISED.finditer(clean):
        word = re.sub(r"['’]s$", "", match.group(0)).rstrip(".")
        if match.start() == skip or word in ENTITY_STOPWORDS or not word:
            continue
        if runs and clean[last_end : match.start()].strip() == "":
            runs[-1].append(word)
        else:
            runs.append([word])
        last_end = match.end()
    return [" ".join(run) for run in runs]


_DEMONYM = re.compile(r"[A-Z][a-z]+(?:ese|ish|ian|an)")


def _qualifier(entity: str, question: str) -> bool:
    """A nationality word used as an adjective ("Which Japanese dish", "the English royal court") says what kind
    of thing is asked about, not whom: sources name the dish or the court, seldom the nation."""
    return bool(_DEMONYM.fullmatch(entity) and re.search(rf"\b{re.escape(entity)}\s+[a-z]", question))


def entity_found(entity: str, text_words: set[str]) -> bool:
    return all(word.lower() in text_words for word in _WORD.findall(entity))


def words_of(text: str) -> set[str]:
    """Lower-cased words, possessives dropped: the vocabulary entities are looked up in."""
    return {w.lower() for w in _WORD.findall(re.sub(r"['’]s\b", "", text))}


def content_terms(sentence: str) -> set[str]:
    return terms(_CITATION_MARK.sub(" ", sentence))


# Words of sentences that state nothing ("Sure!", "Here is the answer:", "According to the sources:")
FILLER_TERMS = frozenset(
    terms("sure certainly okay ok here answer according based following provided given source document context")
)


def is_claim(sentence: str) -> bool:
    """A sentence with numbers or content words beyond filler states something and needs a citation."""
    return bool(content_terms(sentence) - FILLER_TERMS or numbers(sentence))


# ------------------------------------------------------------------------------------------ records


@dataclass
class SentenceCheck:
    """One answer sentence: where it is in the answer, what it cites, and each check's outcome."""

    text: str
    start: int
    end: int
    cited: list[int]
    invalid: list[int]
    repaired: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    needs_citation: bool = True
    numbers_missing: list[str] = field(default_factory=list)
    units_missing: list[str] = field(default_factory=list)
    n_numbers: int = 0
    entities_missing: list[str] = field(default_factory=list)
    n_entities: int = 0
    overlap: float = 0.0
    cross_encoder: float | None = None
    logprob_mean: float | None = None
    logprob_min: float | None = None
    quotes: dict[int, Quote] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def citations(self) -> list[int]:
        return [*self.cited, *self.repaired]

    @property
    def supported(self) -> bool:
        return not self.failures

    @property
    def citation_failure(self) -> bool:
        return any(f in ("no_citation", "invalid_citation") for f in self.failures)

    def final_text(self) -> str:
        """The sentence as returned: a repaired citation is written into it, before the closing punctuation."""
        if not self.repaired:
            return self.text
        marks = "".join(f"[{n}]" for n in self.repaired)
        body = self.text.rstrip()
        if self.dropped:  # a misattributed citation: its [n] is replaced, never left beside the right one
            body = re.sub(r"\s+([.!?])", r"\1", _CITATION_MARK.sub("", body)).rstrip()
        if body and body[-1] in ".!?":
            return f"{body[:-1].rstrip()} {marks}{body[-1]}"
        return f"{body} {marks}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["quotes"] = {str(k): q.model_dump() for k, q in self.quotes.items()}
        data["supported"] = self.supported
        return data


@dataclass
class VerificationReport:
    """Per-sentence checks, answer-level features (floats, for the calibration model) and the verdict.

    ``final_text`` is the answer to return (the supported sentences under ``cut``, repaired citations written in);
    ``None`` when the answer must abstain. ``citations`` are the source numbers ``final_text`` cites, with the
    quote of the first sentence citing each.
    """

    sentences: list[SentenceCheck]
    features: dict[str, float]
    verdict: Verdict
    policy: Policy
    final_text: str | None
    quotes: dict[int, Quote]
    seconds: float
    subject_missing: list[str] = field(default_factory=list)  # the question's names no cited source mentions
    irrelevant_evidence: bool = False  # the best quote's relevance to the question is under min_quote_relevance
    units_not_asked: list[str] = field(default_factory=list)  # the answer's units, when the question asks another

    @property
    def abstain_reason(self) -> Literal["uncited", "unsupported"] | None:
        if self.final_text is not None:
            return None
        return "unsupported" if self.verdict == "unsupported" else "uncited"

    @property
    def citations(self) -> list[int]:
        return sorted(self.quotes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "policy": self.policy,
            "final_text": self.final_text,
            "features": dict(self.features),
            "sentences": [s.to_dict() for s in self.sentences],
            "quotes": {str(k): q.model_dump() for k, q in self.quotes.items()},
            "subject_missing": list(self.subject_missing),
            "irrelevant_evidence": self.irrelevant_evidence,
            "units_not_asked": list(self.units_not_asked),
            "seconds": self.seconds,
        }


# ------------------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class _Source:
    """A cited chunk's full text and the features of each of its sentences, computed once per answer."""

    index: int
    text: str
    words: set[str]
    terms: set[str]
    numbers: set[str]
    measures: list[tuple[set[str], str | None]]
    spans: list[tuple[int, int]]
    span_terms: list[set[str]]
    span_numbers: list[set[str]]
    span_words: list[set[str]]

    @classmethod
    def of(cls, index: int, text: str, title: str = "") -> _Source:
        """``title``: shown to the model above the source, so its words count as the source's (never quoted)."""
        found = spans(text) or [(0, len(text))]
        pieces = [text[a:b] for a, b in found]
        return cls(
            index=index,
            text=text,
            words=words_of(f"{title}\n{text}"),
            terms=terms(f"{title}\n{text}"),
            numbers=number_values(text),
            measures=measures(text),
            spans=found,
            span_terms=[terms(p) for p in pieces],
            span_numbers=[number_values(p) for p in pieces],
            span_words=[words_of(p) for p in pieces],
        )

    def covers(self, wanted: _Wanted, min_overlap: float) -> bool:
        """All numbers and entities here, and at least ``min_overlap`` of the content words (repair rule)."""
        return (
            all(forms & self.numbers for forms in wanted.numbers)
            and all(entity_found(e, self.words) for e in wanted.entities)
            and share(wanted.terms, self.terms) >= min_overlap
        )

    def with_antecedent(self, quote: Quote, limit: int = 3) -> str:
        """The quote read from the sentence that names what it is about: while the first sentence of the text has a
        pronoun ("It was probably 100 metres tall", "In 1822 he presented a lens"), the source sentence before it
        is prepended (at most ``limit``)."""
        start = quote.start
        for _ in range(limit):
            first = next((self.text[a:b] for a, b in self.spans if a <= start < b), self.text[start : quote.end])
            if not _PRONOUN.search(first):
                break
            before = [a for a, b in self.spans if b <= start]
            if not before:
                break
            start = max(before)
        return self.text[start : quote.end]

    def quote(self, wanted: _Wanted) -> Quote:
        """The best-supporting sentence, extended by a neighbour that holds numbers or entities it lacks."""

        def gain(k: int) -> float:
            hits_terms = len(wanted.terms & self.span_terms[k]) / max(len(wanted.terms), 1)
            hits_numbers = sum(bool(forms & self.span_numbers[k]) for forms in wanted.numbers)
            hits_entities = sum(entity_found(e, self.span_words[k]) for e in wanted.entities)
            return hits_terms + hits_numbers + hits_entities

        if not self.spans:  # a source with no sentence at all: the whole (empty or blank) text
            return Quote(text=self.text, start=0, end=len(self.text))
        best = max(range(len(self.spans)), key=lambda k: (gain(k), -k))
        start, end = self.spans[best]
        missing = _Wanted(
            terms=set(),
            numbers=[f for f in wanted.numbers if not f & self.span_numbers[best]],
            entities=[e for e in wanted.entities if not entity_found(e, self.span_words[best])],
        )
        if missing.numbers or missing.entities:
            for k in (best + 1, best - 1):
                if 0 <= k < len(self.spans) and gain_of(missing, self, k) > 0:
                    start, end = min(start, self.spans[k][0]), max(end, self.spans[k][1])
                    break
        return Quote(text=self.text[start:end], start=start, end=end)


@dataclass(frozen=True)
class _Wanted:
    """What an answer sentence claims: content words, numbers (each a set of accepted forms), entities."""

    terms: set[str]
    numbers: list[set[str]]
    entities: list[str]
    units: list[tuple[set[str], str]] = field(default_factory=list)

    @classmethod
    def of(cls, sentence: str) -> _Wanted:
        units = [(forms, unit) for forms, unit in measures(sentence) if unit is not None]
        return cls(terms=content_terms(sentence), numbers=numbers(sentence), entities=entities(sentence), units=units)

    def beyond(self, given: _Given | None) -> _Wanted:
        """What the sentence claims that the question does not already state: restating the question ("Coleman
        was a dispatcher in Halifax in 1917" for "What was Coleman's job in Halifax in 1917?") is not a claim the
        sources must hold. A sentence that says nothing new keeps all its words, so it is still checked."""
        if given is None:
            return self
        return _Wanted(
            terms=(self.terms - given.terms) or self.terms,
            numbers=[forms for forms in self.numbers if not forms & given.numbers],
            entities=[e for e in self.entities if not entity_found(e, given.words)],
            units=[(forms, unit) for forms, unit in self.units if not forms & given.numbers],
        )


@dataclass(frozen=True)
class _Given:
    """What a question states (numbers, words, content words): an answer repeating it claims nothing new."""

    numbers: set[str]
    words: set[str]
    terms: set[str]

    @classmethod
    def of(cls, question: str) -> _Given:
        return cls(numbers=number_values(question), words=words_of(question), terms=content_terms(question))


def _units_missing(claim: _Wanted, cited: Sequence[_Source]) -> list[str]:
    """Numbers the sentence gives with a unit ("45 years") that the cited sources give only with units of other
    dimensions ("45 pounds"); a source mentioning the number bare, or with an unknown word, gets the benefit of the
    doubt."""
    missing = []
    for forms, unit in claim.units:
        seen = {dimension for source in cited for known, dimension in source.measures if known & forms}
        if seen and None not in seen and unit not in seen:
            missing.append(f"{sorted(forms)[0]} ({unit})")
    return missing


def share(wanted: set[str], known: set[str]) -> float:
    return len(wanted & known) / len(wanted) if wanted else 1.0


def gain_of(missing: _Wanted, source: _Source, k: int) -> int:
    return sum(bool(f & source.span_numbers[k]) for f in missing.numbers) + sum(
        entity_found(e, source.span_words[k]) for e in missing.entities
    )


def token_spans(generated: GeneratedAnswer) -> list[tuple[int, int, float]] | None:
    """(start, end, logprob) of each generated token in ``generated.text``; None when they do not line up."""
    if not generated.logprobs:
        return None
    raw = "".join(token for token, _ in generated.logprobs)
    if raw.strip() != generated.text:
        return None
    position = -(len(raw) - len(raw.lstrip()))
    located = []
    for token, logprob in generated.logprobs:
        located.append((position, position + len(token), logprob))
        position += len(token)
    return located


# ------------------------------------------------------------------------------------------ the step


class AnswerVerifier:
    """Checks a ``GeneratedAnswer`` against the full texts of the chunks it was shown (see the module docstring)."""

    def __init__(
        self,
        *,
        policy: Policy = "abstain",
        min_overlap: float = 0.65,
        repair: bool = True,
        repair_min_overlap: float = 0.65,
        min_cross_encoder: float | None = None,
        min_quote_relevance: float | None = None,
        question_subject: bool = True,
        decisions: bool = True,
        decision_min_overlap: float = 1.0,
        question_given: bool = True,
        units: bool = True,
        encoder: PairScorer | None = None,
    ) -> None:
        if policy not in ("abstain", "cut"):
            raise ValueError(f"unsupported_policy must be 'abstain' or 'cut', not {policy!r}")
        self.policy: Policy = policy
        self.min_overlap = min_overlap
        self.repair = repair
        self.repair_min_overlap = repair_min_overlap
        self.min_cross_encoder = min_cross_encoder
        self.min_quote_relevance = min_quote_relevance
        self.question_subject = question_subject
        self.decisions = decisions
        self.decision_min_overlap = decision_min_overlap
        self.question_given = question_given
        self.units = units
        self.encoder = encoder

    @classmethod
    def from_settings(cls, settings: Settings, encoder: PairScorer | None = None) -> AnswerVerifier:
        """``encoder``: the retriever's cross-encoder, shared (ignored when ``verify_cross_encoder`` is off)."""
        return cls(
            policy=settings.unsupported_policy,
            min_overlap=settings.verify_min_overlap,
            repair=settings.verify_repair,
            repair_min_overlap=settings.verify_repair_min_overlap,
            min_cross_encoder=settings.verify_min_cross_encoder,
            min_quote_relevance=settings.verify_min_quote_relevance,
            question_subject=settings.verify_question_subject,
            decisions=settings.verify_decisions,
            decision_min_overlap=settings.verify_decision_min_overlap,
            question_given=settings.verify_question_given,
            units=settings.verify_units,
            encoder=encoder if settings.verify_cross_encoder else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "min_overlap": self.min_overlap,
            "repair": self.repair,
            "repair_min_overlap": self.repair_min_overlap,
            "min_cross_encoder": self.min_cross_encoder,
            "min_quote_relevance": self.min_quote_relevance,
            "question_subject": self.question_subject,
            "decisions": self.decisions,
            "decision_min_overlap": self.decision_min_overlap,
            "question_given": self.question_given,
            "units": self.units,
            "cross_encoder": getattr(self.encoder, "to_dict", lambda: None)(),
        }

    def check_retrieved(self, generated: GeneratedAnswer, chunks: Sequence[Any], question: str) -> VerificationReport:
        """``run`` on retrieved chunks (``RetrievedChunk``: text as stored, section path in ``metadata``)."""
        texts = {c.chunk_id: c.text for c in chunks}
        return self.run(generated, texts, question, {c.chunk_id: str(c.metadata.get("section") or "") for c in chunks})

    def run(
        self,
        generated: GeneratedAnswer,
        chunk_texts: Mapping[str, str],
        question: str | None = None,
        sections: Mapping[str, str] | None = None,
    ) -> VerificationReport:
        """``question``, when given, is scored against the answer (``ce_question``: does it answer THIS question,
        or is it a supported copy of some other passage?) and its subject looked up in the cited sources, with
        ``sections`` (chunk id -> section path) counting as where a chunk sits."""
        started = time.perf_counter()
        text = generated.text
        sources = {
            c.index: _Source.of(c.index, chunk_texts.get(c.chunk_id, c.text), c.title) for c in generated.contexts
        }
        checks = [self._check(text[a:b], a, b, sources) for a, b in answer_spans(text)]
        cited_elsewhere = {n for c in checks for n in c.cited}
        given = _Given.of(question) if self.question_given and question else None
        for check in checks:
            if self.repair and check.needs_citation and not check.cited and not check.invalid:
                check.repaired = self._repair(check, sources, cited_elsewhere, exclude=set(), given=given)
            self._support(check, sources, given)
            if self.repair and check.failures and check.cited and not check.citation_failure:
                moved = self._repair(check, sources, cited_elsewhere, exclude=set(check.cited), given=given)
                if moved:  # the claim is in exactly one other shown source: cite that one instead
                    check.dropped, check.cited, check.repaired = check.cited, [], moved
                    self._support(check, sources, given)
        relevance, quote_relevance = self._score_pairs(checks, question, sources)
        self._logprobs(checks, generated)
        for check in checks:
            threshold = self.min_cross_encoder
            if threshold is not None and check.cross_encoder is not None and check.cross_encoder < threshold:
                check.failures.append("low_cross_encoder")
        verdict, final = self._decide(text, checks)
        subject, missing = self._subject(question, checks, generated, sections or {}, sources)
        off_subject = bool(subject) and len(missing) == len(subject)
        if final is not None and off_subject:
            verdict, final = "unsupported", None
        not_asked = self._units_not_asked(question, checks) if final is not None else []
        if not_asked:
            verdict, final = "unsupported", None
        floor = self.min_quote_relevance
        irrelevant = final is not None and floor is not None and quote_relevance is not None and quote_relevance < floor
        if irrelevant:
            verdict, final = "unsupported", None
        quotes: dict[int, Quote] = {}
        kept = [c for c in checks if c.supported] if final is not None else []
        for check in kept:
            for n in check.citations:
                quotes.setdefault(n, check.quotes[n])
        features = answer_features(checks, generated, self.encoder is not None)
        if relevance is not None:
            features["ce_question"] = relevance
        if quote_relevance is not None:
            features["ce_quote_question"] = quote_relevance
        if subject:
            features["subject_found"] = round(1.0 - len(missing) / len(subject), 6)
        return VerificationReport(
            sentences=checks,
            features=features,
            verdict=verdict,
            policy=self.policy,
            final_text=final,
            quotes=quotes,
            seconds=time.perf_counter() - started,
            subject_missing=missing if off_subject else [],
            irrelevant_evidence=irrelevant,
            units_not_asked=not_asked,
        )

    def _subject(
        self,
        question: str | None,
        checks: Sequence[SentenceCheck],
        generated: GeneratedAnswer,
        sections: Mapping[str, str],
        sources: Mapping[int, _Source],
    ) -> tuple[list[str], list[str]]:
        """The question's names (acronyms left out) and those that none of the supported sentences' sources
        mentions in its text, title or section path; both empty when the check is off or nothing is cited."""
        if not self.question_subject or not question:
            return [], []
        subject = [e for e in entities(question) if not e.isupper() and not _qualifier(e, question)]
        cited = {n for c in checks if c.supported for n in c.citations}
        if not subject or not cited:
            return [], []
        chunk_of = {c.index: c.chunk_id for c in generated.contexts}
        known = set().union(*(sources[n].words | words_of(sections.get(chunk_of[n], "")) for n in cited))
        return subject, [e for e in subject if not entity_found(e, known)]

    def _units_not_asked(self, question: str | None, checks: Sequence[SentenceCheck]) -> list[str]:
        """Check 2's answer-level half: the units of the answer's numbers when every number it gives has a known
        unit and none is of the dimension the question asks for ("about 10 percent [1]" for "Roughly how many
        glaciers are there?"); empty otherwise, or when the question's wording does not say."""
        asked = asked_dimensions(question) if self.units and question else None
        if asked is None:
            return []
        found = [unit for check in checks if check.supported for _, unit in measures(check.text)]
        if not found or None in found or asked & set(found):
            return []
        return sorted({unit for unit in found if unit is not None})

    @staticmethod
    def _check(sentence: str, start: int, end: int, sources: Mapping[int, _Source]) -> SentenceCheck:
        numbers_cited = parse_citations(sentence)
        wanted = _Wanted.of(sentence)
        return SentenceCheck(
            text=sentence,
            start=start,
            end=end,
            cited=[n for n in numbers_cited if n in sources],
            invalid=[n for n in numbers_cited if n not in sources],
            needs_citation=is_claim(sentence),
            n_numbers=len(wanted.numbers),
            n_entities=len(wanted.entities),
        )

    def _repair(
        self,
        check: SentenceCheck,
        sources: Mapping[int, _Source],
        cited_elsewhere: set[int],
        exclude: set[int],
        given: _Given | None = None,
    ) -> list[int]:
        """The documented repair rule: a shown source (outside ``exclude``) that holds all the sentence's numbers
        and names and ``repair_min_overlap`` of its words. Several: the one the answer cites elsewhere if exactly
        one is, else the one holding most of its words (ties: the higher-ranked). Empty when none does.
        ``given``: what the question states, which the source need not hold (``_Wanted.beyond``)."""
        wanted = _Wanted.of(check.text)
        claim = wanted.beyond(given)
        covering = [
            n
            for n, source in sources.items()
            if n not in exclude
            and (source.covers(wanted, self.repair_min_overlap) or source.covers(claim, self.repair_min_overlap))
        ]
        if len(covering) > 1:
            elsewhere = [n for n in covering if n in cited_elsewhere]
            if len(elsewhere) == 1:
                return elsewhere
            return [max(covering, key=lambda n: (len(wanted.terms & sources[n].terms), -n))]
        return covering

    def _support(self, check: SentenceCheck, sources: Mapping[int, _Source], given: _Given | None = None) -> None:
        """Checks 2-4 and 6 on one sentence; ``given``: what the question states, which the cited sources need not
        hold (``_Wanted.beyond``)."""
        check.failures, check.numbers_missing, check.entities_missing, check.quotes = [], [], [], {}
        check.units_missing = []
        check.overlap = 0.0
        if check.invalid:
            check.failures.append("invalid_citation")
        wanted = _Wanted.of(check.text)
        cited = [sources[n] for n in check.citations]
        # every citation carries its quote, also on a sentence that makes no claim (e.g. "See [2].")
        check.quotes = {s.index: s.quote(wanted) for s in cited}
        if not check.needs_citation:
            return
        if not check.citations:
            check.failures.append("no_citation")
            return
        known_numbers = set().union(*(s.numbers for s in cited))
        known_words = set().union(*(s.words for s in cited))
        known_terms = set().union(*(s.terms for s in cited))
        claim = wanted.beyond(given)
        check.numbers_missing = [sorted(forms)[0] for forms in claim.numbers if not forms & known_numbers]
        check.entities_missing = [e for e in claim.entities if not entity_found(e, known_words)]
        if self.units:
            check.units_missing = _units_missing(claim, cited)
        # the old share, or the share of what the sentence adds: restated question words neither help nor hurt
        check.overlap = max(share(wanted.terms, known_terms), share(claim.terms, known_terms))
        if check.numbers_missing:
            check.failures.append("number_not_in_source")
        if check.units_missing:
            check.failures.append("unit_not_in_source")
        if check.entities_missing:
            check.failures.append("entity_not_in_source")
        if check.overlap < self.min_overlap:
            check.failures.append("low_overlap")
        decision = opening_decision(check.text) if self.decisions else None
        if decision is not None and not self._states(decision, check, cited):
            check.failures.append("decision_not_in_source")

    def _states(self, decision: Decision, check: SentenceCheck, cited: Sequence[_Source]) -> bool:
        """Check 6: whether a sentence of a cited source states the decision (a finding with its polarity that
        holds ``decision_min_overlap`` of the claim's content words by itself); that sentence becomes the quote."""
        claim = content_terms(without_decision(check.text))
        if not claim:
            return False
        for source in cited:
            for (start, end), span_terms in zip(source.spans, source.span_terms, strict=True):
                piece = source.text[start:end]
                if (
                    len(claim & span_terms) / len(claim) >= self.decision_min_overlap
                    and is_finding(piece)
                    and stated_decision(piece) == decision
                ):
                    check.quotes[source.index] = Quote(text=piece, start=start, end=end)
                    return True
        return False

    def _score_pairs(
        self, checks: Sequence[SentenceCheck], question: str | None, sources: Mapping[int, _Source]
    ) -> tuple[float | None, float | None]:
        """One batched cross-encoder call: (answer sentence, quote) for every citation, a sentence keeping its best,
        plus (question, the answer's claims without citation marks) and (question, each quote of a claim, also
        read from the sentence that names what its pronouns refer to), whose logits are returned
        (``ce_question``, and ``ce_quote_question``: the best evidence's)."""
        if self.encoder is None:
            return None, None
        pairs = [
            (k, _CITATION_MARK.sub("", c.text).strip(), q.text) for k, c in enumerate(checks) for q in c.quotes.values()
        ]
        claims = " ".join(_CITATION_MARK.sub("", c.text).strip() for c in checks if c.needs_citation)
        asked = [(question, claims)] if question and claims else []
        evidence = sorted({
            (question, text)
            for c in checks
            if c.needs_citation
            for n, q in c.quotes.items()
            for text in (q.text, sources[n].with_antecedent(q))
        }) if question and claims else []
        if not pairs and not asked:
            return None, None
        logits = self.encoder.score([(a, b) for _, a, b in pairs] + evidence + asked)
        for (k, _, _), logit in zip(pairs, logits, strict=False):
            current = checks[k].cross_encoder
            checks[k].cross_encoder = float(logit) if current is None else max(current, float(logit))
        if not asked:
            return None, None
        best_quote = max(logits[len(pairs) : len(pairs) + len(evidence)], default=None)
        return round(float(logits[-1]), 6), (None if best_quote is None else round(float(best_quote), 6))

    @staticmethod
    def _logprobs(checks: Sequence[SentenceCheck], generated: GeneratedAnswer) -> None:
        located = token_spans(generated)
        if located is None:
            return
        for check in checks:
            values = [lp for a, b, lp in located if a < check.end and b > check.start and b > a]
            if values:
                check.logprob_mean = round(statistics.fmean(values), 6)
                check.logprob_min = round(min(values), 6)

    def _decide(self, text: str, checks: Sequence[SentenceCheck]) -> tuple[Verdict, str | None]:
        """The verdict and the text to return (None: abstain) under the policy."""
        claims = [c for c in checks if c.needs_citation]
        failing = [c for c in checks if not c.supported]
        if not claims:
            return "empty", None
        if not failing:
            repaired = any(c.repaired for c in checks)
            return "supported", (_join(text, checks) if repaired else text)
        reason: Verdict = "uncited" if any(c.citation_failure for c in failing) else "unsupported"
        if self.policy == "cut" and any(c.supported for c in claims):
            return "cut", _join(text, [c for c in checks if c.supported])
        return reason, None


def _join(text: str, kept: Sequence[SentenceCheck]) -> str:
    """Kept sentences in order, separated by a newline where the original had one between them, else a space."""
    out = ""
    previous_end: int | None = None
    for check in kept:
        if previous_end is not None:
            out += "\n" if "\n" in text[previous_end : check.start] else " "
        out += check.final_text()
        previous_end = check.end
    return out


def answer_features(checks: Sequence[SentenceCheck], generated: GeneratedAnswer, scored: bool) -> dict[str, float]:
    """Answer-level floats for the calibration model; a feature that could not be measured is left out."""
    claims = [c for c in checks if c.needs_citation]
    n = len(claims)
    features: dict[str, float] = {
        "n_sentences": float(n),
        "n_supported": float(sum(c.supported for c in claims)),
        "frac_supported": sum(c.supported for c in claims) / n if n else 0.0,
        "n_uncited": float(sum(not c.cited and not c.dropped for c in claims)),
        "n_invalid_citations": float(sum(len(c.invalid) for c in checks)),
        "n_repaired": float(sum(bool(c.repaired) for c in checks)),
        "n_cited_sources": float(len({k for c in checks for k in c.citations})),
        "min_overlap": min((c.overlap for c in claims), default=0.0),
        "mean_overlap": statistics.fmean(c.overlap for c in claims) if claims else 0.0,
        "numbers_ok": float(all(not c.numbers_missing for c in claims)),
        "n_numbers": float(sum(c.n_numbers for c in claims)),
        "entities_ok": float(all(not c.entities_missing for c in claims)),
        "n_entities": float(sum(c.n_entities for c in claims)),
        "answer_chars": float(len(generated.text)),
    }
    scores = [c.cross_encoder for c in claims if c.cross_encoder is not None]
    if scored and scores:
        features["ce_min"] = min(scores)
        features["ce_mean"] = statistics.fmean(scores)
    if generated.logprobs:
        values = [lp for _, lp in generated.logprobs]
        features["lp_mean"] = statistics.fmean(values)
        features["lp_min"] = min(values)
        sentence_means = [c.logprob_mean for c in claims if c.logprob_mean is not None]
        if sentence_means:
            features["lp_sentence_min_mean"] = min(sentence_means)
    return {k: round(float(v), 6) for k, v in features.items()}
