"""Follow-up questions in a conversation: screen the history, decide whether the question stands alone, and if not
rewrite it into a standalone question before retrieval.

Retrieval sees one question at a time, so "and when did it close?" finds nothing unless "it" is resolved first.
A cheap check runs first (pronouns and demonstratives, elliptical openers such as "and when...", very short
questions whose words retrieve nothing well); only a question it flags, with a non-empty history, is rewritten.
The rewrite is made by the answerer's own LLM backend when it has one, else by a deterministic heuristic (the
follow-up plus the previous user question). A rewrite that is empty, over-long or looks like an injection falls
back to the raw question; the decision, the method, its time and any fallback are returned as ``Rewrite``.

Every history turn is normalised and its instruction-like sentences redacted (rag/answering/sanitize.py) before
any model sees it, and the standalone question is screened again by the pipeline: an injection hidden in an earlier
turn can neither reach the rewriter as an instruction nor reach the answerer at all.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from rag.answering.generation.backends import LLMBackend
from rag.answering.sanitize import find_injection, normalise, redact_injections, sanitize_question
from rag.errors import RagError
from rag.settings import Settings

log = logging.getLogger("rag.conversation")

Role = Literal["user", "assistant"]
RewriteMethod = Literal["none", "model", "concat"]
# top dense score of a question; a short question scoring below the threshold does not stand alone
Probe = Callable[[str], float | None]

_REFERRING_WORDS = (
    "it its it's itself they them their theirs themselves this that these those he him his she her hers "
    "there then former latter same such one ones"
)
REFERRING = frozenset(_REFERRING_WORDS.split())
_STOP_WORDS = (
    "a an the and or but of to in on at by for with from about as into over after before is are was were be been "
    "being do does did has have had what which who whom whose when where why how many much long old far can could "
    "would should will shall may might must also else more other so than too very just only again ever still "
    "i you we me my your our us any some all each anything something please tell explain describe say give "
    "happen happened happens get got make made not no yes"
)
STOPWORDS = frozenset(_STOP_WORDS.split()) | REFERRING
ELLIPTICAL = re.compile(
    r"^\s*(?:and|but|also|or|so|then|what about|how about|what else|same for|why not|why so|how so|really)\b",
    re.IGNORECASE,
)
WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+")
_TOPIC = re.compile(r"\b(?:[Tt]he\s+)?[A-Z][\w'-]*(?:\s+(?:of\s+|de\s+)?(?:[A-Z][\w'-]*|\d+))*")
_PRONOUN = re.compile(r"\b(?:it|its|they|them|their|he|him|his|she|her)\b", re.IGNORECASE)
_CITATION = re.compile(r"\s*\[\d+\]")
_PREFIX = re.compile(r"^(?:standalone(?:\s+question)?|rewritten(?:\s+question)?|question)\s*:\s*", re.IGNORECASE)

REWRITE_SYSTEM = (
    "You rewrite the last question of a conversation into one standalone question that can be understood "
    "without the conversation. Replace pronouns and vague references with the names they refer to. "
    "Keep the meaning and the question words; do not answer it. Output only the rewritten question."
)


@dataclass(frozen=True)
class ChatTurn:
    """One message of a conversation; ``content`` is plain text."""

    role: Role
    content: str


@dataclass(frozen=True)
class SelfContained:
    """The cheap check's verdict: ``reason`` is no_history, self_contained, reference, elliptical or short."""

    standalone: bool
    reason: str


@dataclass(frozen=True)
class Rewrite:
    """What happened to one follow-up before retrieval; returned to the client and logged."""

    question: str
    standalone_question: str
    rewritten: bool
    method: RewriteMethod
    reason: str
    seconds: float
    fallback: bool = False
    error: str | None = None
    history_turns: int = 0
    history_flagged: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def content_words(text: str) -> list[str]:
    return [w for w in (m.group(0).lower() for m in WORD.finditer(text)) if w not in STOPWORDS and len(w) > 1]


def screen_history(turns: Sequence[ChatTurn], max_chars: int) -> tuple[list[ChatTurn], int]:
    """Normalised turns with instruction-like sentences redacted and citation markers dropped, each cut to
    ``max_chars``; also how many turns were flagged. The history is data for the rewriter, never instructions."""
    screened: list[ChatTurn] = []
    flagged = 0
    for turn in turns:
        text = _CITATION.sub("", normalise(turn.content)).split(" References:")[0]
        if find_injection(text) is not None:
            flagged += 1
            text = redact_injections(text)
        if text:
            screened.append(ChatTurn(turn.role, text[:max_chars]))
    return screened, flagged


class SelfContainedCheck:
    """Cheap test of whether a question can be retrieved for without the conversation (no model call)."""

    def __init__(self, short_words: int = 3, min_probe_score: float = 0.3) -> None:
        self.short_words = short_words
        self.min_probe_score = min_probe_score

    def to_dict(self) -> dict[str, Any]:
        return {"short_words": self.short_words, "min_probe_score": self.min_probe_score}

    def check(self, question: str, history: Sequence[ChatTurn], probe: Probe | None = None) -> SelfContained:
        if not any(turn.role == "user" for turn in history):
            return SelfContained(True, "no_history")
        words = [m.group(0).lower() for m in WORD.finditer(question)]
        if any(w in REFERRING for w in words):
            return SelfContained(False, "reference")
        if ELLIPTICAL.search(question):
            return SelfContained(False, "elliptical")
        content = content_words(question)
        if len(content) <= self.short_words:
            score = probe(question) if (probe is not None and content) else None
            if score is None or score < self.min_probe_score:
                return SelfContained(False, "short")
        return SelfContained(True, "self_contained")


class ConversationRewriter:
    """Turns a follow-up into a standalone question: the cheap check, then the LLM (or the heuristic)."""

    def __init__(self, settings: Settings, generator: LLMBackend | None = None) -> None:
        self.settings = settings
        self.generator = generator
        self.check = SelfContainedCheck(settings.chat_short_question_words, settings.min_relevance)

    @property
    def method(self) -> RewriteMethod:
        if self.settings.chat_rewriter == "none":
            return "none"
        return "model" if self.settings.chat_rewriter == "model" and self.generator is not None else "concat"

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "model": getattr(self.generator, "model_id", None) if self.method == "model" else None,
            "history_turns": self.settings.chat_history_turns,
            "check": self.check.to_dict(),
        }

    def rewrite(self, question: str, history: Sequence[ChatTurn], probe: Probe | None = None) -> Rewrite:
        """The standalone form of ``question``; raises only for an invalid or unsafe ``question`` itself."""
        started = time.perf_counter()
        question = sanitize_question(question, self.settings.max_question_chars)
        recent = list(history)[-self.settings.chat_history_turns :]
        turns, flagged = screen_history(recent, self.settings.chat_turn_chars)
        verdict = self.check.check(question, turns, probe)
        base: dict[str, Any] = {"question": question, "history_turns": len(turns), "history_flagged": flagged}
        if verdict.standalone or self.method == "none":
            reason = verdict.reason if verdict.standalone else f"{verdict.reason}; rewriting disabled"
            return Rewrite(**base, standalone_question=question, rewritten=False, method="none", reason=reason,
                           seconds=_since(started))  # fmt: skip
        method = self.method
        try:
            candidate = self._model(question, turns) if method == "model" else self._concat(question, turns)
            standalone = self._validated(candidate, question)
        except RagError as exc:  # a failed or refused rewrite never fails the answer: ask the raw question
            log.warning("rewrite failed, using the raw question", extra={"error": str(exc), "method": method})
            return Rewrite(**base, standalone_question=question, rewritten=False, method=method,
                           reason=verdict.reason, seconds=_since(started), fallback=True, error=str(exc))  # fmt: skip
        result = Rewrite(**base, standalone_question=standalone, rewritten=standalone != question, method=method,
                         reason=verdict.reason, seconds=_since(started))  # fmt: skip
        log.info("follow-up rewritten", extra={"rewrite": result.to_dict()})
        return result

    def _model(self, question: str, turns: list[ChatTurn]) -> str:
        assert self.generator is not None
        transcript = "\n".join(f"{t.role.capitalize()}: {t.content}" for t in turns)
        messages = [
            {"role": "system", "content": REWRITE_SYSTEM},
            {
                "role": "user",
                "content": f"Conversation:\n{transcript}\n\nLast question: {question}\n\nStandalone question:",
            },
        ]
        completion = self.generator.chat(
            messages, max_tokens=self.settings.chat_rewrite_max_tokens, temperature=0.0,
            timeout_s=self.settings.request_timeout_s,
        )  # fmt: skip
        return completion.text

    @staticmethod
    def _concat(question: str, turns: list[ChatTurn]) -> str:
        """No LLM: put the previous user question's topic in place of the first pronoun (else append it)."""
        previous = next((t.content for t in reversed(turns) if t.role == "user"), "")
        return substitute_topic(question, previous)

    def _validated(self, candidate: str, question: str) -> str:
        """The first line of the model's output, cleaned; refused (InvalidInputError) when unusable."""
        line = next((ln.strip() for ln in candidate.strip().splitlines() if ln.strip()), "")
        line = _PREFIX.sub("", line).strip().strip("\"'`").strip()
        limit = min(self.settings.max_question_chars, max(300, 4 * len(question)))
        if not line:
            raise RewriteRefusedError("the rewriter returned nothing")
        if len(line) > limit:
            raise RewriteRefusedError(f"the rewrite is {len(line)} characters, over {limit}")
        if find_injection(line) is not None:
            raise RewriteRefusedError("the rewrite looks like an instruction, not a question")
        return sanitize_question(line, self.settings.max_question_chars)


def topic_of(text: str) -> str | None:
    """The longest capitalised phrase of ``text`` that is not a sentence-initial question word ("the Rosetta
    Stone", "Apollo 11", "Johannes Gutenberg"); None when it names nothing."""
    found = (re.sub(r"['’]s$", "", m.group(0)) for m in _TOPIC.finditer(text))
    phrases = [p for p in found if p.split()[-1].lower() not in STOPWORDS]
    phrases = [p for p in phrases if p.lower().removeprefix("the ").split()[0] not in STOPWORDS]
    return max(phrases, key=len) if phrases else None


def substitute_topic(question: str, previous: str) -> str:
    """``question`` with its first referring pronoun replaced by the topic of ``previous`` (possessives become
    "<topic>'s"); without a pronoun or a topic, the topic or the previous question's content words are appended."""
    topic = topic_of(previous)
    if topic is None:
        words = " ".join(dict.fromkeys(content_words(previous)))
        return f"{question} ({words})" if words else question
    match = _PRONOUN.search(question)
    if match is None:
        return f"{question} ({topic})"
    word = match.group(0).lower()
    replacement = f"{topic}'s" if word in {"its", "his", "their"} else topic
    return question[: match.start()] + replacement + question[match.end() :]


class RewriteRefusedError(RagError):
    """The rewriter's output was not a usable question (the raw question is used instead)."""

    code = "invalid_input"


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)
