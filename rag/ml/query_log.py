"""The query log's one contract: ``QueryLogRecord`` is what the API appends and what `rag drift` reads.

The API (``api.observability.QueryLogWriter``) builds one record per answered query and writes it with
``model_dump_json`` as one JSON line of ``settings.query_log_path``; ``read_query_log`` parses those lines back
into the same model. Reading ignores unknown fields, so an older reader still reads a newer log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from rag.errors import InvalidInputError
from rag.settings import RetrievalMode

log = logging.getLogger(__name__)


class LatencyMs(BaseModel):
    model_config = ConfigDict(extra="allow")

    retrieval: float | None = None
    generation: float | None = None
    total: float | None = None


class QueryVersions(BaseModel):
    """What produced the answer; compared between drift windows to tell a deployment from drift."""

    model_config = ConfigDict(extra="allow")

    index: str | None = None
    embedding_model: str | None = None
    generator: str | None = None
    prompt: str | None = None
    config: str | None = None


class QueryLogRecord(BaseModel):
    """One line of ``settings.query_log_path``: one answered query (or abstention)."""

    model_config = ConfigDict(extra="ignore")

    ts: datetime = Field(description="When the answer was returned (UTC).")
    request_id: str
    question_hash: str = Field(description="sha256 of the question text, always logged.")
    question: str | None = Field(None, description="The question itself, only with RAG_LOG_QUESTIONS=text.")
    question_chars: int = Field(ge=0)
    mode: RetrievalMode
    top_score: float | None = Field(
        None, ge=-1.0001, le=1.0001, description="Best dense cosine similarity; None when nothing was retrieved."
    )
    abstained: bool
    abstain_reason: str | None = None
    confidence: float | None = None
    latency_ms: LatencyMs = Field(default_factory=LatencyMs)
    versions: QueryVersions = Field(default_factory=QueryVersions)
    query_embedding: list[float] | None = None

    @field_serializer("ts", when_used="json")
    def _ts_millis(self, ts: datetime) -> str:
        return ts.isoformat(timespec="milliseconds")

    def timestamp(self) -> datetime:
        return self.ts if self.ts.tzinfo else self.ts.replace(tzinfo=UTC)


@dataclass(frozen=True)
class QueryLogContents:
    """The records of one log file sorted by time, and how many lines could not be read."""

    path: Path
    records: list[QueryLogRecord]
    malformed: int


def read_query_log(path: Path) -> QueryLogContents:
    """Parse a JSON-lines query log; malformed lines are counted and skipped (a log is append-only)."""
    if not path.is_file():
        raise InvalidInputError(f"query log {path} does not exist", hint="the API writes it when queries arrive")
    records: list[QueryLogRecord] = []
    malformed = 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(QueryLogRecord.model_validate_json(line))
            except (ValueError, ValidationError) as exc:
                malformed += 1
                log.debug("query log %s line %d skipped: %s", path, number, exc)
    if not records:
        raise InvalidInputError(f"query log {path} holds no readable records ({malformed} malformed lines)")
    records.sort(key=lambda r: r.timestamp())
    return QueryLogContents(path=path, records=records, malformed=malformed)


# --- user feedback (issue 16): ``POST /v1/feedback`` appends, `rag drift` and `rag eval --from-feedback` read

FeedbackRating = Literal["up", "down"]
FEEDBACK_LOG_NAME = "feedback.jsonl"


class FeedbackRecord(BaseModel):
    """One line of the feedback log (next to the query log): a user's rating of one answered request.

    The comment is kept in clear only with ``RAG_LOG_QUESTIONS=text`` (like the question); otherwise only its
    hash and length are stored.
    """

    model_config = ConfigDict(extra="ignore")

    ts: datetime = Field(description="When the feedback arrived (UTC).")
    request_id: str = Field(min_length=1, max_length=64, description="The answer's X-Request-ID.")
    rating: FeedbackRating
    comment: str | None = Field(None, description="The comment itself, only with RAG_LOG_QUESTIONS=text.")
    comment_hash: str | None = Field(None, description="sha256 of the comment when one was sent.")
    comment_chars: int = Field(0, ge=0)

    @field_serializer("ts", when_used="json")
    def _ts_millis(self, ts: datetime) -> str:
        return ts.isoformat(timespec="milliseconds")

    def timestamp(self) -> datetime:
        return self.ts if self.ts.tzinfo else self.ts.replace(tzinfo=UTC)


def feedback_log_path(query_log_path: Path) -> Path:
    """Feedback lives beside the query log it rates (joined on ``request_id``)."""
    return query_log_path.with_name(FEEDBACK_LOG_NAME)


class FeedbackLog:
    """Append-only JSON-lines feedback log, bounded: past ``max_bytes`` the file is rotated to ``<name>.1``.

    One previous generation is kept, so the log never holds more than about twice ``max_bytes``.
    """

    def __init__(self, path: Path, max_bytes: int = 10_000_000) -> None:
        self.path = path
        self.max_bytes = max_bytes

    @property
    def rotated_path(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    def append(self, record: FeedbackRecord) -> None:
        line = (record.model_dump_json() + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.path.stat().st_size + len(line) > self.max_bytes:
                os.replace(self.path, self.rotated_path)
        except FileNotFoundError:
            pass
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def read(self) -> list[FeedbackRecord]:
        """Every readable record of both generations, oldest first (malformed lines are skipped)."""
        records: list[FeedbackRecord] = []
        for path in (self.rotated_path, self.path):
            if not path.is_file():
                continue
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    try:
                        records.append(FeedbackRecord.model_validate_json(line))
                    except (ValueError, ValidationError):
                        log.debug("feedback log %s: malformed line skipped", path)
        records.sort(key=lambda r: r.timestamp())
        return records

    def latest_by_request(self) -> dict[str, FeedbackRecord]:
        """The last rating of each request (a user may change their mind)."""
        return {record.request_id: record for record in self.read()}


def query_log_has_request(path: Path, request_id: str) -> bool:
    """Whether the query log (current file) holds ``request_id``; a substring scan, then a parse to confirm."""
    if not path.is_file():
        return False
    needle = f'"request_id":"{request_id}"'
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if needle in line:
                try:
                    if QueryLogRecord.model_validate_json(line).request_id == request_id:
                        return True
                except (ValueError, ValidationError):
                    continue
    return False


def feedback_summary(records: Sequence[QueryLogRecord], feedback: Mapping[str, FeedbackRecord]) -> dict[str, Any]:
    """Rated share and negative-feedback rate of a window of query records."""
    ratings = [feedback[r.request_id].rating for r in records if r.request_id in feedback]
    negative = sum(1 for rating in ratings if rating == "down")
    return {
        "rated": len(ratings),
        "negative": negative,
        "negative_rate": negative / len(ratings) if ratings else None,
    }
