"""The extractive generator: cited sentences from the sources, or the fixed abstention."""

from __future__ import annotations

from typing import Any

from rag.answering.generation.answerer import Answerer
from rag.answering.generation.citations import check_citations, is_unknown_answer
from rag.answering.generation.extractive import ExtractiveGenerator
from rag.answering.generation.prompt import UNKNOWN_ANSWER
from rag.answering.generation.sentences import terms


def test_answers_with_the_supporting_sentence_and_its_citation(contexts_for: Any) -> None:
    contexts = contexts_for("c-backup", "c-config", "c-history")
    text = ExtractiveGenerator().answer("What port does Quillstream listen on by default?", contexts)
    assert "defaults to 7420 [2]." in text
    assert check_citations(text, len(contexts)).cited[0] == 2
    assert not is_unknown_answer(text)


def test_is_deterministic_and_keeps_source_order(contexts_for: Any) -> None:
    contexts = contexts_for("c-history", "c-backup")
    generator = ExtractiveGenerator(max_sentences=2)
    question = "Who started Quillstream and under which license did it become open source?"
    first = generator.answer(question, contexts)
    assert first == generator.answer(question, contexts)
    assert first.index("Mara Ivanova") < first.index("Apache 2.0")
    assert first.count("[1]") == 2


def test_abstains_off_topic(contexts_for: Any) -> None:
    contexts = contexts_for("c-config", "c-backup", "c-history")
    generator = ExtractiveGenerator()
    assert generator.answer("How do I bake sourdough bread at home?", contexts) == UNKNOWN_ANSWER
    assert generator.answer("What is the capital of Mars?", contexts) == UNKNOWN_ANSWER
    assert generator.answer("Anything?", []) == UNKNOWN_ANSWER


def test_extractive_answerer_reports_citations_and_abstention(contexts_for: Any) -> None:
    answerer = Answerer(ExtractiveGenerator(), context_chars=2000)
    question = "How many days are snapshots kept before they are deleted?"
    result = answerer.answer(question, contexts_for("c-config", "c-backup"))
    assert result.cited == [2] and result.cited_chunk_ids == ["c-backup"]
    assert not result.model_said_unknown and result.generator == "extractive"
    off = answerer.answer("Who won the 1998 football world cup?", contexts_for("c-config", "c-backup"))
    assert off.text == UNKNOWN_ANSWER and off.model_said_unknown and off.cited == []
    assert answerer.to_dict()["backend"] == "extractive"


def test_heading_underlines_never_reach_an_answer() -> None:
    """The issue's example: an answer that copied a section heading's underline along with the sentence."""
    from rag.answering.generation.sentences import split_sentences

    text = "Ancient lighthouses\n-------------------\n\nThe Pharos of Alexandria stood in Egypt.\n=====\n"
    assert split_sentences(text) == ["Ancient lighthouses", "The Pharos of Alexandria stood in Egypt."]


def test_british_and_american_spellings_are_one_term() -> None:
    """A model answering "330 meters" about a source that says "330 metres" makes the same claim."""
    assert terms("330 meters, the colour of the harbour centre") == terms("330 metres, the color of the harbor center")
    assert terms("fibres") == terms("fiber") and "hour" in terms("an hour")
