"""Evaluation datasets: our labelled JSONL, a BEIR folder, or PubMedQA, loaded into one ``EvalSample`` shape.

Each loader validates its input at the boundary (a bad line names the file and line) and says which corpus,
if any, must be ingested for the questions to be answerable. ``Dataset.sha256`` hashes the input files, so a
run records exactly which data it scored.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from rag.answering.decisions import Decision
from rag.errors import InvalidInputError, SourceNotFoundError

DatasetKind = Literal["jsonl", "beir", "pubmedqa"]
PUBMEDQA_QUESTIONS = "pqal_test_set.json"
PUBMEDQA_LABELS = "test_ground_truth.json"
MAX_QUESTION_CHARS = 4000


class HistoryTurn(BaseModel):
    """One earlier message of a conversation a follow-up question depends on."""

    role: Literal["user", "assistant"]
    content: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)


class EvalSample(BaseModel):
    """One labelled question. ``relevance`` maps relevant document ids to a graded judgement (> 0).

    A follow-up carries its conversation in ``history`` (the runner rewrites it into a standalone question as the
    chat route does) and may carry the labelled ``standalone`` form, which the JSONL loader adds as its own sample.
    """

    id: str = Field(min_length=1, max_length=200)
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    reference: str | None = None
    reference_doc_ids: list[str] = Field(default_factory=list)
    relevance: dict[str, int] = Field(default_factory=dict)
    reference_contexts: list[str] = Field(default_factory=list)
    answerable: bool | None = None
    decision: Decision | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    history: list[HistoryTurn] = Field(default_factory=list, max_length=100)
    standalone: str | None = Field(None, max_length=MAX_QUESTION_CHARS)
    hidden_doc_ids: list[str] = Field(
        default_factory=list, max_length=100, description="Documents kept out of retrieval for this question (a "
        "near-miss: the topic stays in the corpus, the answer goes)."
    )
    provenance: dict[str, Any] = Field(default_factory=dict, description="Where a generated question came from.")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question is blank")
        return value.strip()

    @field_validator("reference")
    @classmethod
    def _blank_reference_is_none(cls, value: str | None) -> str | None:
        return value.strip() if value and value.strip() else None

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_as_strings(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items() if v is not None}
        return value

    def model_post_init(self, _context: object) -> None:
        if not self.relevance and self.reference_doc_ids:
            self.relevance = {doc_id: 1 for doc_id in self.reference_doc_ids}
        if not self.reference_doc_ids and self.relevance:
            self.reference_doc_ids = [d for d, grade in self.relevance.items() if grade > 0]

    @property
    def relevant_doc_ids(self) -> set[str]:
        return {doc_id for doc_id, grade in self.relevance.items() if grade > 0}

    @property
    def hidden_filter(self) -> dict[str, Any] | None:
        """The retrieval filter that keeps ``hidden_doc_ids`` out (``rag eval`` and ``rag calibrate`` alike)."""
        return {"doc_id": {"$nin": list(self.hidden_doc_ids)}} if self.hidden_doc_ids else None


class Dataset(BaseModel):
    """Samples plus what the run needs to know about them."""

    name: str
    kind: DatasetKind
    path: str
    sha256: str = Field(description="sha256 over the question and label files (the corpus is the index version).")
    samples: list[EvalSample]
    corpus: list[Path] = Field(default_factory=list, description="Sources to ingest before evaluating.")
    total_samples: int = Field(description="Samples in the file(s) before --limit.")
    limit: int | None = None
    split: str | None = None


def _sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._") or "dataset"


def dataset_name(path: Path) -> str:
    """The name a JSONL dataset is reported under (and named by in ``--limit-for`` / ``--corpus-for``)."""
    return _slug(path.stem)


def detect_kind(path: Path) -> DatasetKind:
    """jsonl for a ``.jsonl`` file; beir for a folder with queries.jsonl and qrels/; pubmedqa for PQA-L files."""
    if not path.exists():
        raise SourceNotFoundError(f"dataset {path} does not exist", hint="pass a .jsonl file or a dataset folder")
    if path.is_file():
        if path.name == PUBMEDQA_QUESTIONS:
            return "pubmedqa"
        if path.suffix == ".jsonl":
            return "jsonl"
        raise InvalidInputError(f"{path} is not a .jsonl dataset", hint="see docs/EVALUATION.md, 'Datasets'")
    if (path / PUBMEDQA_QUESTIONS).is_file():
        return "pubmedqa"
    if (path / "queries.jsonl").is_file() and (path / "qrels").is_dir():
        return "beir"
    raise InvalidInputError(
        f"{path} is neither a BEIR folder (queries.jsonl + qrels/) nor PubMedQA ({PUBMEDQA_QUESTIONS})",
        hint="see docs/EVALUATION.md, 'Datasets'",
    )


def load_dataset(
    path: Path,
    *,
    limit: int | None = None,
    seed: int = 42,
    split: str = "test",
    corpus: Path | None = None,
    work_dir: Path | None = None,
) -> Dataset:
    """Load any supported dataset; ``limit`` keeps a seeded random subset (in file order) of that size.

    ``corpus`` (JSONL datasets only) names documents to ingest; BEIR and PubMedQA bring their own.
    ``work_dir`` is where a derived corpus file is written (PubMedQA's abstracts as a JSONL corpus).
    """
    path = Path(path)
    kind = detect_kind(path)
    if limit is not None and limit < 1:
        raise InvalidInputError(f"--limit must be at least 1, got {limit}")
    if corpus is not None and kind != "jsonl":
        raise InvalidInputError(f"--corpus is only for JSONL datasets; a {kind} dataset brings its own corpus")
    if kind == "jsonl":
        dataset = _load_jsonl(path, corpus)
    elif kind == "beir":
        dataset = _load_beir(path, split)
    else:
        dataset = _load_pubmedqa(path, work_dir)
    if limit is not None and limit < len(dataset.samples):
        order = list(range(len(dataset.samples)))
        random.Random(seed).shuffle(order)  # nested: the subset for a smaller limit is inside a larger one
        keep = sorted(order[:limit])
        dataset.samples = [dataset.samples[i] for i in keep]
        dataset.limit = limit
    return dataset


def _load_jsonl(path: Path, corpus: Path | None) -> Dataset:
    samples: list[EvalSample] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("a record must be a JSON object")
                record.setdefault("id", f"line-{number}")
                sample = EvalSample.model_validate(record)
            except (ValueError, ValidationError) as exc:
                raise InvalidInputError(f"{path}:{number}: {exc}") from exc
            for item in _with_standalone_twin(sample):
                if item.id in seen:
                    raise InvalidInputError(f"{path}:{number}: duplicate id {item.id!r}")
                seen.add(item.id)
                samples.append(item)
    if not samples:
        raise InvalidInputError(f"{path} holds no questions")
    if corpus is not None and not corpus.exists():
        raise SourceNotFoundError(f"corpus {corpus} does not exist")
    return Dataset(
        name=dataset_name(path),
        kind="jsonl",
        path=str(path),
        sha256=_sha256_files([path]),
        samples=samples,
        corpus=[corpus] if corpus is not None else [],
        total_samples=len(samples),
    )


def _with_standalone_twin(sample: EvalSample) -> list[EvalSample]:
    """A follow-up (``history`` set) is tagged ``turn=follow-up``; its labelled ``standalone`` form joins the set
    as ``<id>:standalone`` (``turn=standalone``), so one run's ``turn`` slice compares the two on the same
    documents: what the conversation costs retrieval and answers."""
    if not sample.history:
        return [sample]
    sample.tags = {**sample.tags, "turn": "follow-up"}
    if not sample.standalone:
        return [sample]
    twin = sample.model_copy(
        update={"id": f"{sample.id}:standalone", "question": sample.standalone.strip(), "history": [],
                "standalone": None, "tags": {**sample.tags, "turn": "standalone"}}
    )
    return [sample, twin]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels (``query-id corpus-id score``, tab separated, header line, CRLF tolerated)."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for number, row in enumerate(reader, start=1):
            row = [cell.strip() for cell in row]
            if not row or not any(row):
                continue
            if number == 1 and not row[-1].lstrip("-").isdigit():
                continue  # header
            if len(row) != 3 or not row[2].lstrip("-").isdigit():
                raise InvalidInputError(f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score'")
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def _load_beir(path: Path, split: str) -> Dataset:
    qrels_path = path / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (path / "qrels").glob("*.tsv"))
        raise InvalidInputError(f"{qrels_path} does not exist", hint=f"splits here: {', '.join(available)}")
    qrels = read_qrels(qrels_path)
    queries: dict[str, str] = {}
    queries_path = path / "queries.jsonl"
    with queries_path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                queries[str(record["_id"])] = str(record["text"])
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidInputError(f"{queries_path}:{number}: a query needs '_id' and 'text' ({exc})") from exc
    missing = [qid for qid in qrels if qid not in queries]
    if missing:
        raise InvalidInputError(f"{len(missing)} qrels query ids are not in {queries_path}, e.g. {missing[:3]}")
    samples = [
        EvalSample(id=qid, question=queries[qid], relevance=grades)  # only _id and text: metadata may leak labels
        for qid, grades in qrels.items()
        if any(grade > 0 for grade in grades.values())
    ]
    corpus_path = path / "corpus.jsonl"
    if not corpus_path.is_file():
        raise InvalidInputError(f"{corpus_path} does not exist: a BEIR folder needs its corpus")
    return Dataset(
        name=_slug(path.name),
        kind="beir",
        path=str(path),
        sha256=_sha256_files([queries_path, qrels_path]),
        samples=samples,
        corpus=[corpus_path],
        total_samples=len(samples),
        split=split,
    )


def _load_pubmedqa(path: Path, work_dir: Path | None) -> Dataset:
    folder = path if path.is_dir() else path.parent
    questions_path = folder / PUBMEDQA_QUESTIONS
    labels_path = folder / PUBMEDQA_LABELS
    try:
        records = json.loads(questions_path.read_text(encoding="utf-8"))
        labels = json.loads(labels_path.read_text(encoding="utf-8")) if labels_path.is_file() else {}
    except ValueError as exc:
        raise InvalidInputError(f"PubMedQA files in {folder} are not valid JSON: {exc}") from exc
    if not isinstance(records, dict) or not records:
        raise InvalidInputError(f"{questions_path} must be a non-empty object keyed by PMID")
    samples: list[EvalSample] = []
    corpus_lines: list[str] = []
    for pmid, record in records.items():
        try:
            contexts = [str(c) for c in record["CONTEXTS"]]
            decision = str(labels.get(pmid, record.get("final_decision", ""))).strip().lower() or None
            sample = EvalSample(
                id=str(pmid),
                question=str(record["QUESTION"]),
                reference=record.get("LONG_ANSWER"),
                reference_doc_ids=[str(pmid)],
                reference_contexts=contexts,
                answerable=True,
                decision=decision,
                tags={
                    "decision": decision or "unknown",
                    "reasoning_required": str(record.get("reasoning_required_pred", "unknown")),
                },
            )
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise InvalidInputError(f"{questions_path}: record {pmid}: {exc}") from exc
        samples.append(sample)
        # The abstract without its conclusion is the document; the question (the article's title) is NOT put
        # in the document, or retrieval would match the question against itself.
        corpus_lines.append(json.dumps({"_id": str(pmid), "title": "", "text": "\n".join(contexts)}))
    digest = _sha256_files([questions_path, *([labels_path] if labels_path.is_file() else [])])
    target_dir = (work_dir or folder) / "corpora"
    target_dir.mkdir(parents=True, exist_ok=True)
    corpus_path = target_dir / f"pubmedqa-{digest[:12]}.jsonl"
    content = "\n".join(corpus_lines) + "\n"
    if not corpus_path.is_file() or corpus_path.read_text(encoding="utf-8") != content:
        tmp = corpus_path.with_suffix(".tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(corpus_path)
    return Dataset(
        name="pubmedqa",
        kind="pubmedqa",
        path=str(folder),
        sha256=digest,
        samples=samples,
        corpus=[corpus_path],
        total_samples=len(samples),
    )
