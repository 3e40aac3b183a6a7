"""Background ingestion started over HTTP: one job at a time per process, state persisted under data_dir/jobs."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from api.problems import ApiError
from ingest.pipeline import IngestionPipeline
from rag.errors import RagError
from rag.settings import Settings

log = logging.getLogger("rag.api")
JobState = Literal["queued", "running", "succeeded", "failed"]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Job(BaseModel):
    id: str
    state: JobState
    paths: list[str]
    collection: str
    prune: bool
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    summary: dict[str, Any] | None = None
    error: dict[str, str] | None = None


def allowed_path(raw: str, roots: list[Path]) -> Path:
    """Resolve ``raw`` (following symlinks) and require it to sit inside one of ``roots``."""
    if not roots:
        raise ApiError(403, "forbidden_path", "ingestion over HTTP is disabled; set RAG_INGEST_ROOTS to allowed roots")
    if "\x00" in raw:
        raise ApiError(422, "invalid_input", "path contains a NUL byte")
    candidate = Path(raw)
    resolved_roots = [root.resolve() for root in roots]
    if not candidate.is_absolute():
        candidate = resolved_roots[0] / candidate
    try:  # a symlink loop or an over-long name is the caller's mistake, not a server error
        resolved = candidate.resolve()
        inside = any(resolved == root or resolved.is_relative_to(root) for root in resolved_roots)
        exists = inside and resolved.exists()
    except (OSError, RuntimeError) as exc:
        reason = f"path {raw[:200]!r} cannot be resolved ({type(exc).__name__})"
        raise ApiError(422, "invalid_input", reason) from exc
    if not inside:
        raise ApiError(403, "forbidden_path", f"{raw!r} is outside the allowed ingestion roots")
    if not exists:
        raise ApiError(404, "source_not_found", f"{raw!r} does not exist under the ingestion roots")
    return resolved


class JobRunner:
    def __init__(self, settings: Settings, make_pipeline: Callable[[str], IngestionPipeline]) -> None:
        self.settings = settings
        self.make_pipeline = make_pipeline
        self.directory = settings.data_dir / "jobs"
        self._lock = threading.Lock()
        self._running: threading.Thread | None = None

    def _save(self, job: Job) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{job.id}.tmp"
        tmp.write_text(job.model_dump_json())
        tmp.replace(self.directory / f"{job.id}.json")

    def get(self, job_id: str) -> Job:
        if not job_id.isalnum() or len(job_id) > 64:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        path = self.directory / f"{job_id}.json"
        if not path.exists():
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return Job.model_validate_json(path.read_text())

    def submit(self, paths: list[Path], collection: str, prune: bool) -> Job:
        with self._lock:
            if self._running is not None and self._running.is_alive():
                raise ApiError(409, "ingestion_running", "an ingestion job is already running; poll it and retry")
            job = Job(
                id=uuid.uuid4().hex,
                state="queued",
                paths=[str(p) for p in paths],
                collection=collection,
                prune=prune,
                created_at=now(),
            )
            self._save(job)
            self._running = threading.Thread(target=self._run, args=(job, paths), name=f"ingest-{job.id}", daemon=True)
            self._running.start()
            return job

    def wait(self, timeout: float | None = None) -> None:
        thread = self._running
        if thread is not None:
            thread.join(timeout)

    def _run(self, job: Job, paths: list[Path]) -> None:
        job.state, job.started_at = "running", now()
        self._save(job)
        try:
            summary = self.make_pipeline(job.collection).run(paths, prune=job.prune)
            job.summary = summary.model_dump(exclude={"report"})
            job.state = "succeeded"
        except RagError as exc:
            job.state, job.error = "failed", {"code": exc.code, "detail": str(exc)}
        except Exception as exc:  # the job must end in a state, whatever happened
            log.exception("ingestion job failed", extra={"job_id": job.id})
            job.state, job.error = "failed", {"code": "internal_error", "detail": f"{type(exc).__name__}: {exc}"}
        job.finished_at = now()
        self._save(job)
        log.info("ingestion job %s", job.state, extra={"job_id": job.id})
