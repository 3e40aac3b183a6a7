"""What "correct" means per dataset, and the replay of verification over cached generations.

Correct (an answer that the pipeline returned, i.e. did not abstain):
- our JSONL set, answerable question: it cites a reference document (a valid ``[n]`` into a shown chunk of one)
  and its new key facts match the reference's. Key facts are numbers (normalised: "forty-nine" = "49") and content
  words (stemmed, stopwords removed), as the verifier extracts them; "new" means not already in the question. The
  answer must state at least one new fact, and either hold at least half of the reference's new facts, or state
  only facts of the reference (a terse right answer: "15 July 1799" for "On 15 July 1799, by French soldiers...");
  an answer naming only an option the question offers ("Animal" for "plant, rock or animal?") counts when all its
  facts are in the reference; so does a right answer in other words: every number it states is the reference's,
  and either the question asks for a number or date and the answer states all the reference's new numbers
  with at most one word the reference lacks ("2,000 eggs in a single day"), or at least half of its content
  words, and two or more, are the reference's;
- PubMedQA, answerable: it cites the gold abstract and the yes/no/maybe decision ``eval.metrics.extract_decision``
  reads from it equals the gold decision;
- SciFact (BEIR), answerable: it cites a gold document;
- any answer to an unanswerable question (off-topic, near-miss, or made unanswerable by removing its gold
  documents) is wrong.
An abstention is never "correct" or "wrong" for the confidence model: it only fits answers. The evaluation counts
abstentions on answerable questions against coverage and on unanswerable questions as the right outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eval.calibration_data import CalibrationQuestion, restore_generated, restore_retrieval
from eval.metrics import extract_decision
from rag.answering.calibration import signal_features
from rag.answering.pipeline import QueryPipeline, honest_answer
from rag.answering.verify import AnswerVerifier, content_terms, number_values

PRE_VERIFICATION_REASONS = {"no_context", "weak_retrieval", "model_unknown"}
ASKS_FOR_NUMBER = re.compile(
    r"\b(how (many|much|long|old|far|tall|high|big|deep|often|fast)|when|(what|which) (year|date|day|month|"
    r"century|percentage|number|age))\b",
    re.IGNORECASE,
)


def key_facts(text: str) -> set[str]:
    """Numbers (normalised) and content words that are not number words."""
    return {t for t in content_terms(text) if not number_values(t)} | number_values(text)


def facts_match(answer: str, reference: str, question: str) -> bool:
    """The JSONL rule: the answer's new facts cover half the reference's, or are all in it, or (a right answer in
    other words) its numbers are the reference's and most of what else it says is in the reference."""
    asked = key_facts(question)
    wanted = key_facts(reference) - asked
    stated = key_facts(answer) - asked
    if not stated:  # picks one of the options the question offers ("Animal" for "plant, rock or animal?")
        chosen = key_facts(answer)
        return bool(chosen) and chosen <= key_facts(reference)
    if not wanted:
        return False
    if len(stated & wanted) / len(wanted) >= 0.5 or stated <= wanted:
        return True
    numbers_wanted = number_values(reference) - number_values(question)
    numbers_stated = number_values(answer) - number_values(question)
    if not numbers_stated <= number_values(reference):  # a number the reference does not have: wrong
        return False
    words_stated = stated - numbers_stated
    words_extra = words_stated - wanted
    if ASKS_FOR_NUMBER.search(question) and numbers_wanted and numbers_wanted <= numbers_stated and len(
        words_extra
    ) <= 1:
        return True  # "2,000 eggs in a single day" for "up to about 2,000 eggs a day at the peak of the season"
    # "received the Nobel Prize in Physics in 1912 for his work on the sun valve": at least half of its words,
    # and two or more, are the reference's
    shared_words = words_stated & wanted
    return len(shared_words) >= 2 and len(shared_words) >= 0.5 * len(words_stated)


def is_correct(question: CalibrationQuestion, answer: str, cited_doc_ids: set[str]) -> bool:
    """The per-dataset rule for an answer that was returned (see the module docstring)."""
    sample = question.sample
    if not question.answerable:
        return False
    if not cited_doc_ids & sample.relevant_doc_ids:
        return False
    if sample.decision:  # PubMedQA
        return extract_decision(answer) == sample.decision
    if sample.reference:  # our JSONL
        return facts_match(answer, sample.reference, sample.question)
    return True  # BEIR: citing a gold document is the answer


@dataclass(frozen=True)
class Outcome:
    """One question under one verification policy: what the pipeline would return before the confidence step."""

    uid: str
    answered: bool
    reason: str | None
    answer: str
    cited_doc_ids: list[str]
    correct: bool
    features: dict[str, float]
    # the model's own text, before any check, would be right if every source it was shown counted as cited: no
    # verifier can pass more right answers than this (the ceiling of coverage at zero error)
    raw_correct: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid, "answered": self.answered, "reason": self.reason, "answer": self.answer,
            "cited_doc_ids": self.cited_doc_ids, "correct": self.correct, "raw_correct": self.raw_correct,
        }


def raw_correct(question: CalibrationQuestion, generated: Any) -> bool:
    """The unchecked generation judged by ``is_correct``, credited with every source shown to the model."""
    if generated is None or generated.model_said_unknown or not generated.text.strip():
        return False
    return is_correct(question, generated.text, {c.doc_id for c in generated.contexts})


def replay(question: CalibrationQuestion, record: dict[str, Any], verifier: AnswerVerifier) -> Outcome:
    """Re-run verification on the cached generation exactly as ``QueryPipeline`` does (same features, same
    verdict), so a verifier change or another policy costs no regeneration."""
    retrieval = restore_retrieval(record)
    generated = restore_generated(record)
    reason = record["response"].get("abstain_reason")
    features = signal_features(record["question"], retrieval, generated)
    ceiling = raw_correct(question, generated)
    if generated is None or reason in PRE_VERIFICATION_REASONS or generated.model_said_unknown:
        return Outcome(question.uid, False, reason or "model_unknown", "", [], False, features, ceiling)
    report = verifier.check_retrieved(generated, retrieval.chunks, record["question"])
    features.update({f"verify.{k}": float(v) for k, v in report.features.items()})
    if report.final_text is None:
        return Outcome(question.uid, False, report.abstain_reason, "", [], False, features, ceiling)
    # the serving invariant (every claim cites a returned source whose quote is an exact span), as the pipeline
    # checks it; ``_citations`` reads nothing from the instance
    citations = QueryPipeline._citations(None, retrieval, generated, report, [])  # type: ignore[arg-type]
    if not honest_answer(report.final_text, citations):
        return Outcome(question.uid, False, "uncited", "", [], False, features, ceiling)
    by_index = {c.index: c.doc_id for c in generated.contexts}
    cited = sorted({by_index[n] for n in report.citations if n in by_index})
    correct = is_correct(question, report.final_text, set(cited))
    return Outcome(question.uid, True, None, report.final_text, cited, correct, features, ceiling)
