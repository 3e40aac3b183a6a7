"""The data-centric ingestion report: what went in, what did not, and what looks wrong with the corpus."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from rag.indexing.chunking import ChunkingStats
from rag.indexing.documents import Document
from rag.indexing.manifest import Manifest

MAX_LISTED = 50


class FailedDocument(BaseModel):
    path: str
    reason: str
    stage: str = Field("load", description="scan (hashing/reading) or load (parsing/chunking)")


class IngestionSummary(BaseModel):
    """The ``--json`` output of ``rag ingest``."""

    collection: str
    sources: list[str]
    documents_seen: int
    documents_added: int
    documents_updated: int
    documents_unchanged: int
    documents_deleted: int
    documents_failed: list[FailedDocument]
    files_ignored: list[str]
    chunks_written: int
    chunks_deleted: int
    chunks_embedded: int
    chunks_reused: int
    orphans_deleted: int
    documents_repaired: int
    seconds: float
    seconds_by_stage: dict[str, float]
    chunks_per_second: float
    embedded_chunks_per_second: float
    index_version: str | None
    previous_index_version: str | None
    total_documents: int
    total_chunks: int
    report_path: str | None = None
    report: dict[str, Any] | None = None

    @property
    def changed(self) -> bool:
        return self.index_version != self.previous_index_version


def distribution(values: list[int]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    array = np.asarray(values)
    return {
        "count": len(values),
        "min": int(array.min()),
        "p10": float(np.percentile(array, 10)),
        "p50": float(np.percentile(array, 50)),
        "p90": float(np.percentile(array, 90)),
        "max": int(array.max()),
        "mean": round(float(array.mean()), 1),
    }


def exact_duplicates(manifest: Manifest) -> list[list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for doc_id, record in manifest.documents.items():
        groups[record.content_hash].append(doc_id)
    return sorted(sorted(ids) for ids in groups.values() if len(ids) > 1)


def near_duplicates(documents: list[Document], threshold: float) -> list[dict[str, Any]]:
    """Pairs of documents read in this run whose word 3-gram shingles have cosine >= threshold."""
    if len(documents) < 2:
        return []
    from sklearn.feature_extraction.text import HashingVectorizer

    vectorizer = HashingVectorizer(ngram_range=(3, 3), binary=True, norm="l2", alternate_sign=False)
    matrix = vectorizer.transform([d.text for d in documents]).tocsr()
    pairs: list[dict[str, Any]] = []
    block = 512
    for start in range(0, matrix.shape[0], block):
        sims = (matrix[start : start + block] @ matrix.T).tocoo()
        for row, col, value in zip(sims.row, sims.col, sims.data, strict=True):
            i = start + int(row)
            j = int(col)
            if j <= i or value < threshold:
                continue
            a, b = documents[i], documents[j]
            if a.content_hash == b.content_hash:
                continue
            pairs.append({"a": a.doc_id, "b": b.doc_id, "similarity": round(float(value), 3)})
    return sorted(pairs, key=lambda p: -p["similarity"])


def build_report(
    summary: IngestionSummary,
    manifest: Manifest,
    parsed: list[Document],
    stats: ChunkingStats | None,
    max_tokens: int | None,
    near_threshold: float,
) -> dict[str, Any]:
    chars = [n for record in manifest.documents.values() for n in record.chunk_chars]
    tokens = [n for record in manifest.documents.values() for n in record.chunk_tokens]
    over_limit = sum(1 for n in tokens if max_tokens and n > max_tokens)
    exact = exact_duplicates(manifest)
    near = near_duplicates(parsed, near_threshold)
    formats: dict[str, int] = defaultdict(int)
    for record in manifest.documents.values():
        formats[record.format] += 1
    warnings = []
    if summary.documents_failed:
        warnings.append(
            f"{len(summary.documents_failed)} document(s) could not be ingested; see documents_failed"
        )
    if exact:
        warnings.append(f"{len(exact)} group(s) of exact duplicate documents")
    if near:
        warnings.append(f"{len(near)} near-duplicate pair(s) among documents read in this run")
    if over_limit:
        warnings.append(
            f"{over_limit} chunk(s) exceed the encoder's {max_tokens}-token limit and are truncated"
        )
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "collection": summary.collection,
        "index_version": summary.index_version,
        "run": summary.model_dump(exclude={"report", "report_path"}),
        "corpus": {
            "documents": len(manifest.documents),
            "chunks": len(chars),
            "documents_by_format": dict(formats),
            "chunk_chars": distribution(chars),
            "chunk_tokens": distribution(tokens),
            "encoder_max_tokens": max_tokens,
            "chunks_over_token_limit": over_limit,
            "exact_duplicate_groups": exact[:MAX_LISTED],
            "exact_duplicate_group_count": len(exact),
        },
        "this_run": {
            "documents_read": len(parsed),
            "empty_or_unreadable": [f.model_dump() for f in summary.documents_failed][:MAX_LISTED],
            "near_duplicate_pairs": near[:MAX_LISTED],
            "near_duplicate_pair_count": len(near),
            "near_duplicate_threshold": near_threshold,
            "chunks_resplit_for_token_limit": stats.resplit_for_token_limit if stats else 0,
            "chunks_over_token_limit": stats.over_token_limit if stats else 0,
        },
        "warnings": warnings,
    }


def write_report(report: dict[str, Any], reports_dir: Path) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = reports_dir / f"ingest-{report['collection']}-{stamp}.json"
    text = json.dumps(report, indent=2, default=str)
    path.write_text(text)
    (reports_dir / f"ingest-{report['collection']}-latest.json").write_text(text)
    return path


def render_text(summary: IngestionSummary) -> str:
    """A short human summary for the terminal."""
    report = summary.report or {}
    corpus = report.get("corpus", {})
    lines = [
        f"collection {summary.collection}: index version {summary.index_version}"
        + (" (changed)" if summary.changed else " (unchanged)"),
        f"documents: {summary.documents_seen} seen, {summary.documents_added} added, {summary.documents_updated} "
        f"updated, {summary.documents_unchanged} unchanged, {summary.documents_deleted} deleted, "
        f"{len(summary.documents_failed)} failed",
        f"chunks: {summary.chunks_written} written ({summary.chunks_embedded} embedded, {summary.chunks_reused} "
        f"reused), {summary.chunks_deleted} deleted; total {summary.total_chunks} in {summary.total_documents} docs",
        f"time: {summary.seconds:.2f}s ({', '.join(f'{k} {v:.2f}s' for k, v in summary.seconds_by_stage.items())})"
        + (f", {summary.chunks_per_second} chunks/s" if summary.chunks_written else ""),
    ]
    if corpus.get("chunk_chars", {}).get("count"):
        c, t = corpus["chunk_chars"], corpus["chunk_tokens"]
        lines.append(
            f"chunk length: chars p50 {c['p50']:.0f} / p90 {c['p90']:.0f} / max {c['max']}; "
            f"tokens p50 {t['p50']:.0f} / max {t['max']} (limit {corpus.get('encoder_max_tokens')})"
        )
    for failure in summary.documents_failed[:20]:
        lines.append(f"  failed: {failure.reason}")
    if len(summary.documents_failed) > 20:
        lines.append(f"  ... and {len(summary.documents_failed) - 20} more (see the JSON report)")
    for warning in report.get("warnings", []):
        lines.append(f"warning: {warning}")
    if summary.report_path:
        lines.append(f"report: {summary.report_path}")
    return "\n".join(lines)
