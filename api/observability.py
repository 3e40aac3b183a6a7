"""Prometheus metrics (one registry per app), structured JSON logs, and the query-log writer (drift input)."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rag.answering.pipeline import QueryResponse
from rag.hashing import sha256_text
from rag.ml.query_log import LatencyMs, QueryLogRecord, QueryVersions
from rag.settings import Settings

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 6, 10, 20, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rag_http_requests_total",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rag_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.retrieval = Histogram(
            "rag_retrieval_seconds", "Retrieval latency", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.generation = Histogram(
            "rag_generation_seconds", "Answer generation latency", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.answers = Counter(
            "rag_answers_total",
            "Answers by outcome (answered or abstained reason)",
            ["outcome"],
            registry=self.registry,
        )
        self.abstention_rate = Gauge(
            "rag_abstention_rate", "Share of the last 200 answers that abstained", registry=self.registry
        )
        self.queue_depth = Gauge(
            "rag_generation_queue_depth", "Requests generating or waiting for a slot", registry=self.registry
        )
        self.drift = Gauge(
            "rag_drift_detected",
            "1 when the latest drift report flagged this signal",
            ["signal"],
            registry=self.registry,
        )
        self.drift_age = Gauge(
            "rag_drift_report_age_seconds",
            "Age of the latest query-log drift report (alert when older than two scheduled runs)",
            registry=self.registry,
        )
        self.drift_available = Gauge(
            "rag_drift_report_available", "1 when a readable query-log drift report exists", registry=self.registry
        )
        self.feedback = Counter(
            "rag_feedback_total", "User feedback on answers by rating (up or down)", ["rating"], registry=self.registry
        )
        self.feedback_negative_rate = Gauge(
            "rag_feedback_negative_rate",
            "Share of the last 200 feedback ratings (this process) that were thumbs down",
            registry=self.registry,
        )
        self._recent: deque[bool] = deque(maxlen=200)
        self._recent_feedback: deque[bool] = deque(maxlen=200)
        self._lock = threading.Lock()

    def observe_feedback(self, rating: str) -> None:
        """Count one rating; the negative rate is what `rag drift` reports per window, live."""
        self.feedback.labels(rating=rating).inc()
        with self._lock:
            self._recent_feedback.append(rating == "down")
            self.feedback_negative_rate.set(sum(self._recent_feedback) / len(self._recent_feedback))

    def observe_drift(self, status: dict[str, Any]) -> None:
        """Copy the latest query-log drift verdict (from `rag drift`) into the gauges."""
        self.drift_available.set(1 if status.get("available") else 0)
        if not status.get("available"):
            return
        self.drift_age.set(float(status.get("age_seconds", 0.0)))
        self.drift.labels(signal="any").set(1 if status.get("drift") else 0)
        for signal, drifted in status.get("signals", {}).items():
            self.drift.labels(signal=signal).set(1 if drifted else 0)

    def observe_answer(self, response: QueryResponse) -> None:
        self.answers.labels(outcome=response.abstain_reason or "answered").inc()
        timings = response.timings_ms
        if "retrieval" in timings:
            self.retrieval.observe(timings["retrieval"] / 1000)
        if "generation" in timings:
            self.generation.observe(timings["generation"] / 1000)
        with self._lock:
            self._recent.append(response.abstained)
            self.abstention_rate.set(sum(self._recent) / len(self._recent))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "route", "method", "status", "duration_ms", "client", "abstained", "job_id"):
            value = getattr(record, key, None)
            if value is not None:
                payload[key] = value
        if record.exc_info:
            payload["error"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_json_logging(level: int = logging.INFO) -> None:
    logger = logging.getLogger("rag.api")
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


class QueryLogWriter:
    """Appends one ``QueryLogRecord`` per answered query as a JSON line: the input of `rag drift`.

    ``RAG_LOG_QUESTIONS`` decides what is kept of the question: ``text`` (the question and its hash), ``hash``
    (only the hash) or ``none`` (nothing is logged).
    """

    def __init__(self, settings: Settings) -> None:
        self.path: Path = settings.query_log_path
        self.mode = settings.log_questions
        self._lock = threading.Lock()

    def record_for(
        self, question: str, response: QueryResponse, query_embedding: Any, top_score: float | None
    ) -> QueryLogRecord:
        return QueryLogRecord(
            ts=datetime.now(UTC),
            request_id=response.request_id,
            question_hash=sha256_text(question),
            question=question if self.mode == "text" else None,
            question_chars=len(question),
            mode=response.mode,
            top_score=top_score,
            abstained=response.abstained,
            abstain_reason=response.abstain_reason,
            confidence=response.confidence,
            latency_ms=LatencyMs(
                retrieval=response.timings_ms.get("retrieval"),
                generation=response.timings_ms.get("generation"),
                total=response.timings_ms.get("total"),
            ),
            versions=QueryVersions.model_validate(response.versions.model_dump()),
            query_embedding=[round(float(v), 5) for v in query_embedding] if query_embedding is not None else None,
        )

    def append(self, question: str, response: QueryResponse, query_embedding: Any, top_score: float | None) -> None:
        if self.mode == "none":
            return
        line = self.record_for(question, response, query_embedding, top_score).model_dump_json() + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
