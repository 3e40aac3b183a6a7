"""Small-to-big, measured before it is built: would lending each selected chunk the sentences of its neighbouring
chunks put more of the labelled evidence in front of the generator, and at what prompt cost?

Per answerable labelled question (the sample set and the held-out calibration set, each over its own corpus): the
product's default retrieval returns ``top_k`` chunks. The question counts as covered when every one of its
``reference_contexts`` (lower-cased, punctuation folded) lies inside one returned passage. Variant ``+N``: each
chunk extended by the last N sentences before it and the first N after it, taken from its neighbouring chunks
beyond their overlap. Reported: coverage with a bootstrap interval, the paired difference to the plain chunks, and
the characters the generator would be offered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO_ROOT, WORK_DIR, machine_info, table
from bench.retrieval_study import interval
from rag.settings import Settings

SETS = {
    "sample_qa": ("samples/qa/sample_qa.jsonl", "samples/corpus"),
    "calibration_qa": ("samples/calibration/calibration_qa.jsonl", "samples/calibration/corpus"),
}
NEIGHBOUR_SENTENCES = (1, 2)


def folded(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def lent_text(store: Any, chunk: Any, sentences: Sequence[int]) -> dict[int, str]:
    """The chunk's text with N neighbouring sentences on each side, for each N."""
    from rag.answering.generation.sentences import split_sentences

    doc_id, index = chunk.metadata.get("doc_id"), int(chunk.metadata.get("chunk_index", -1))
    start, end = int(chunk.metadata.get("char_start", 0)), int(chunk.metadata.get("char_end", 0))
    found = store.collection.get(
        where={"$and": [{"doc_id": doc_id}, {"chunk_index": {"$in": [index - 1, index + 1]}}]},
        include=["documents", "metadatas"],
    )
    before = after = ""
    for text, meta in zip(found["documents"], found["metadatas"], strict=True):
        if int(meta["chunk_index"]) == index - 1:
            before = text[: max(0, start - int(meta["char_start"]))]  # what the chunk's overlap does not repeat
        else:
            after = text[max(0, end - int(meta["char_start"])) :]
    out = {}
    for n in sentences:
        head = " ".join(split_sentences(before)[-n:]) if before.strip() else ""
        tail = " ".join(split_sentences(after)[:n]) if after.strip() else ""
        out[n] = " ".join(part for part in (head, chunk.text, tail) if part)
    return out


def run(*, seed: int = 0, work_root: Path = WORK_DIR, limit: int | None = None) -> dict[str, Any]:
    from ingest.pipeline import IngestionPipeline
    from rag.answering.retrieval import Retriever
    from rag.indexing.embedding import Embedder
    from rag.indexing.store import VectorStore

    rows: list[dict[str, Any]] = []
    embedder = None
    for name, (qa_path, corpus) in SETS.items():
        settings = Settings(data_dir=work_root / "small-to-big" / name)
        embedder = embedder or Embedder(settings)
        IngestionPipeline(settings, embedder=embedder, progress=False).run([REPO_ROOT / corpus])
        retriever, store = Retriever(settings, embedder=embedder), VectorStore(settings)
        questions = [json.loads(line) for line in (REPO_ROOT / qa_path).read_text().splitlines() if line.strip()]
        questions = [q for q in questions if q.get("answerable") and q.get("reference_contexts")][:limit]
        for question in questions:
            chunks = retriever.retrieve(question["question"]).chunks
            evidence = [folded(c) for c in question["reference_contexts"] if folded(c)]
            variants: dict[str, list[str]] = {"chunks": [c.text for c in chunks]}
            lent = [lent_text(store, c, NEIGHBOUR_SENTENCES) for c in chunks]
            variants |= {f"+{n}": [x[n] for x in lent] for n in NEIGHBOUR_SENTENCES}
            row: dict[str, Any] = {"set": name, "id": question["id"]}
            for variant, texts in variants.items():
                passages = [folded(t) for t in texts]
                row[variant] = float(all(any(e in p for p in passages) for e in evidence))
                row[f"{variant} chars"] = sum(len(t) for t in texts)
            rows.append(row)
    summary: dict[str, Any] = {}
    for subset in (*SETS, "all"):
        chosen = [r for r in rows if subset in ("all", r["set"])]
        base = np.asarray([r["chunks"] for r in chosen])
        entry: dict[str, Any] = {"questions": len(chosen)}
        for variant in ("chunks", *(f"+{n}" for n in NEIGHBOUR_SENTENCES)):
            values = np.asarray([r[variant] for r in chosen])
            entry[variant] = {"covered": interval(values, seed),
                              "chars_mean": round(float(np.mean([r[f"{variant} chars"] for r in chosen])), 1)}
            if variant != "chunks":
                entry[variant]["minus_chunks"] = interval(values - base, seed)
        summary[subset] = entry
    return {"kind": "small_to_big", "machine": machine_info(), "top_k": Settings().top_k, "summary": summary,
            "missed": [r["id"] for r in rows if not r["chunks"]]}


def render(result: dict[str, Any]) -> str:
    columns = [("context", "context"), ("covered", "evidence covered [95% CI]"), ("diff", "minus chunks"),
               ("chars", "chars offered")]
    parts = []
    for subset, entry in result["summary"].items():
        rows = []
        for variant in ("chunks", *(f"+{n}" for n in NEIGHBOUR_SENTENCES)):
            cell = entry[variant]
            mean, (low, high) = cell["covered"]["mean"], cell["covered"]["ci95"]
            diff = cell.get("minus_chunks")
            rows.append({"context": variant, "covered": f"{mean:.3f} [{low:.3f}, {high:.3f}]",
                         "diff": f"{diff['mean']:+.3f} {diff['ci95']}" if diff else "",
                         "chars": f"{cell['chars_mean']:.0f}"})
        title = f"{subset}: {entry['questions']} answerable questions, top_k {result['top_k']}"
        parts.append(table(rows, columns, title))
    parts.append(f"questions whose evidence no returned chunk holds: {result['missed']}")
    return "\n\n".join(parts)
