"""Validate the labelled QA set against the sample corpus, using the project's own loaders.

Why: a reference context that is not in the *extracted* text of its document makes every retrieval metric
computed from it wrong, silently. This check fails loudly instead. It verifies the schema of every row, that
ids and questions are unique, that every doc id exists in the corpus, that the format tag matches the
document's format, that every reference context occurs verbatim (after whitespace normalisation) in one of its
reference documents, and that the set keeps its minimum counts per type and covers every document and format.

Usage (from the repository root):
    .venv/bin/python samples/qa/check_qa.py [--qa PATH] [--corpus DIR] [--profile sample|calibration] [--json]
Exit status 0 when the set is valid, 1 when it is not (each problem is printed), 2 when the corpus cannot load.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.loaders import discover, load_file
from rag.errors import RagError

HERE = Path(__file__).resolve().parent
DEFAULT_QA = HERE / "sample_qa.jsonl"
DEFAULT_CORPUS = HERE.parent / "corpus"
# Files at the corpus root that document the corpus rather than belong to it.
CORPUS_DOC_FILES = {"README.md"}
MAX_BYTES = 5_000_000

REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "question": str,
    "reference": str,
    "reference_doc_ids": list,
    "reference_contexts": list,
    "answerable": bool,
    "tags": dict,
}
ANSWERABLE_TYPES = {"factoid", "why", "how", "numeric", "benign_lookalike", "yes_no", "list"}
FORMATS = {"md", "html", "txt", "pdf"}
UNANSWERABLE_KINDS = {"off_topic", "near_miss"}
DECISIONS = {"yes", "no", "maybe"}


@dataclass(frozen=True)
class Coverage:
    """The least a set must hold: the sample set tests the injection filter and every format; the held-out
    calibration set (samples/calibration) is about size."""

    answerable: int  # excluding benign look-alikes
    unanswerable: int
    benign: int
    formats: frozenset[str]


PROFILES = {
    "sample": Coverage(answerable=60, unanswerable=30, benign=10, formats=frozenset(FORMATS)),
    "calibration": Coverage(answerable=300, unanswerable=100, benign=0, formats=frozenset({"md", "html", "txt"})),
}
MAX_QUESTION_CHARS = 1000  # the query length limit of the product

_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)\]])")
_SPACE_AFTER_OPEN = re.compile(r"([(\[])\s+")


def normalise(text: str) -> str:
    """Collapse all whitespace to one space, and drop spaces that extraction may put around punctuation."""
    text = unicodedata.normalize("NFC", text)
    text = " ".join(text.split())
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return _SPACE_AFTER_OPEN.sub(r"\1", text)


@dataclass
class QaReport:
    """Outcome of one validation run: problems found and the counts a README or a log can quote."""

    qa_path: str
    corpus_root: str
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    documents: dict[str, str] = field(default_factory=dict)  # doc_id -> format
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "qa_path": self.qa_path,
            "corpus_root": self.corpus_root,
            "rows": self.rows,
            "documents": self.documents,
            "counts": self.counts,
            "errors": self.errors,
        }


def load_corpus(corpus_root: Path, max_bytes: int = MAX_BYTES) -> dict[str, tuple[str, str]]:
    """Extracted, normalised text and format of every corpus document, keyed by doc id (path under the root)."""
    files, _ignored = discover(corpus_root)
    corpus: dict[str, tuple[str, str]] = {}
    for source in files:
        if source.doc_id in CORPUS_DOC_FILES:
            continue
        document = load_file(source, max_bytes)
        corpus[source.doc_id] = (normalise(document.text), source.format)
    return corpus


def read_rows(qa_path: Path, report: QaReport) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(qa_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            report.errors.append(f"line {number}: invalid JSON ({exc.msg})")
            continue
        if not isinstance(row, dict):
            report.errors.append(f"line {number}: expected a JSON object")
            continue
        row["_line"] = number
        rows.append(row)
    return rows


def check_schema(row: dict[str, Any], where: str, errors: list[str]) -> bool:
    good = True
    for name, kind in REQUIRED_FIELDS.items():
        if name not in row:
            errors.append(f"{where}: missing field {name!r}")
            good = False
        elif not isinstance(row[name], kind):
            errors.append(f"{where}: field {name!r} should be {getattr(kind, '__name__', kind)}")
            good = False
    extra = set(row) - set(REQUIRED_FIELDS) - {"_line", "decision"}
    if extra:
        errors.append(f"{where}: unexpected fields {sorted(extra)}")
    if not good:
        return False
    for name in ("reference_doc_ids", "reference_contexts"):
        if not all(isinstance(item, str) and item.strip() for item in row[name]):
            errors.append(f"{where}: {name} must hold non-empty strings")
            good = False
    for name in ("topic", "type", "format"):
        if not isinstance(row["tags"].get(name), str) or not row["tags"][name]:
            errors.append(f"{where}: tags.{name} is missing")
            good = False
    if not row["id"].strip() or not row["question"].strip():
        errors.append(f"{where}: id and question must not be empty")
        good = False
    if len(row["question"]) > MAX_QUESTION_CHARS:
        errors.append(f"{where}: question longer than {MAX_QUESTION_CHARS} characters")
    return good


def check_labels(row: dict[str, Any], where: str, corpus: dict[str, tuple[str, str]], errors: list[str]) -> None:
    tags = row["tags"]
    if row["answerable"]:
        if tags["type"] not in ANSWERABLE_TYPES:
            errors.append(
                f"{where}: answerable row has tags.type {tags['type']!r}, not one of {sorted(ANSWERABLE_TYPES)}"
            )
        if not row["reference"].strip() or not row["reference_doc_ids"] or not row["reference_contexts"]:
            errors.append(f"{where}: answerable row needs a reference, reference_doc_ids and reference_contexts")
        if tags["format"] not in FORMATS:
            errors.append(f"{where}: tags.format {tags['format']!r} is not one of {sorted(FORMATS)}")
        decision = row.get("decision")
        if (tags["type"] == "yes_no") != (decision is not None):
            errors.append(f"{where}: a yes_no row, and only one, carries a decision")
        elif decision is not None and (
            decision not in DECISIONS or not row["reference"].lower().startswith(decision)
        ):
            errors.append(f"{where}: decision {decision!r} must be one of {sorted(DECISIONS)} and open the reference")
    else:
        if tags["type"] != "unanswerable":
            errors.append(f"{where}: unanswerable row must have tags.type 'unanswerable'")
        if row["reference"] or row["reference_doc_ids"] or row["reference_contexts"]:
            errors.append(f"{where}: unanswerable row must have an empty reference, doc ids and contexts")
        kind = tags.get("unanswerable_kind")
        if kind not in UNANSWERABLE_KINDS:
            errors.append(f"{where}: tags.unanswerable_kind must be one of {sorted(UNANSWERABLE_KINDS)}")
        related = tags.get("related_doc_id")
        if kind == "near_miss" and related not in corpus:
            errors.append(f"{where}: near-miss row needs tags.related_doc_id naming a corpus document")
        if kind == "off_topic" and tags["format"] != "none":
            errors.append(f"{where}: off-topic row must have tags.format 'none'")

    for doc_id in row["reference_doc_ids"]:
        if doc_id not in corpus:
            errors.append(f"{where}: reference doc id {doc_id!r} is not in the corpus")
        elif corpus[doc_id][1] != tags["format"]:
            errors.append(f"{where}: tags.format {tags['format']!r} but {doc_id} is {corpus[doc_id][1]!r}")
    texts = [corpus[doc_id][0] for doc_id in row["reference_doc_ids"] if doc_id in corpus]
    for context in row["reference_contexts"]:
        if not any(normalise(context) in text for text in texts):
            errors.append(f"{where}: context not found verbatim in {row['reference_doc_ids']}: {context[:90]!r}")


def count(rows: list[dict[str, Any]], corpus: dict[str, tuple[str, str]]) -> dict[str, dict[str, int]]:
    good = [row for row in rows if isinstance(row.get("tags"), dict)]
    per_doc: Counter[str] = Counter({doc_id: 0 for doc_id in corpus})
    for row in good:
        if row.get("answerable") is True:
            per_doc.update(row.get("reference_doc_ids", []))
    return {
        "answerable": dict(Counter(str(row.get("answerable")).lower() for row in good)),
        "type": dict(sorted(Counter(row["tags"].get("type", "?") for row in good).items())),
        "format": dict(sorted(Counter(row["tags"].get("format", "?") for row in good).items())),
        "unanswerable_kind": dict(
            sorted(
                Counter(row["tags"]["unanswerable_kind"] for row in good if "unanswerable_kind" in row["tags"]).items()
            )
        ),
        "answerable_per_doc": dict(sorted(per_doc.items())),
    }


def check_coverage(report: QaReport, least: Coverage) -> None:
    types = report.counts["type"]
    factual = sum(n for name, n in types.items() if name in ANSWERABLE_TYPES - {"benign_lookalike"})
    if factual < least.answerable:
        report.errors.append(f"only {factual} answerable (non-look-alike) questions; need {least.answerable}")
    if types.get("unanswerable", 0) < least.unanswerable:
        report.errors.append(f"only {types.get('unanswerable', 0)} unanswerable questions; need {least.unanswerable}")
    if types.get("benign_lookalike", 0) < least.benign:
        report.errors.append(f"only {types.get('benign_lookalike', 0)} benign look-alikes; need {least.benign}")
    for doc_id, n in report.counts["answerable_per_doc"].items():
        if n == 0:
            report.errors.append(f"document {doc_id} has no answerable question")
    missing_formats = least.formats - set(report.documents.values())
    if missing_formats:
        report.errors.append(f"the corpus has no document of format(s) {sorted(missing_formats)}")


def validate(
    qa_path: Path = DEFAULT_QA, corpus_root: Path = DEFAULT_CORPUS, max_bytes: int = MAX_BYTES, profile: str = "sample"
) -> QaReport:
    """Check the QA set at ``qa_path`` against the corpus under ``corpus_root``; never raises on bad rows."""
    report = QaReport(qa_path=str(qa_path), corpus_root=str(corpus_root))
    corpus = load_corpus(corpus_root, max_bytes)
    report.documents = {doc_id: fmt for doc_id, (_text, fmt) in sorted(corpus.items())}
    rows = read_rows(qa_path, report)
    report.rows = len(rows)
    seen_ids: dict[str, int] = {}
    seen_questions: dict[str, str] = {}
    for row in rows:
        where = f"line {row['_line']}" + (f" ({row['id']})" if isinstance(row.get("id"), str) else "")
        if not check_schema(row, where, report.errors):
            continue
        if row["id"] in seen_ids:
            report.errors.append(f"{where}: duplicate id, first used on line {seen_ids[row['id']]}")
        seen_ids.setdefault(row["id"], row["_line"])
        question_key = normalise(row["question"]).lower()
        if question_key in seen_questions:
            report.errors.append(f"{where}: same question as {seen_questions[question_key]}")
        seen_questions.setdefault(question_key, row["id"])
        check_labels(row, where, corpus, report.errors)
    report.counts = count(rows, corpus)
    check_coverage(report, PROFILES[profile])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qa", type=Path, default=DEFAULT_QA, help="QA set, JSON lines")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus root (doc ids are relative to it)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument(
        "--profile", choices=sorted(PROFILES), default="sample", help="minimum counts: sample set or calibration set"
    )
    args = parser.parse_args(argv)
    try:
        report = validate(args.qa, args.corpus, profile=args.profile)
    except (RagError, OSError) as exc:
        print(f"cannot load the corpus or QA file: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        for error in report.errors:
            print(f"ERROR {error}")
        print(f"{report.rows} rows, {len(report.documents)} documents: {report.documents}")
        for name, values in report.counts.items():
            print(f"{name}: {values}")
        print("OK" if report.ok else f"FAILED with {len(report.errors)} problem(s)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
