"""Background ingestion: start a job over paths under the configured roots, then poll it (API key required)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import GUARD_PROBLEMS, KEY_PROBLEMS, AdminAccess, check_collection
from api.jobs import Job, allowed_path
from api.problems import problem_responses
from api.schemas import IngestRequest, JobAccepted

INGEST_PROBLEMS = problem_responses(
    *GUARD_PROBLEMS, *KEY_PROBLEMS, "forbidden_path", "invalid_input", "source_not_found", "ingestion_running"
)
JOB_PROBLEMS = problem_responses("validation_error", "rate_limited", "not_ready", *KEY_PROBLEMS, "not_found")

router = APIRouter(tags=["admin"])


@router.post("/v1/ingest", status_code=202, response_model=JobAccepted, responses=INGEST_PROBLEMS)
async def ingest(body: IngestRequest, request: Request, services: AdminAccess) -> JobAccepted:
    """Start a background ingestion of paths under the configured roots (API key required)."""
    check_collection(request, body.collection or services.settings.collection)
    paths = [allowed_path(raw, services.settings.ingest_roots) for raw in body.paths]
    job = services.jobs.submit(paths, body.collection or services.settings.collection, body.prune)
    return JobAccepted(job_id=job.id, state=job.state, status_url=f"/v1/jobs/{job.id}")


@router.get("/v1/jobs/{job_id}", response_model=Job, responses=JOB_PROBLEMS)
async def job_status(job_id: str, request: Request, services: AdminAccess) -> Job:
    """State and summary of an ingestion job (API key required)."""
    job = services.jobs.get(job_id)
    check_collection(request, job.collection)
    return job
