"""``rag eval generate``: a test set written from the user's own chunks by a model behind the real OpenAI protocol
(a scripted server: one document per filter), filtered, with near-misses the evaluator really hides, cached and
reproducible; and one real run with the bundled small local model."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eval.datasets import load_dataset
from eval.report import GENERATED_MODES_NOTE, format_text
from eval.runner import EvalOptions, EvalRunner
from eval.testset import (
    CONTEXT_WORDS,
    QA_SCHEMA,
    GenerationConfig,
    QuestionSetGenerator,
    contains,
    load_style_examples,
    longest_copied_run,
    stratified_order,
    write_testset,
)
from ingest.pipeline import IngestionPipeline
from rag.answering.generation.backends import LocalBackend, OpenAIBackend
from rag.errors import InvalidInputError
from rag.indexing.embedding import Embedder
from rag.indexing.store import StoredChunk, VectorStore
from rag.settings import Settings
from tests.conftest import VENV_BIN
from tests.eval.conftest import JudgeServer

# doc id -> (text, what the scripted writer returns for it, what the scripted checker answers)
DOCS: dict[str, tuple[str, dict[str, str] | str, str]] = {
    "alpha": ("Lighthouse keepers fitted Fresnel lenses, rings of thin glass prisms, so the beam carried far out to "
              "sea on clear nights along the rocky coast.",
              {"question": "What lenses did lighthouse keepers fit to carry the beam out to sea?",
               "answer": "Fresnel lenses"}, "Fresnel lenses"),
    "beta": ("Honeybee foragers return to the hive and dance; the angle of the waggle run tells sisters the "
             "direction of the flowers relative to the sun.",
             {"question": "How do honeybee foragers find flowers in spring?", "answer": "by their sense of smell"},
             "by smell"),
    "gamma": ("Shield volcanoes have gentle slopes because they are built from runny basalt lava that flows a long "
              "way before it cools and hardens.",
              {"question": "Shield volcanoes have gentle slopes because they are built from runny what?",
               "answer": "basalt lava"}, "basalt lava"),
    "delta": ("Lighthouse engineers later mounted the optics on a bath of mercury so the heavy lens assembly could "
              "turn with very little friction all night.",
              {"question": "What lenses did lighthouse keepers fit to send the beam out to sea?",
               "answer": "mercury"}, "mercury"),
    "epsilon": ("Coral polyps host microscopic algae called zooxanthellae that feed them sugars; warm water makes "
                "the polyps expel the algae and the reef turns white.",
                {"question": "Which algae living in coral polyps feed them sugars?", "answer": "zooxanthellae"},
                "UNANSWERABLE"),
    "zeta": ("The water cycle moves moisture from oceans to clouds by evaporation, and condensation turns the "
             "vapour into droplets that fall back as rain or snow.",
             {"question": "According to the passage, what turns vapour into droplets?", "answer": "condensation"},
             "condensation"),
    "eta": ("Gutenberg cast his movable type from an alloy of lead, tin and antimony, which melted easily and "
            "hardened quickly in a hand mould.", "sorry, I cannot produce JSON today", ""),
    "theta": ("The Rosetta Stone was found in 1799 near the town of Rashid by French soldiers rebuilding a fort "
              "during the Egyptian campaign.",
              {"question": "In which year was the Rosetta Stone discovered by French soldiers?", "answer": "1799"},
              "1799"),
    "iota": ("Alexander Graham Bell received the patent for the telephone in March 1876, only hours ahead of a "
             "rival filing by the inventor Elisha Gray.",
             {"question": "Which inventor filed a rival telephone claim hours after Alexander Graham Bell?",
              "answer": "Elisha Gray"}, "Elisha Gray"),
    "kappa": ("Vesuvius buried the Roman towns of Pompeii and Herculaneum under ash and pumice in AD 79, preserving "
              "streets, bread and wall paintings for centuries.",
              {"question": "Which Roman town besides Pompeii did Vesuvius bury in AD 79?", "answer": "Herculaneum"},
              "Herculaneum"),
}


class ScriptedWriterServer(JudgeServer):
    """Writes the scripted question for the document in the prompt; answers the check call as scripted."""

    def content(self, marker: str, schema: dict[str, Any], text: str) -> str:
        doc = next(d for d, (body, _, _) in DOCS.items() if body[:40] in text)
        _, written, checked = DOCS[doc]
        if schema:  # the writer's call asks for the QA JSON schema
            assert set(schema.get("properties", {})) == set(QA_SCHEMA["properties"])
            return written if isinstance(written, str) else json.dumps(written)
        return checked


@pytest.fixture(scope="module")
def testset_server() -> Iterator[ScriptedWriterServer]:
    server = ScriptedWriterServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def corpus_settings(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Settings:
    root = tmp_path_factory.mktemp("testset")
    corpus = root / "corpus"
    corpus.mkdir()
    for doc, (text, _, _) in DOCS.items():
        (corpus / f"{doc}.txt").write_text(text + "\n")
    settings = Settings(data_dir=root / "data", collection="mydocs")
    IngestionPipeline(settings, embedder=embedder, progress=False).run([corpus])
    return settings


def generate(settings: Settings, server: ScriptedWriterServer, embedder: Embedder, **config: Any) -> Any:
    backend = OpenAIBackend(server.url, "scripted-writer", temperature=0.0)
    chunks = list(VectorStore(settings).iter_chunks())
    generator = QuestionSetGenerator(settings, GenerationConfig(**config), backend, embedder, progress=False,
                                 say=lambda _: None)  # fmt: skip
    return generator.run(chunks, collection=settings.collection, index_version="v-test")


def test_every_filter_rejects_its_case_and_near_misses_hide_their_document(
    corpus_settings: Settings, testset_server: ScriptedWriterServer, embedder: Embedder, tmp_path: Path
) -> None:
    result = generate(corpus_settings, testset_server, embedder, n=10, near_miss_share=0.5, min_chunk_words=8)
    summary = result.summary()
    assert summary["attempts"] == 10  # fewer than n passed: every chunk was tried once
    assert summary["rejected"] == {"answer_not_in_chunk": 1, "copies_chunk": 1, "duplicate": 1, "malformed": 1,
                                   "not_answerable": 1, "not_standalone": 1}  # fmt: skip
    assert summary["questions"] == 4 and summary["answerable"] == 2 and summary["near_miss"] == 2
    sources = {item["provenance"]["doc_id"] for item in result.items}
    assert {"theta.txt", "iota.txt", "kappa.txt"} <= sources and len(sources & {"alpha.txt", "delta.txt"}) == 1
    for item in result.items:
        provenance = item["provenance"]
        assert provenance["generator"] == "scripted-writer" and provenance["seed"] == 42
        assert provenance["prompt_version"] == "testset-v1" and provenance["chunk_id"]
        if item["answerable"]:
            assert item["reference"] == provenance["answer"] and item["reference_doc_ids"] == [provenance["doc_id"]]
        else:
            assert item["hidden_doc_ids"] == [provenance["doc_id"]] and item["reference_doc_ids"] == []

    output = tmp_path / "generated.jsonl"
    write_testset(result, output)
    dataset = load_dataset(output)  # the output is the evaluator's own format
    assert len(dataset.samples) == 4
    options = EvalOptions(dataset=output, collection="mydocs", judge="none", answers=False, progress=False,
                          log_to_mlflow=False, modes=["dense", "bm25"])  # fmt: skip
    run_settings = corpus_settings.with_overrides(eval_bootstrap_resamples=100)
    evaluated, frame, _ = EvalRunner(run_settings, options, embedder=embedder).run()
    assert evaluated.dataset["generated_samples"] == 4
    assert GENERATED_MODES_NOTE in format_text(evaluated)  # comparing modes on a model-written set is flagged
    for _, row in frame.iterrows():
        item = next(i for i in result.items if i["id"] == row["id"])
        if item["answerable"]:
            assert row["hit_at_5"] == 1.0  # the source document is found for its own question
        else:  # the evaluator hid the source document: the topic may be retrieved, the answer never
            assert item["provenance"]["doc_id"] not in row["retrieved_doc_ids"]

    calls = len(testset_server.requests)
    again = generate(corpus_settings, testset_server, embedder, n=10, near_miss_share=0.5, min_chunk_words=8)
    assert len(testset_server.requests) == calls and again.model_calls == 0  # every call came from the cache
    assert again.items == result.items


SAME_FACT = {  # chunk marker -> (document, text, question written)
    "cohort": ("bmi.md", "In the pooled cohort of 900,000 adults, mortality was lowest at about 22.5-25 kg/m2 in "
               "both sexes, and rose steeply above and below that band.",
               "At what body-mass index was death rate lowest in men and women?"),
    "optimum": ("bmi.md", "Each 5 kg/m2 above the optimum of 22.5-25 kg/m2 carried about 30% higher overall "
                "mortality, mostly vascular, in the follow-up visits.",
                "Which band of BMI is the optimum for survival according to pooled follow-up data?"),
    "guideline": ("diet.md", "The national dietary guideline recommends that adults keep a weight in the range "
                  "22.5-25 kg/m2 through meals rich in vegetables and regular walking.",
                  "What weight range does the national dietary guideline recommend for adults?"),
}


class SameFactServer(ScriptedWriterServer):
    def content(self, marker: str, schema: dict[str, Any], text: str) -> str:
        key = next(k for k, (_, body, _) in SAME_FACT.items() if body[:40] in text)
        if schema:
            return json.dumps({"question": SAME_FACT[key][2], "answer": "22.5-25 kg/m2"})
        return "22.5-25 kg/m2"


def test_the_same_answer_from_the_same_document_is_a_duplicate(tmp_path: Path, embedder: Embedder) -> None:
    """Two questions about one fact of one document keep the first; the same answer in another document stays."""
    server = SameFactServer()
    server.start()
    try:
        chunks = [StoredChunk(f"{key}-chunk", text, {"doc_id": doc, "section": key})
                  for key, (doc, text, _) in SAME_FACT.items()]  # fmt: skip
        settings = Settings(data_dir=tmp_path / "data", collection="facts")
        config = GenerationConfig(n=3, near_miss_share=0.0, min_chunk_words=8, max_attempts_factor=1.0)
        backend = OpenAIBackend(server.url, "scripted-writer", temperature=0.0)
        generator = QuestionSetGenerator(settings, config, backend, embedder, progress=False, say=lambda _: None)
        result = generator.run(chunks, collection="facts", index_version="v")
    finally:
        server.stop()
    assert result.attempts == 3 and result.rejected == {"duplicate": 1}
    assert sorted(item["provenance"]["doc_id"] for item in result.items) == ["bmi.md", "diet.md"]
    rejected = result.examples["duplicate"][0]
    assert rejected["question"] in {SAME_FACT["cohort"][2], SAME_FACT["optimum"][2]}


def test_sampling_is_stratified_and_seeded() -> None:
    chunks = [StoredChunk(f"{doc}-{i}", "word " * 50, {"doc_id": doc, "section": f"s{i % 2}"})
              for doc, count in (("big", 12), ("small", 2), ("mid", 4)) for i in range(count)]  # fmt: skip
    order = stratified_order(chunks, seed=7, min_words=40)
    assert {c.metadata["doc_id"] for c in order[:3]} == {"big", "small", "mid"}  # one per document per round
    big = [c for c in order if c.metadata["doc_id"] == "big"]
    assert [c.metadata["section"] for c in big[:2]] in (["s0", "s1"], ["s1", "s0"])  # sections take turns
    assert [c.chunk_id for c in stratified_order(chunks, 7, 40)] == [c.chunk_id for c in order]
    assert [c.chunk_id for c in stratified_order(chunks, 8, 40)] != [c.chunk_id for c in order]
    assert stratified_order(chunks, 7, min_words=60) == []  # too short: skipped
    assert longest_copied_run("Why do shield volcanoes have gentle slopes?", "Shield volcanoes have gentle "
                              "slopes because") == 5  # fmt: skip


def test_cli_generates_with_an_openai_compatible_server_and_explains_bad_input(
    corpus_settings: Settings, testset_server: ScriptedWriterServer, tmp_path: Path
) -> None:
    env = {**os.environ, "RAG_DATA_DIR": str(corpus_settings.data_dir), "RAG_COLLECTION": "mydocs",
           "RAG_OPENAI_BASE_URL": testset_server.url, "RAG_OPENAI_MODEL": "scripted-writer"}  # fmt: skip
    output = tmp_path / "set.jsonl"
    command = [str(VENV_BIN / "rag"), "eval", "generate", "--n", "3", "--output", str(output), "--generator",
               "openai", "--min-chunk-words", "8", "--json"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["questions"] == 3 == len(output.read_text().splitlines())
    assert summary["estimate"]["attempts"] == 9 and summary["estimate"]["prompt_tokens"] > 0
    assert Path(summary["summary_file"]).is_file()
    empty = subprocess.run([*command[:-1], "--collection", "nothing-here"], env=env, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert empty.returncode == 2 and "has no documents yet" in empty.stderr and "rag ingest" in empty.stderr


def test_style_examples_reach_the_writer_only_seeded_and_apart_from_excluded_questions(
    corpus_settings: Settings, testset_server: ScriptedWriterServer, tmp_path: Path
) -> None:
    real = [f"Which harbour did ship number {i} of the northern fleet leave from?" for i in range(12)]
    examples = tmp_path / "asked.txt"
    examples.write_text("\n".join(real) + "\n\n", encoding="utf-8")
    picked = load_style_examples(examples, 3, seed=7)
    assert len(set(picked)) == 3 and set(picked) <= set(real) and picked == load_style_examples(examples, 3, seed=7)
    assert picked != load_style_examples(examples, 3, seed=8)
    kept_apart = load_style_examples(examples, 20, seed=7, exclude=real[:10])
    assert sorted(kept_apart) == sorted(real[10:])  # questions to be compared with never become examples

    env = {**os.environ, "RAG_DATA_DIR": str(corpus_settings.data_dir), "RAG_COLLECTION": "mydocs",
           "RAG_OPENAI_BASE_URL": testset_server.url, "RAG_OPENAI_MODEL": "scripted-writer"}  # fmt: skip
    as_set = tmp_path / "asked.jsonl"  # the evaluator's own format works as an examples file too
    as_set.write_text("".join(json.dumps({"id": str(i), "question": q}) + "\n" for i, q in enumerate(real)))
    output = tmp_path / "styled.jsonl"
    command = [str(VENV_BIN / "rag"), "eval", "generate", "--n", "3", "--output", str(output), "--generator", "openai",
               "--min-chunk-words", "8", "--examples", str(as_set), "--n-examples", "2", "--json"]  # fmt: skip
    before = len(testset_server.requests)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    shown = summary["config"]["examples"]
    assert len(shown) == 2 and set(shown) <= set(real)
    new = testset_server.requests[before:]
    writes = [r for r in new if r.get("response_format")]
    checks = [r for r in new if not r.get("response_format")]
    assert writes  # (a check call does not depend on the examples: it may come from the cache)
    for request in writes:  # every write prompt shows the same examples; the answerability check never does
        prompt = request["messages"][-1]["content"]
        assert "Questions people really ask" in prompt and all(f"- {q}" in prompt for q in shown)
        assert sum(q in prompt for q in real) == 2
    assert not any("Questions people really ask" in r["messages"][-1]["content"] for r in checks)
    items = [json.loads(line) for line in output.read_text().splitlines()]
    assert items and all(item["provenance"]["style_examples"] == 2 for item in items)

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"question": "fine?"}\nnot json\n')
    for path, message in ((tmp_path / "missing.txt", "does not exist"), (bad_json, "bad.jsonl:2 is not JSON")):
        failed = subprocess.run([*command[:-5], "--examples", str(path), "--json"], env=env, capture_output=True,
                                text=True, timeout=300)  # fmt: skip
        assert failed.returncode == 2 and message in failed.stderr, failed.stderr
    too_long = tmp_path / "long.txt"
    too_long.write_text("why " * 200 + "\n")
    with pytest.raises(InvalidInputError, match="no usable question"):
        load_style_examples(too_long, 3, seed=7)


def test_the_bundled_local_model_writes_a_valid_set(
    corpus_settings: Settings, smollm: LocalBackend, embedder: Embedder, tmp_path: Path
) -> None:
    """A real model: whatever it writes is either kept (and then passes every check) or counted as rejected."""
    settings = corpus_settings.with_overrides(data_dir=tmp_path / "data")  # its own model-call cache
    chunks = list(VectorStore(corpus_settings).iter_chunks())
    config = GenerationConfig(n=3, near_miss_share=0.0, min_chunk_words=8, max_attempts_factor=2.0)
    result = QuestionSetGenerator(settings, config, smollm, embedder, progress=False, say=lambda _: None).run(
        chunks, collection="mydocs", index_version="v-test"
    )
    assert result.attempts == len(result.items) + sum(result.rejected.values()) <= 6
    texts = {c.chunk_id: c.text for c in chunks}
    for item in result.items:
        assert contains(texts[item["provenance"]["chunk_id"]], item["reference"])
        assert not CONTEXT_WORDS.search(item["question"])
        assert item["question"].endswith("?")
