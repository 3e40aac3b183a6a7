"""Citation parsing and mapping, and detection of answers that say the sources do not answer."""

from __future__ import annotations

import pytest

from rag.answering.generation.citations import (
    check_citations,
    cited_contexts,
    infer_citations,
    is_unknown_answer,
    parse_citations,
)
from rag.answering.generation.prompt import UNKNOWN_ANSWER, Context


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The port is 8080 [1].", [1]),
        ("A [2] and B [1] and again A [2].", [2, 1]),
        ("Both say so [1, 3].", [1, 3]),
        ("Both say so [1,3] [ 4 ].", [1, 3, 4]),
        ("Covered by [2-4].", [2, 3, 4]),
        ("Covered by [2–3] (en dash).", [2, 3]),
        ("Mixed [1, 3-4; 6].", [1, 3, 4, 6]),
        ("Adjacent [1][2].", [1, 2]),
        ("Prefixed [Source 2] and [source 3] and [Doc 1].", [2, 3, 1]),
        ("Reversed range [4-2] keeps both ends.", [4, 2]),
        ("Absurd range [1-9999] keeps both ends.", [1, 9999]),
        ("No citations here, (1) and 1] are not ones.", []),
        ("Placeholders [n] and [a] and [] are ignored.", []),
        ("A list index like items[0] still reads as a citation.", [0]),
    ],
)
def test_parse_citations(text: str, expected: list[int]) -> None:
    assert parse_citations(text) == expected


def test_out_of_range_numbers_are_reported_not_mapped() -> None:
    contexts = [Context(i, f"chunk-{i}", "d", "t", "s", "text", 0.5) for i in (1, 2)]
    text = "Yes [2]. Also [5] and [0] and [1-3]."
    report = check_citations(text, len(contexts))
    assert report.cited == [2, 1]
    assert report.invalid == [5, 0, 3]
    assert [c.chunk_id for c in cited_contexts(text, contexts)] == ["chunk-2", "chunk-1"]


@pytest.mark.parametrize(
    "text",
    [
        UNKNOWN_ANSWER,
        UNKNOWN_ANSWER.upper(),
        f"Sorry. {UNKNOWN_ANSWER}",
        "I don't know.",
        "I don’t know based on these sources.",  # curly apostrophe
        "I do not know the answer to that.",
        "The context does not mention the maximum upload size.",
        "The provided documents do not contain this information.",
        "The sources don't specify which cloud providers are supported.",
        "Sorry, but the answer is not mentioned in the provided context.",
        "Unfortunately, that is not stated in the documents.",
        "There is no information about pricing in the provided sources.",
        "I cannot answer this from the given information.",
        "I'm unable to determine that from the context.",
        "Not enough information to say.",
        "This question cannot be answered from the documents.",
        "",
    ],
)
def test_unknown_answers_are_detected(text: str) -> None:
    assert is_unknown_answer(text)


@pytest.mark.parametrize(
    "text",
    [
        "The default port is 7420 [1].",
        "The service does not contain a cache; it relies on the OS page cache [2].",
        "Snapshots are kept for 14 days [1]. The documents do not mention compression levels.",
        "Windows is not supported; use WSL 2 instead [1].",
        "No, the API accepts requests only from localhost by default [3].",
        "You know the workers setting: it defaults to 3 [1].",
    ],
)
def test_real_answers_are_not_taken_for_unknown(text: str) -> None:
    assert not is_unknown_answer(text)


def test_uncited_answers_are_attributed_to_the_source_holding_their_words() -> None:
    contexts = [
        Context(1, "a", "d", "t", "s", "Snapshots older than 14 days are deleted automatically.", 0.9),
        Context(2, "b", "d", "t", "s", "Quillstream was started in 2019 by Mara Ivanova.", 0.8),
    ]
    assert infer_citations("Mara Ivanova started Quillstream.", contexts) == [2]
    assert infer_citations("Snapshots are deleted after 14 days.", contexts) == [1]
    assert infer_citations("3", contexts) == []  # too short to judge
    assert infer_citations("The heron mascot is named Quill.", contexts) == []
