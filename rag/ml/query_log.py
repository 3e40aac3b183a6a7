"""The query log's one contract: ``QueryLogRecord`` is what the API appends and what `rag drift` reads.

The API (``api.observability.QueryLogWriter``) builds one record per answered query and writes it with
``model_dump_json`` as one JSON line of ``settings.query_log_path``; ``read_query_log`` parses those lines back
into the same model. Reading ignores unknown fields, so an older reader still reads a newer log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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
