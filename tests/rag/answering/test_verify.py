"""The answer verifier's checks: citations (missing, invalid, repaired), numbers, dates, names, quotes as exact
spans of the stored chunk text, the abstain/cut policies, and the log-probability and cross-encoder features."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rag.answering.generation.answerer import GeneratedAnswer
from rag.answering.generation.prompt import Context
from rag.answering.rerank import CrossEncoder
from rag.answering.verify import (
    AnswerVerifier,
    VerificationReport,
    answer_spans,
    entities,
    number_values,
    spans,
)
from rag.settings import Settings

CHUNKS = {
    "c-print": (
        "## Early life\nJohannes Gutenberg was born in the German city of Mainz around 1400. He trained as a "
        "goldsmith. Forty-nine copies of his Bible are known to survive, and the print run was about 180 copies.\n"
        "## Later years\nHe died in February 1468 and was buried in Mainz."
    ),
    "c-bees": (
        "A worker bee takes about 21 days to develop from egg to adult. Karl von Frisch decoded the waggle dance "
        "and in 1973 he shared the Nobel Prize. A strong colony holds 1,200,000 cells of comb, or 40% of its hive."
    ),
    "c-other": "Honey is stored in wax cells. Mainz lies on the Rhine. Gutenberg was born in Mainz.",
    "c-bell": "Alexander Graham Bell was born in 1847 in Edinburgh. The stone weighs 760 kilograms.",
    "c-study": (
        "The aim of this trial was to determine whether aspirin lowers the risk of stroke in older adults. "
        "Aspirin did not lower the risk of stroke in older adults. Aspirin lowered the risk of heart attack."
    ),
}


def generated(
    text: str,
    *chunk_ids: str,
    logprobs: list[tuple[str, float]] | None = None,
    chunks: dict[str, str] = CHUNKS,
) -> GeneratedAnswer:
    """An answer as the answerer returns it; the contexts are the chunks shown, numbered 1..n in this order."""
    contexts = [Context(i, cid, f"doc-{cid}", cid, f"{cid}.md", chunks[cid], 0.9) for i, cid in enumerate(chunk_ids, 1)]
    return GeneratedAnswer(
        text=text,
        contexts=contexts,
        cited=[],
        invalid_citations=[],
        model_said_unknown=False,
        prompt_tokens=None,
        completion_tokens=None,
        seconds=0.0,
        generator="test",
        prompt_version="test",
        logprobs=logprobs,
    )


def verify(text: str, *chunk_ids: str, **options: Any) -> VerificationReport:
    return AnswerVerifier(**options).run(generated(text, *chunk_ids), dict(CHUNKS))


def test_numbers_are_normalised_across_separators_words_scales_and_percentages() -> None:
    assert {"1200"} <= number_values("about 1,200 people")
    assert "49" in number_values("Forty-nine copies")
    assert "1.2e+06" in number_values("1.2 million cells") and "1.2e+06" in number_values("1,200,000 cells")
    assert "40" in number_values("40% of it") and "40" in number_values("40 percent")
    assert "19" in number_values("the 19th century") and "1969" in number_values("in the 1969 landing")
    assert number_values("one of the oldest towers") == set()  # "one" is a pronoun far too often
    assert number_values("cited [3] here") == set()  # citation markers are not numbers


def test_entities_skip_the_opening_word_and_keep_runs_and_acronyms() -> None:
    assert entities("Gutenberg was born in Mainz near the Rhine River [1].") == ["Mainz", "Rhine River"]
    assert entities("It was built by NASA and Karl von Frisch's team.") == ["NASA", "Karl", "Frisch"]


def test_wrapped_source_lines_stay_one_sentence_but_headings_and_items_do_not() -> None:
    text = (
        "## Polio\nThe polio vaccine developed by Jonas Salk was of this kind, and on 12 April\n1955 it was safe.\n- a"
    )
    assert [text[a:b] for a, b in spans(text)] == [
        "## Polio",
        "The polio vaccine developed by Jonas Salk was of this kind, and on 12 April\n1955 it was safe.",
        "- a",
    ]


def test_answer_sentences_keep_a_trailing_bare_citation_and_spans_are_offsets() -> None:
    text = "He was born in Mainz. [1] He died in 1468 [1]."
    parts = [text[a:b] for a, b in answer_spans(text)]
    assert parts == ["He was born in Mainz. [1]", "He died in 1468 [1]."]
    chunk = CHUNKS["c-print"]
    assert all(chunk[a:b].strip() == chunk[a:b] and chunk[a:b] for a, b in spans(chunk))


def test_a_supported_answer_gets_exact_quotes_of_the_stored_chunk() -> None:
    report = verify("Gutenberg was born in Mainz around 1400 [1]. Forty-nine copies survive [1].", "c-print")
    assert report.verdict == "supported" and report.final_text is not None
    quote = report.quotes[1]
    assert CHUNKS["c-print"][quote.start : quote.end] == quote.text
    assert quote.text == "Johannes Gutenberg was born in the German city of Mainz around 1400."
    second = report.sentences[1].quotes[1]
    assert "Forty-nine copies" in second.text and CHUNKS["c-print"][second.start : second.end] == second.text
    assert report.features["frac_supported"] == 1.0 and report.features["numbers_ok"] == 1.0


@pytest.mark.parametrize(
    ("text", "failure"),
    [
        ("Gutenberg was born in Mainz around 1450 [1].", "number_not_in_source"),  # wrong year
        ("Fifty copies of his Bible survive [1].", "number_not_in_source"),  # wrong number word
        ("He died in March 1468 [1].", "entity_not_in_source"),  # wrong month of a date
        ("Gutenberg was born in Strasbourg [1].", "entity_not_in_source"),  # wrong place
        ("Gutenberg invented the steam locomotive and electric lighting [1].", "low_overlap"),
    ],
)
def test_claims_the_cited_source_does_not_hold_are_unsupported(text: str, failure: str) -> None:
    report = verify(text, "c-print")
    assert report.verdict == "unsupported" and report.final_text is None
    assert report.abstain_reason == "unsupported"
    assert failure in report.sentences[0].failures


def test_an_invalid_citation_fails_the_sentence_and_is_counted_never_dropped() -> None:
    report = verify("Gutenberg was born in Mainz [2].", "c-print")
    assert report.sentences[0].invalid == [2] and "invalid_citation" in report.sentences[0].failures
    assert report.verdict == "uncited" and report.abstain_reason == "uncited"
    assert report.features["n_invalid_citations"] == 1.0
    # a valid citation next to an invalid one does not rescue the sentence
    assert verify("Gutenberg was born in Mainz [1][4].", "c-print").final_text is None


def test_an_uncited_claim_is_repaired_only_when_a_source_holds_all_of_it() -> None:
    report = verify("A worker bee takes about 21 days to become an adult.", "c-print", "c-bees")
    assert report.verdict == "supported" and report.sentences[0].repaired == [2]
    assert report.final_text == "A worker bee takes about 21 days to become an adult [2]."
    assert report.features["n_repaired"] == 1.0 and report.features["n_uncited"] == 1.0
    # both sources hold all of it: the higher-ranked one (shown first) gets the citation
    both = verify("Gutenberg was born in Mainz.", "c-other", "c-print")
    assert both.sentences[0].repaired == [1] and both.verdict == "supported"
    # only the second source holds the name "German": it gets the citation whatever the order
    assert verify("Gutenberg was born in the German city of Mainz.", "c-other", "c-print").sentences[0].repaired == [2]
    assert verify("Mainz lies on the Rhine.", "c-print", "c-other").sentences[0].repaired == [2]
    # no source holds the name "Strasbourg": no repair, no answer
    unheld = verify("Gutenberg was born in Mainz and later worked in Strasbourg.", "c-print", "c-other")
    assert unheld.sentences[0].repaired == [] and unheld.abstain_reason == "uncited"
    # repair off: an uncited claim is never returned
    assert verify("A worker bee takes about 21 days.", "c-bees", repair=False).abstain_reason == "uncited"


def test_a_misattributed_citation_moves_to_the_one_source_that_holds_the_claim() -> None:
    report = verify("A worker bee takes about 21 days [1].", "c-print", "c-bees")
    check = report.sentences[0]
    assert check.dropped == [1] and check.repaired == [2] and report.verdict == "supported"
    assert report.final_text == "A worker bee takes about 21 days [2]."
    assert set(report.quotes) == {2}


def test_cut_keeps_only_supported_sentences_and_abstain_drops_the_answer() -> None:
    text = "Gutenberg was born in Mainz [1]. Honeybees communicate with honeydew [1]."
    cut = verify(text, "c-print", policy="cut")
    assert cut.verdict == "cut" and cut.final_text == "Gutenberg was born in Mainz [1]."
    assert cut.features["frac_supported"] == 0.5
    abstain = verify(text, "c-print", policy="abstain")
    assert abstain.final_text is None and abstain.abstain_reason == "unsupported"
    assert verify("Honeybees communicate with honeydew [1].", "c-print", policy="cut").final_text is None


def test_filler_sentences_need_no_citation_but_an_answer_needs_a_claim() -> None:
    assert verify("Sure! Gutenberg was born in Mainz [1].", "c-print").verdict == "supported"
    assert verify("Sure!", "c-print").verdict == "empty"


def test_numbers_dates_and_names_match_across_formats() -> None:
    report = verify("Von Frisch shared the Nobel Prize in 1973; the colony holds 1.2 million cells [1].", "c-bees")
    assert report.verdict == "supported", report.sentences[0].failures
    assert verify("The colony holds 1,200,000 cells, 40 percent of the hive [1].", "c-bees").verdict == "supported"


def test_token_logprobs_are_attributed_to_their_sentences() -> None:
    tokens = [(" Born", -0.1), (" in Mainz", -0.3), (" [1].", -0.2), (" Died 1468", -2.0), (" [1].", -1.0)]
    answer = generated("Born in Mainz [1]. Died 1468 [1].", "c-print", logprobs=tokens)
    report = AnswerVerifier().run(answer, {"c-print": CHUNKS["c-print"]})
    first, second = report.sentences
    assert first.logprob_mean == pytest.approx(-0.2) and first.logprob_min == pytest.approx(-0.3)
    assert second.logprob_min == pytest.approx(-2.0)
    assert report.features["lp_min"] == pytest.approx(-2.0)
    assert "lp_mean" not in verify("Born in Mainz [1].", "c-print").features  # no logprobs: feature left out


def test_cross_encoder_scores_support_higher_than_an_unrelated_quote(make_settings: Callable[..., Settings]) -> None:
    verifier = AnswerVerifier(encoder=CrossEncoder(make_settings()))
    good = verifier.run(generated("Gutenberg was born in Mainz around 1400 [1].", "c-print"), {})
    bad = verifier.run(generated("The waggle dance shows bees where flowers are [1].", "c-print"), {})
    assert good.features["ce_min"] > bad.features["ce_min"] + 1.0
    assert "ce_min" not in verify("Gutenberg was born in Mainz [1].", "c-print").features


def test_the_cross_encoder_scores_whether_the_answer_answers_the_question(
    make_settings: Callable[..., Settings],
) -> None:
    """A supported copy of the wrong passage (the calibration set's "first person Jenner vaccinated" answered with
    the mRNA sentence) scores low against the question; the feature is left out without a question."""
    verifier = AnswerVerifier(encoder=CrossEncoder(make_settings()))
    answer = generated("Gutenberg was born in Mainz around 1400 [1].", "c-print")
    right = verifier.run(answer, {}, "Where was Johannes Gutenberg born?")
    wrong = verifier.run(answer, {}, "Who decoded the waggle dance of honeybees?")
    assert right.features["ce_question"] > wrong.features["ce_question"] + 3.0
    assert "ce_question" not in verifier.run(answer, {}).features
    # a bare fact ("1847") says nothing about relevance; the quote it stands on does
    year = generated("1847 [1].", "c-bell")
    asked = verifier.run(year, dict(CHUNKS), "When was Alexander Graham Bell born?")
    other = verifier.run(year, dict(CHUNKS), "When did the waggle dance get decoded?")
    assert asked.features["ce_quote_question"] > other.features["ce_quote_question"] + 3.0
    assert "ce_quote_question" not in verifier.run(year, dict(CHUNKS)).features
    # with a floor on that relevance the fact about something else abstains; the answer to the question stands
    floored = AnswerVerifier(encoder=CrossEncoder(make_settings()), min_quote_relevance=1.0)
    off = floored.run(year, dict(CHUNKS), "When did the waggle dance get decoded?")
    assert off.final_text is None and off.abstain_reason == "unsupported" and off.irrelevant_evidence
    kept = floored.run(year, dict(CHUNKS), "When was Alexander Graham Bell born?")
    assert kept.final_text == "1847 [1]." and not kept.irrelevant_evidence


def test_a_copied_gap_marker_splits_the_sentence_into_claims_that_each_need_support() -> None:
    text = "Gutenberg trained as a goldsmith … Karl von Frisch decoded the waggle dance [1]."
    assert [text[a:b] for a, b in answer_spans(text)] == [
        "Gutenberg trained as a goldsmith", "Karl von Frisch decoded the waggle dance [1]."
    ]
    report = verify(text, "c-bees", "c-print", repair=False)
    assert report.final_text is None and report.abstain_reason == "uncited"
    glued = verify("He trained as a goldsmith … and he died in February 1468 [2].", "c-bees", "c-print")
    assert glued.final_text is not None  # each piece is in the cited source: supported, nothing lost


def test_the_verifier_reads_its_settings(make_settings: Callable[..., Settings]) -> None:
    verifier = AnswerVerifier.from_settings(make_settings(unsupported_policy="cut", verify_min_overlap=0.7))
    assert verifier.policy == "cut" and verifier.min_overlap == 0.7 and verifier.encoder is None
    assert verifier.to_dict()["policy"] == "cut"
    with pytest.raises(ValueError, match="unsupported_policy"):
        AnswerVerifier(policy="maybe")  # type: ignore[arg-type]


def test_a_cited_sentence_that_makes_no_claim_still_gets_its_quote() -> None:
    """Regression: a filler sentence with a citation ("According to the source [1].") crashed with KeyError when
    the quotes were collected, because only claims got quotes."""
    report = verify("According to the source [1]. Johannes Gutenberg was born in Mainz [1].", "c-print")
    assert report.final_text is not None
    assert set(report.quotes) == {1}
    quote = report.quotes[1]
    assert CHUNKS["c-print"][quote.start : quote.end] == quote.text


def test_an_answer_whose_sources_never_name_what_the_question_asks_about_abstains() -> None:
    """The near-miss failure: asked about Watson, the model copies Bell's birth year from the only passage shown.
    Every word of the answer is in its source; the question's subject is not."""
    answer = generated("1847 [1].", "c-bell")
    report = AnswerVerifier().run(answer, dict(CHUNKS), "In what year was Thomas Watson born?")
    assert report.final_text is None and report.abstain_reason == "unsupported"
    assert report.subject_missing == ["Thomas Watson"] and report.features["subject_found"] == 0.0
    assert AnswerVerifier(question_subject=False).run(answer, dict(CHUNKS), "In what year was Thomas Watson born?"
                                                      ).final_text == "1847 [1]."
    right = AnswerVerifier().run(answer, dict(CHUNKS), "In what year was Alexander Graham Bell born?")
    assert right.final_text == "1847 [1]." and right.features["subject_found"] == 1.0
    # where the chunk sits counts: its section path names the subject the text only calls "the stone"
    weight = generated("760 kilograms [1].", "c-bell")
    asked = "How much does the Rosetta Stone weigh?"
    assert AnswerVerifier().run(weight, dict(CHUNKS), asked).final_text is None
    placed = AnswerVerifier().run(weight, dict(CHUNKS), asked, {"c-bell": "British Museum › Rosetta Stone"})
    assert placed.final_text == "760 kilograms [1]." and placed.subject_missing == []
    # acronyms are left out (sources spell them out), and a question naming nothing is not checked
    assert AnswerVerifier().run(weight, dict(CHUNKS), "How heavy is the stone in the UK?").final_text is not None
    assert "subject_found" not in AnswerVerifier().run(weight, dict(CHUNKS), "How heavy is the stone?").features
    # so is a nationality word qualifying a noun: it says what kind of stone, the source need not name the nation
    assert AnswerVerifier().run(weight, dict(CHUNKS), "How heavy is the Egyptian stone?").final_text is not None
    assert AnswerVerifier().run(weight, dict(CHUNKS), "How heavy is the stone from Egypt?").final_text is None


def test_a_decision_stands_only_where_a_cited_sentence_states_it() -> None:
    """The PubMedQA failure: "Yes, X lowers Y" restates the question, and the trial's aim ("to determine whether
    aspirin lowers ...") holds every word of it, so checks 2-4 pass; the decision itself was never checked."""
    wrong = verify("Yes, aspirin lowers the risk of stroke in older adults [1].", "c-study")
    assert wrong.final_text is None and wrong.abstain_reason == "unsupported"
    assert wrong.sentences[0].failures == ["decision_not_in_source"]
    assert verify("Yes, aspirin lowers the risk of stroke in older adults [1].", "c-study", decisions=False).final_text
    # the right decision stands, quoting the sentence that states it rather than the aim, which shares more words
    right = verify("No, aspirin does not lower the risk of stroke in older adults [1].", "c-study")
    assert right.final_text is not None and right.verdict == "supported"
    assert right.quotes[1].text == "Aspirin did not lower the risk of stroke in older adults."
    assert verify("Yes, aspirin lowers the risk of heart attack [1].", "c-study").final_text is not None
    # a hedge is a third answer: neither the finding nor its opposite supports "maybe"
    assert verify("Maybe, aspirin lowers the risk of stroke [1].", "c-study").final_text is None
    # "No" as a determiner opens a statement, not a decision; a bare decision has no claim to check
    assert verify("No aspirin trial lowered the risk of stroke in older adults [1].", "c-study").final_text
    assert verify("Yes [1].", "c-study").final_text is None
    # under the cut policy the undecided sentence goes and the supported one stays
    cut = verify(
        "Yes, aspirin lowers the risk of stroke in older adults [1]. Aspirin lowered the risk of heart attack [1].",
        "c-study",
        policy="cut",
    )
    assert cut.verdict == "cut" and cut.final_text == "Aspirin lowered the risk of heart attack [1]."


def test_what_an_answer_repeats_from_the_question_is_given_and_only_what_it_adds_is_checked() -> None:
    """A verbose answer restates the question ("... in Halifax in 1917"): the year and the place are the question's,
    not claims the source must hold; what the sentence adds still must be there."""
    chunks = {"c-yard": "Vince Coleman was a train dispatcher at the Richmond railway yards."}
    asked = "What was Vince Coleman's job in Halifax in 1917?"

    def run(text: str, **options: Any) -> VerificationReport:
        return AnswerVerifier(**options).run(generated(text, *chunks, chunks=chunks), chunks, asked)

    restated = "Vince Coleman was a train dispatcher at the Richmond railway yards in Halifax in 1917 [1]."
    assert run(restated).final_text == restated
    # without the rule the question's year and place count as claims the source lacks
    strict = run(restated, question_given=False)
    assert strict.final_text is None
    assert {"number_not_in_source", "entity_not_in_source"} <= set(strict.sentences[0].failures)
    # an added number or name is checked as before
    added = run("Vince Coleman was a train dispatcher in Halifax in 1917 until 1920 [1].")
    assert added.final_text is None and added.sentences[0].numbers_missing == ["1920"]
    # invented words are not hidden by the question's: low overlap of what the sentence adds
    invented = run("In Halifax in 1917 Vince Coleman worked as a harbour pilot on tugboats and ferries [1].")
    assert invented.final_text is None and "low_overlap" in invented.sentences[0].failures
    # an uncited restatement is repaired as well: the one source holding what it adds gets the citation
    repaired = run("Vince Coleman was a train dispatcher at the Richmond railway yards in Halifax in 1917.")
    assert repaired.sentences[0].repaired == [1] and repaired.final_text is not None


def test_a_number_given_with_a_unit_of_another_dimension_than_the_sources_is_unsupported() -> None:
    """The near-miss failure: asked how old a patient was, the model wrote "45 years old" from "weighing only 45
    pounds". The number is in the source; what it measures is not."""
    chunks = {"c-patient": "She began treatment in August 1922 weighing only 45 pounds (20 kg); she was 14 years old."}

    def run(text: str, question: str = "How old was she?", **options: Any) -> VerificationReport:
        return AnswerVerifier(**options).run(generated(text, *chunks, chunks=chunks), chunks, question)

    wrong = run("She was 45 years old [1].")
    assert wrong.final_text is None and wrong.sentences[0].failures == ["unit_not_in_source"]
    assert wrong.sentences[0].units_missing == ["45 (time)"]
    assert run("She was 45 years old [1].", units=False).final_text is not None
    # the same dimension in other words or spellings passes, and so does a number the source gives bare
    weight = "What did she weigh when treatment began?"
    assert run("She weighed 45 lb [1].", weight).final_text is not None
    assert run("She weighed 20 kilograms [1].", weight).final_text is not None
    assert run("She was 14 years old [1].").final_text is not None
    assert run("She began treatment in 1922 [1].").final_text is not None


def test_an_answer_whose_numbers_measure_something_else_than_the_question_asks_abstains() -> None:
    """A near-miss: asked how many glaciers there are, the model answered with the share of land they cover. Every
    word is in the source; a percent is not a count."""
    chunks = {"c-ice": "Glaciers cover about 10 percent of Earth's land area; the largest is 400 km long."}

    def run(text: str, question: str, **options: Any) -> VerificationReport:
        return AnswerVerifier(**options).run(generated(text, *chunks, chunks=chunks), chunks, question)

    share = "Glaciers cover about 10 percent of Earth's land area [1]."
    wrong = run(share, "Roughly how many glaciers are there in the world?")
    assert wrong.final_text is None and wrong.abstain_reason == "unsupported"
    assert wrong.units_not_asked == ["percent"] and wrong.to_dict()["units_not_asked"] == ["percent"]
    assert run(share, "Roughly how many glaciers are there in the world?", units=False).final_text == share
    # the dimension asked for, or a question whose wording does not say, lets it stand
    assert run(share, "What share of Earth's land do glaciers cover?").final_text == share
    assert run(share, "How much of Earth's land area is covered by glaciers?").final_text == share
    assert run("The largest is 400 km long [1].", "How long is the largest glacier?").final_text is not None
    assert run("The largest is 400 km long [1].", "How old is the largest glacier?").final_text is None
