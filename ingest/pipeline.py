"""Incremental sync of sources into one collection: skip unchanged, replace changed, prune removed.

Crash safety: chunk ids are deterministic and written with upsert, the manifest is saved atomically after every
batch, and a ``dirty`` flag marks a run in progress. A run that finds the flag (or a store whose count disagrees
with the manifest) reconciles: it re-processes documents with missing chunks, reuses embeddings already stored,
and deletes chunks no document references. So a kill -9 at any point leaves nothing that a rerun cannot fix,
and nothing is embedded twice.
"""

from __future__ import annotations

import fcntl
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.loaders import SourceFile, discover, hash_file, iter_jsonl, load_file
from ingest.report import FailedDocument, IngestionSummary, build_report, write_report
from rag.errors import DocumentLoadError, RagError, SourceNotFoundError
from rag.hashing import sha256_json
from rag.indexing.chunking import Chunker, ChunkerConfig
from rag.indexing.documents import Chunk, Document
from rag.indexing.embedding import Embedder
from rag.indexing.manifest import DocumentRecord, Manifest
from rag.indexing.sparse import SparseIndex
from rag.indexing.store import VectorStore
from rag.settings import Settings

log = logging.getLogger(__name__)


class IngestionLockedError(RagError):
    code = "ingestion_running"


@dataclass
class Candidate:
    """A document found in a source, before parsing (files) or already parsed (JSONL records)."""

    doc_id: str
    content_hash: str
    root: str
    file: SourceFile | None = None
    document: Document | None = None


@dataclass
class RunCounters:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    orphans_deleted: int = 0
    docs_with_missing_chunks: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"load": 0.0, "embed": 0.0, "store": 0.0})


class RunPlan:
    """What this run writes (model and chunker identity) and which stored vectors it may reuse.

    A stored vector is reused only when it is known to come from the current weights: it belongs to a document
    recorded with those weights, or it is an unreferenced leftover of an interrupted run that wrote them.
    """

    def __init__(self, manifest: Manifest, embedding: dict[str, Any], chunker: dict[str, Any]) -> None:
        self.embedding = embedding
        self.chunker = chunker
        self.chunker_hash = sha256_json(chunker)[:16]
        weights = embedding["weights_sha256"]
        self.leftovers_reusable = (manifest.embedding or {}).get("weights_sha256") == weights
        self.referenced: set[str] = set()
        self.reusable_ids: set[str] = set()
        self.hash_to_id: dict[str, str] = {}
        for record in manifest.documents.values():
            self.referenced.update(record.chunk_ids)
            if record.embedding_sha256 == weights:
                self.remember(record)

    @classmethod
    def from_manifest(cls, manifest: Manifest, embedder: Embedder, config: ChunkerConfig) -> RunPlan:
        return cls(manifest, embedder.to_dict(), config.to_dict())

    def record_is_current(self, record: DocumentRecord) -> bool:
        return (
            record.embedding_sha256 == self.embedding["weights_sha256"]
            and record.chunker_hash == self.chunker_hash
        )

    def remember(self, record: DocumentRecord) -> None:
        self.referenced.update(record.chunk_ids)
        self.reusable_ids.update(record.chunk_ids)
        self.hash_to_id.update(zip(record.chunk_hashes, record.chunk_ids, strict=True))

    def reusable_sources(self, chunk: Chunk) -> list[str]:
        """Stored chunk ids whose vector can stand in for ``chunk``, best first."""
        sources = []
        if chunk.chunk_id in self.reusable_ids or (
            chunk.chunk_id not in self.referenced and self.leftovers_reusable
        ):
            sources.append(chunk.chunk_id)
        same_content = self.hash_to_id.get(chunk.chunk_hash)
        if same_content and same_content != chunk.chunk_id:
            sources.append(same_content)
        return sources


@contextmanager
def collection_lock(settings: Settings, collection: str) -> Iterator[None]:
    lock_dir = settings.data_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{collection}.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise IngestionLockedError(
                f"another ingestion into collection {collection!r} is running",
                hint="wait for it to finish; one writer per collection",
            ) from exc
        yield


class IngestionPipeline:
    """Loads, chunks, embeds and writes documents; see the module docstring for the consistency rules."""

    def __init__(
        self,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        store: VectorStore | None = None,
        progress: bool | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = embedder or Embedder(settings)
        self.store = store or VectorStore(settings)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.chunker_config = ChunkerConfig(
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
            embed_titles=settings.embed_titles,
            embed_sections=settings.embed_sections,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.store.name,
            "chunker": self.chunker_config.to_dict(),
            "embedding_model": str(self.embedder.model_dir),
            "batch_chunks": self.settings.ingest_batch_chunks,
        }

    def run(self, sources: Sequence[Path], *, prune: bool = True) -> IngestionSummary:
        missing = [str(s) for s in sources if not Path(s).exists()]
        if missing:
            raise SourceNotFoundError(f"source not found: {', '.join(missing)}", hint="check the path")
        if not sources:
            raise SourceNotFoundError("no source given", hint="pass a directory, a file or a .jsonl corpus")
        with collection_lock(self.settings, self.store.name):
            return self._run([Path(s) for s in sources], prune)

    def _run(self, sources: list[Path], prune: bool) -> IngestionSummary:
        started = time.perf_counter()
        manifest = Manifest.load(self.settings.manifest_dir, self.store.name)
        previous_version = manifest.index_version
        plan = RunPlan.from_manifest(manifest, self.embedder, self.chunker_config)

        failed: list[FailedDocument] = []
        ignored: list[str] = []
        candidates, prunable_roots = self._scan(sources, failed, ignored)
        counters = RunCounters()

        orphan_ids, stale_docs = self._reconcile(manifest)
        counters.docs_with_missing_chunks = len(stale_docs)

        todo = self._changed(candidates, manifest, plan, stale_docs, counters)
        parsed: list[Document] = []
        chunker = self._process(todo, manifest, plan, counters, failed, parsed) if todo else None

        if prune:
            self._prune(manifest, prunable_roots, {c.doc_id for c in candidates}, plan, counters)
        if orphan_ids:
            leftovers = sorted(orphan_ids - manifest.chunk_ids())
            if leftovers:
                self._mark_dirty(manifest, plan)
                self.store.delete(leftovers)
                counters.orphans_deleted = len(leftovers)

        if manifest.dirty or (manifest.index_version is None and manifest.documents):
            manifest.seal()
            manifest.save(self.settings.manifest_dir)
        self._sync_sparse_index(manifest)

        summary = self._summary(sources, candidates, failed, ignored, counters, manifest, previous_version, started)
        report = build_report(
            summary,
            manifest,
            parsed,
            chunker.stats if chunker else None,
            (manifest.embedding or {}).get("max_tokens"),
            self.settings.near_duplicate_threshold,
        )
        summary.report_path = str(write_report(report, self.settings.reports_dir))
        summary.report = report
        return summary

    # --- steps

    def _changed(
        self,
        candidates: list[Candidate],
        manifest: Manifest,
        plan: RunPlan,
        stale_docs: set[str],
        counters: RunCounters,
    ) -> list[Candidate]:
        """Documents to (re)process: new, edited, moved to another root, embedded by an older plan, or repaired."""
        todo: list[Candidate] = []
        for candidate in candidates:
            record = manifest.documents.get(candidate.doc_id)
            if (
                record is not None
                and record.content_hash == candidate.content_hash
                and record.source_root == candidate.root
                and plan.record_is_current(record)
                and candidate.doc_id not in stale_docs
            ):
                counters.unchanged += 1
            else:
                todo.append(candidate)
        if todo and any(not plan.record_is_current(r) for r in manifest.documents.values()):
            log.warning(
                "embedding model or chunker changed since the last run: those documents are re-embedded"
            )
        return todo

    def _summary(
        self,
        sources: list[Path],
        candidates: list[Candidate],
        failed: list[FailedDocument],
        ignored: list[str],
        counters: RunCounters,
        manifest: Manifest,
        previous_version: str | None,
        started: float,
    ) -> IngestionSummary:
        """The run's counts and speeds (the report is attached by the caller)."""
        seconds = time.perf_counter() - started
        return IngestionSummary(
            collection=self.store.name,
            sources=[str(s) for s in sources],
            documents_seen=len(candidates) + len([f for f in failed if f.stage == "scan"]),
            documents_added=counters.added,
            documents_updated=counters.updated,
            documents_unchanged=counters.unchanged,
            documents_deleted=counters.deleted,
            documents_failed=failed,
            files_ignored=ignored,
            chunks_written=counters.chunks_written,
            chunks_deleted=counters.chunks_deleted + counters.orphans_deleted,
            chunks_embedded=counters.chunks_embedded,
            chunks_reused=counters.chunks_reused,
            orphans_deleted=counters.orphans_deleted,
            documents_repaired=counters.docs_with_missing_chunks,
            seconds=round(seconds, 3),
            seconds_by_stage={k: round(v, 3) for k, v in counters.seconds.items()},
            chunks_per_second=round(counters.chunks_written / seconds, 2) if counters.chunks_written else 0.0,
            embedded_chunks_per_second=(
                round(counters.chunks_embedded / counters.seconds["embed"], 2)
                if counters.chunks_embedded
                else 0.0
            ),
            index_version=manifest.index_version,
            previous_index_version=previous_version,
            total_documents=len(manifest.documents),
            total_chunks=manifest.chunk_count,
        )

    def _scan(
        self, sources: list[Path], failed: list[FailedDocument], ignored: list[str]
    ) -> tuple[list[Candidate], set[str]]:
        """Find documents and hash them; directories and JSONL files are prunable roots."""
        candidates: dict[str, Candidate] = {}
        prunable: set[str] = set()

        def add(candidate: Candidate, where: str) -> None:
            if candidate.doc_id in candidates:
                failed.append(
                    FailedDocument(
                        path=where, reason=f"duplicate document id {candidate.doc_id!r}", stage="scan"
                    )
                )
                return
            candidates[candidate.doc_id] = candidate

        for source in sources:
            if source.is_file() and source.suffix.lower() == ".jsonl":
                prunable.add(str(source.resolve()))
                try:
                    records = list(iter_jsonl(source, self.settings.max_file_bytes))
                except DocumentLoadError as exc:
                    failed.append(FailedDocument(path=str(source), reason=str(exc), stage="scan"))
                    continue
                for record in records:
                    if record.document is None:
                        failed.append(
                            FailedDocument(path=str(source), reason=record.error or "", stage="scan")
                        )
                        continue
                    doc = record.document
                    add(Candidate(doc.doc_id, doc.content_hash, doc.source_root, document=doc), doc.source)
                continue
            files, skipped = discover(source)
            ignored.extend(skipped)
            if source.is_dir():
                prunable.add(str(source.resolve()))
            elif files and files[0].format not in {"txt", "md", "html", "pdf"}:
                failed.append(
                    FailedDocument(
                        path=str(source),
                        reason=f"unsupported file type {source.suffix or '(none)'}; use .txt .md .html .pdf .jsonl",
                        stage="scan",
                    )
                )
                continue
            for file in files:
                if file.format == "jsonl":
                    ignored.append(f"{file.path} (pass .jsonl corpora as their own source)")
                    continue
                try:
                    raw_hash = hash_file(file.path, self.settings.max_file_bytes)
                except DocumentLoadError as exc:
                    failed.append(FailedDocument(path=str(file.path), reason=str(exc), stage="scan"))
                    continue
                add(Candidate(file.doc_id, raw_hash, str(file.root), file=file), str(file.path))
        return list(candidates.values()), prunable

    def _reconcile(self, manifest: Manifest) -> tuple[set[str], set[str]]:
        """After an interrupted run: store ids nobody references, and documents whose chunks went missing."""
        if not manifest.dirty and self.store.count() == manifest.chunk_count:
            return set(), set()
        log.warning(
            "the last run of %r did not finish cleanly: reconciling store and manifest", self.store.name
        )
        store_ids = self.store.all_ids()
        orphans = store_ids - manifest.chunk_ids()
        stale = {
            doc_id
            for doc_id, record in manifest.documents.items()
            if any(cid not in store_ids for cid in record.chunk_ids)
        }
        if stale or orphans:
            manifest.dirty = True  # the index version must be re-sealed at the end
        return orphans, stale

    def _mark_dirty(self, manifest: Manifest, plan: RunPlan) -> None:
        """Before the first store write of a run: record the run and the identity being written."""
        if manifest.dirty and manifest.embedding == plan.embedding and manifest.chunker == plan.chunker:
            return
        manifest.dirty = True
        manifest.embedding = plan.embedding
        manifest.chunker = plan.chunker
        manifest.save(self.settings.manifest_dir)

    def _process(
        self,
        todo: list[Candidate],
        manifest: Manifest,
        plan: RunPlan,
        counters: RunCounters,
        failed: list[FailedDocument],
        parsed: list[Document],
    ) -> Chunker | None:
        """Parse, chunk, embed and write ``todo``; the encoder is loaded only once a document parses."""
        chunker: Chunker | None = None
        bar = _progress_bar(len(todo), self.progress)
        batch: list[tuple[Document, list[Chunk]]] = []
        for candidate in todo:
            tick = time.perf_counter()
            try:
                document = candidate.document or load_file(candidate.file, self.settings.max_file_bytes)  # type: ignore[arg-type]
                if chunker is None:
                    loading = time.perf_counter()
                    _ = self.embedder.model
                    counters.seconds["model_load"] = time.perf_counter() - loading
                    tick += counters.seconds["model_load"]
                    chunker = Chunker(
                        self.chunker_config, self.embedder.count_tokens, self.embedder.max_tokens
                    )
                chunks = chunker.split(document)
                if not chunks:
                    raise DocumentLoadError(f"{document.source}: no text to index")
            except DocumentLoadError as exc:
                failed.append(FailedDocument(path=_where(candidate), reason=str(exc), stage="load"))
                bar.update(1)
                continue
            finally:
                counters.seconds["load"] += time.perf_counter() - tick
            parsed.append(document)
            batch.append((document, chunks))
            if sum(len(c) for _, c in batch) >= self.settings.ingest_batch_chunks:
                self._flush(batch, manifest, plan, counters)
                bar.update(len(batch))
                bar.set_postfix(chunks=counters.chunks_written)
                batch = []
        if batch:
            self._flush(batch, manifest, plan, counters)
            bar.update(len(batch))
        bar.close()
        return chunker

    def _flush(
        self,
        batch: list[tuple[Document, list[Chunk]]],
        manifest: Manifest,
        plan: RunPlan,
        counters: RunCounters,
    ) -> None:
        chunks = [chunk for _, doc_chunks in batch for chunk in doc_chunks]
        self._mark_dirty(manifest, plan)

        tick = time.perf_counter()
        sources = {c.chunk_id: plan.reusable_sources(c) for c in chunks}
        wanted = sorted({src for options in sources.values() for src in options})
        stored = self.store.embeddings_for(wanted) if wanted else {}
        reused = {
            cid: stored[found]
            for cid, options in sources.items()
            if (found := next((src for src in options if src in stored), None)) is not None
        }
        counters.seconds["store"] += time.perf_counter() - tick

        to_embed = [c for c in chunks if c.chunk_id not in reused]
        tick = time.perf_counter()
        fresh = self.embedder.embed([c.embed_text for c in to_embed])
        counters.seconds["embed"] += time.perf_counter() - tick
        vectors = dict(reused)
        vectors.update({c.chunk_id: vector for c, vector in zip(to_embed, fresh, strict=True)})

        tick = time.perf_counter()
        by_doc = {doc.doc_id: doc for doc, _ in batch}
        self.store.upsert(
            [c.chunk_id for c in chunks],
            [vectors[c.chunk_id] for c in chunks],
            [c.text for c in chunks],
            [c.metadata(by_doc[c.doc_id]) for c in chunks],
        )
        stale: list[str] = []
        for document, doc_chunks in batch:
            old = manifest.documents.get(document.doc_id)
            new_ids = [c.chunk_id for c in doc_chunks]
            if old is None:
                counters.added += 1
            else:
                counters.updated += 1
                stale.extend(sorted(set(old.chunk_ids) - set(new_ids)))
            record = DocumentRecord(
                doc_id=document.doc_id,
                source=document.source,
                source_root=document.source_root,
                title=document.title,
                format=document.format,
                content_hash=document.content_hash,
                chunk_ids=new_ids,
                chunk_hashes=[c.chunk_hash for c in doc_chunks],
                chunk_chars=[len(c.text) for c in doc_chunks],
                chunk_tokens=[c.n_tokens for c in doc_chunks],
                n_chars=len(document.text),
                embedding_sha256=plan.embedding["weights_sha256"],
                chunker_hash=plan.chunker_hash,
            )
            manifest.documents[document.doc_id] = record
            plan.remember(record)
        if stale:
            self.store.delete(stale)
        manifest.save(self.settings.manifest_dir)
        counters.seconds["store"] += time.perf_counter() - tick
        counters.chunks_written += len(chunks)
        counters.chunks_deleted += len(stale)
        counters.chunks_embedded += len(to_embed)
        counters.chunks_reused += len(reused)

    def _prune(
        self, manifest: Manifest, roots: set[str], seen: set[str], plan: RunPlan, counters: RunCounters
    ) -> None:
        gone = [
            doc_id
            for doc_id, record in manifest.documents.items()
            if record.source_root in roots and doc_id not in seen
        ]
        if not gone:
            return
        self._mark_dirty(manifest, plan)
        ids = [cid for doc_id in gone for cid in manifest.documents[doc_id].chunk_ids]
        tick = time.perf_counter()
        self.store.delete(ids)
        for doc_id in gone:
            del manifest.documents[doc_id]
        manifest.save(self.settings.manifest_dir)
        counters.seconds["store"] += time.perf_counter() - tick
        counters.deleted += len(gone)
        counters.chunks_deleted += len(ids)

    def _sync_sparse_index(self, manifest: Manifest) -> None:
        directory = SparseIndex.directory(self.settings.bm25_dir, self.store.name)
        if manifest.index_version is None or SparseIndex.stored_version(directory) == manifest.index_version:
            return
        SparseIndex.build(
            self.store.iter_chunks(), directory, manifest.index_version, with_title=self.settings.embed_titles
        )


def _where(candidate: Candidate) -> str:
    if candidate.file is not None:
        return str(candidate.file.path)
    return candidate.document.source if candidate.document else candidate.doc_id


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="doc", desc="ingest", disable=not enabled, dynamic_ncols=True, leave=False)
