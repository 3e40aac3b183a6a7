"""Dataset loading: our JSONL, BEIR folders and PubMedQA, validated at the boundary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.datasets import detect_kind, load_dataset, read_qrels
from rag.errors import InvalidInputError, SourceNotFoundError


def test_beir_folder_uses_only_judged_queries_and_no_metadata(tiny_beir: Path, tmp_path: Path) -> None:
    dataset = load_dataset(tiny_beir)
    assert dataset.kind == "beir" and dataset.name == "tinybeir" and dataset.split == "test"
    assert [s.id for s in dataset.samples] == ["q1", "q2", "q3", "q4", "q5"]  # q9 has no qrels
    q3 = dataset.samples[2]
    assert q3.relevance == {"d3": 2, "d6": 1}
    assert set(q3.reference_doc_ids) == {"d3", "d6"}
    assert q3.tags == {}  # the query's metadata (a label leak in SciFact) is never read
    assert dataset.corpus == [tiny_beir / "corpus.jsonl"]
    assert read_qrels(tiny_beir / "qrels" / "test.tsv")["q1"] == {"d1": 1}  # CRLF and header handled
    with pytest.raises(InvalidInputError, match=r"train\.tsv"):
        load_dataset(tiny_beir, split="train")


def test_limit_is_a_seeded_subset_in_file_order(tiny_beir: Path) -> None:
    first = [s.id for s in load_dataset(tiny_beir, limit=3, seed=7).samples]
    again = [s.id for s in load_dataset(tiny_beir, limit=3, seed=7).samples]
    assert first == again and len(first) == 3 and first == sorted(first)
    others = {tuple(s.id for s in load_dataset(tiny_beir, limit=3, seed=seed).samples) for seed in range(8)}
    assert len(others) > 1  # the seed matters
    assert load_dataset(tiny_beir, limit=3).total_samples == 5
    smaller = {s.id for s in load_dataset(tiny_beir, limit=2, seed=7).samples}
    assert smaller < set(first)  # a smaller limit is a subset of a larger one (judge cache reuse)


def test_pubmedqa_corpus_is_the_contexts_keyed_by_pmid(tiny_pubmedqa: Path, tmp_path: Path) -> None:
    dataset = load_dataset(tiny_pubmedqa, work_dir=tmp_path)
    assert dataset.kind == "pubmedqa" and len(dataset.samples) == 3
    sample = dataset.samples[1]
    assert sample.id == "102" and sample.decision == "no" and sample.reference_doc_ids == ["102"]
    assert sample.reference and "not associated" in sample.reference
    assert sample.tags["decision"] == "no"
    corpus = [json.loads(line) for line in dataset.corpus[0].read_text().splitlines()]
    assert [d["_id"] for d in corpus] == ["101", "102", "103"]
    assert all(d["title"] == "" for d in corpus)  # the question (the article's title) is not in the document
    assert "Fracture rates did not differ" in corpus[1]["text"]
    assert load_dataset(tiny_pubmedqa, work_dir=tmp_path).sha256 == dataset.sha256


def test_our_jsonl_with_tags_and_unanswerable(tiny_qa: tuple[Path, Path, Path]) -> None:
    path, full, _ = tiny_qa
    dataset = load_dataset(path, corpus=full)
    assert dataset.kind == "jsonl" and dataset.corpus == [full]
    unanswerable = dataset.samples[-1]
    assert unanswerable.answerable is False and unanswerable.reference is None and not unanswerable.relevance
    assert dataset.samples[0].relevance == {"d1.txt": 1} and dataset.samples[0].tags == {"topic": "other"}


def test_invalid_inputs_name_file_and_line(tmp_path: Path, tiny_beir: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "ok?"}\n{"id": "b", "question": "   "}\n')
    with pytest.raises(InvalidInputError, match=r"bad.jsonl:2"):
        load_dataset(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "question": "one?"}\n{"id": "a", "question": "two?"}\n')
    with pytest.raises(InvalidInputError, match="duplicate id"):
        load_dataset(dup)
    with pytest.raises(SourceNotFoundError):
        detect_kind(tmp_path / "missing")
    with pytest.raises(InvalidInputError, match="neither a BEIR folder"):
        detect_kind(tmp_path)
    with pytest.raises(InvalidInputError, match="--corpus is only for JSONL"):
        load_dataset(tiny_beir, corpus=tmp_path)
    with pytest.raises(InvalidInputError, match="--limit"):
        load_dataset(tiny_beir, limit=0)


def test_bundled_follow_up_set_loads_each_follow_up_with_its_standalone_twin(tmp_path: Path) -> None:
    path = Path(__file__).resolve().parents[2] / "samples" / "qa" / "followups.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    dataset = load_dataset(path)
    assert len(dataset.samples) == 2 * len(rows)
    first, twin = dataset.samples[0], dataset.samples[1]
    assert first.history and first.tags["turn"] == "follow-up" and first.question == rows[0]["question"]
    assert twin.id == f"{first.id}:standalone" and not twin.history and twin.tags["turn"] == "standalone"
    assert twin.question == rows[0]["standalone"] and twin.reference_doc_ids == first.reference_doc_ids
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**rows[0], "history": [{"role": "system", "content": "x"}]}) + "\n")
    with pytest.raises(InvalidInputError, match=r"(?s)bad.jsonl:1: .*history.0.role"):
        load_dataset(bad)
