"""User feedback on an answer: ``POST /v1/feedback`` stores a thumbs up/down next to the query log.

The rating is joined to the answer by its ``request_id`` (the X-Request-ID the answer carried). The comment is
screened like a question (normalised, bounded, prompt-injection rejected) and kept in clear only with
``RAG_LOG_QUESTIONS=text``. `rag drift` and ``/metrics`` show the negative rate; `rag eval --from-feedback`
turns rated questions into a labelled set.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, field_validator

from api.deps import GUARD_PROBLEMS, KEY_PROBLEMS, QueryAccess
from api.problems import problem_responses
from rag.answering.sanitize import normalise, sanitize_question
from rag.errors import InvalidInputError, NotFoundError
from rag.hashing import sha256_text
from rag.ml.query_log import FeedbackLog, FeedbackRecord, feedback_log_path, query_log_has_request
from rag.settings import Settings

log = logging.getLogger("rag.api")

FEEDBACK_PROBLEMS = problem_responses(*GUARD_PROBLEMS, *KEY_PROBLEMS, "invalid_input", "unsafe_input", "not_found")
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # what api.middleware.request_id_for accepts and echoes

router = APIRouter(tags=["feedback"])


class FeedbackRequest(BaseModel):
    request_id: str = Field(
        min_length=1, max_length=64, pattern=REQUEST_ID_PATTERN, description="The X-Request-ID of the answer rated."
    )
    rating: Literal["up", "down", 1, -1] = Field(description='"up" / 1 (right answer) or "down" / -1 (wrong).')
    comment: str | None = Field(
        None, max_length=10000, description="Optional free text (at most RAG_FEEDBACK_MAX_COMMENT_CHARS)."
    )

    @field_validator("rating", mode="before")
    @classmethod
    def _rating_words(cls, value: object) -> object:
        if isinstance(value, bool):  # JSON true/false would otherwise pass as 1/0
            raise ValueError("rating must be 'up', 'down', 1 or -1")
        return value

    def normalised_rating(self) -> Literal["up", "down"]:
        return "up" if self.rating in ("up", 1) else "down"


class FeedbackStored(BaseModel):
    request_id: str
    rating: Literal["up", "down"]
    comment_stored: Literal["text", "hash", "none"] = Field(description="How the comment was kept.")


def build_record(settings: Settings, body: FeedbackRequest) -> FeedbackRecord:
    """Validate the comment like a question and keep it as RAG_LOG_QUESTIONS says."""
    comment = None
    if body.comment is not None and body.comment.strip():
        length = len(normalise(body.comment))
        if length > settings.feedback_max_comment_chars:
            raise InvalidInputError(
                f"comment is {length} characters, over the limit of {settings.feedback_max_comment_chars}",
                hint="shorten it or raise RAG_FEEDBACK_MAX_COMMENT_CHARS",
            )
        try:
            comment = sanitize_question(body.comment, settings.feedback_max_comment_chars)
        except InvalidInputError as exc:  # reword "question" errors for the comment (UnsafeInputError kept)
            raise type(exc)(str(exc).replace("question", "comment", 1)) from None
    return FeedbackRecord(
        ts=datetime.now(UTC),
        request_id=body.request_id,
        rating=body.normalised_rating(),
        comment=comment if settings.log_questions == "text" else None,
        comment_hash=sha256_text(comment) if comment and settings.log_questions != "none" else None,
        comment_chars=len(comment or ""),
    )


def store(settings: Settings, record: FeedbackRecord) -> None:
    """404 when the query log can tell the request was never answered; then append to the bounded log."""
    if settings.log_questions != "none" and not query_log_has_request(settings.query_log_path, record.request_id):
        raise NotFoundError(
            f"no answer with request_id {record.request_id!r} in the query log",
            hint="send the X-Request-ID header value (or request_id field) of an answer from this service",
        )
    FeedbackLog(feedback_log_path(settings.query_log_path), settings.feedback_log_max_bytes).append(record)


@router.post("/v1/feedback", status_code=201, response_model=FeedbackStored, responses=FEEDBACK_PROBLEMS)
async def feedback(request: Request, body: FeedbackRequest, services: QueryAccess) -> FeedbackStored:
    """Rate an answer (thumbs up/down, optional comment); stored beside the query log."""
    settings = services.settings
    record = build_record(settings, body)
    await run_in_threadpool(store, settings, record)
    services.metrics.observe_feedback(record.rating)
    log.info("feedback %s stored for request %s", record.rating, record.request_id)
    kept = "none" if record.comment_chars == 0 else ("text" if record.comment else "hash")
    if kept == "hash" and record.comment_hash is None:
        kept = "none"
    return FeedbackStored(request_id=record.request_id, rating=record.rating, comment_stored=kept)
