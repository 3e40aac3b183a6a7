"""Yes / no / maybe decisions: which one an answer opens with, and which one a source sentence states.

A decision is the one part of an answer that the word checks of the verifier cannot see. "Yes, X improves Y [1]"
restates the question with "yes" in front, and the words "X improves Y" are in any source that asks the question
("We investigated whether X improves Y"). So the verifier needs to know the decision an answer makes and the
decision a source sentence makes, and whether that sentence states a finding at all (docs/EVALUATION.md, "Decisions").
The same rules read the decision of a PubMedQA answer in the evaluation (``eval.metrics.extract_decision``).
"""

from __future__ import annotations

import re
from typing import Literal

Decision = Literal["yes", "no", "maybe"]

# "Yes, ..." / "No." / "Maybe:" / a bare "Yes": the word must end its clause, so "No significant difference was
# found" (a determiner) is a statement, not a decision.
_OPENING = re.compile(r"^\W*(yes|no|maybe)\b(?=\s*(?:[,.;:!—–-]|\[\d|$))", re.IGNORECASE)

HEDGES = re.compile(
    r"\b(maybe|possibly|perhaps|unclear|uncertain|inconclusive|not clear|may or may not|insufficient|"
    r"not enough (evidence|data|information)|mixed|it depends|cannot be determined|not (yet )?(be )?established|"
    r"remains? to be|controversial|not conclusive)\b",
    re.IGNORECASE,
)
NEGATIONS = re.compile(
    r"\b(no|not|never|neither|nor|none|without|cannot|fails?|failed|lack|lacks|lacking|unrelated|"
    r"does ?n[o']t|did ?n[o']t|is ?n[o']t|are ?n[o']t|was ?n[o']t|were ?n[o']t)\b|n't\b",
    re.IGNORECASE,
)
# A sentence that asks, states an aim or a method, or says the answer is unknown: it names the topic of a
# decision without making it ("The aim was to determine whether X improves Y").
_NOT_A_FINDING = re.compile(
    r"\?|\b(whether|aims?|aimed|objectives?|purpose|hypothes[ie][sz]e?d?|little is known|"
    r"to (determine|investigate|assess|evaluate|examine|compare|test|explore|identify|describe|clarify|analy[sz]e|"
    r"study|establish|define)|we (sought|asked|studied|examined|investigated|evaluated|assessed|compared|analy[sz]ed|"
    r"reviewed|measured|hypothesi[sz]ed)|(is|are|was|were|remains?) (unknown|unclear|not known|poorly understood|"
    r"controversial|debated))\b",
    re.IGNORECASE,
)


def opening_decision(text: str) -> Decision | None:
    """The decision a sentence or answer opens with ("Yes, ..."), or None."""
    found = _OPENING.match(text)
    return found.group(1).lower() if found else None  # type: ignore[return-value]


def without_decision(sentence: str) -> str:
    """The sentence with its opening decision word removed: the claim the decision is about."""
    found = _OPENING.match(sentence)
    return sentence[found.end() :] if found else sentence


def stated_decision(sentence: str) -> Decision:
    """The decision a statement makes: a hedge → maybe, else a negation → no, else yes."""
    if HEDGES.search(sentence):
        return "maybe"
    if NEGATIONS.search(sentence):
        return "no"
    return "yes"


def is_finding(sentence: str) -> bool:
    """False for a question, an aim, a method or an admission that the answer is unknown."""
    return not _NOT_A_FINDING.search(sentence)
