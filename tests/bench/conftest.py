"""Fixtures for the benchmark smoke tests: a small BEIR dataset built from the repository's own samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.ingest import directory_records, write_jsonl

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(scope="session")
def sample_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """samples/corpus as a BEIR folder; the answerable labelled questions split alternately into train and test."""
    root = tmp_path_factory.mktemp("sample-beir")
    write_jsonl(root / "corpus.jsonl", directory_records(SAMPLES / "corpus"))
    rows = [json.loads(line) for line in (SAMPLES / "qa" / "sample_qa.jsonl").read_text().splitlines() if line]
    answerable = [r for r in rows if r["answerable"] and r["reference_doc_ids"]]
    write_jsonl(root / "queries.jsonl", [{"_id": r["id"], "text": r["question"]} for r in answerable])
    (root / "qrels").mkdir()
    for split, part in (("train", answerable[0::2]), ("test", answerable[1::2])):
        lines = ["query-id\tcorpus-id\tscore"]
        lines += [f"{r['id']}\t{doc}\t1" for r in part for doc in r["reference_doc_ids"]]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root
