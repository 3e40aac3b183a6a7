"""`rag eval --from-feedback`: rated answers from the query log become a labelled set in our JSONL format.

A thumbs-down on an answered question is a *candidate wrong answer* (``answerable`` unknown, tag
``feedback=down``): the service answered and the user said it was wrong, so a reviewer should look. A thumbs-up
on an answered question is a candidate right answer (``answerable=True``, ``feedback=up``). Abstentions keep
their rating as a tag only. The question text exists only when the API ran with ``RAG_LOG_QUESTIONS=text``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eval.datasets import EvalSample
from rag.errors import InvalidInputError
from rag.ml.query_log import FeedbackLog, FeedbackRecord, QueryLogRecord, feedback_log_path, read_query_log
from rag.settings import Settings


@dataclass
class FeedbackDatasetSummary:
    """What the builder found and wrote (printed by the CLI, asserted by tests)."""

    output: Path
    samples: int
    rated: int
    by_label: dict[str, int] = field(default_factory=dict)
    skipped_no_text: int = 0
    skipped_duplicate: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "samples": self.samples,
            "rated": self.rated,
            "by_label": self.by_label,
            "skipped_no_text": self.skipped_no_text,
            "skipped_duplicate": self.skipped_duplicate,
        }


class FeedbackDatasetBuilder:
    """Joins the feedback log to the query log on ``request_id`` (latest rating wins; one sample per question)."""

    def __init__(self, query_log: Path, feedback_log: Path | None = None) -> None:
        self.query_log = query_log
        self.feedback_log = feedback_log or feedback_log_path(query_log)

    def to_dict(self) -> dict[str, Any]:
        return {"query_log": str(self.query_log), "feedback_log": str(self.feedback_log)}

    @staticmethod
    def sample_for(record: QueryLogRecord, rating: FeedbackRecord) -> EvalSample:
        answered = not record.abstained
        return EvalSample(
            id=f"feedback-{record.request_id}",
            question=record.question or "",
            answerable=True if answered and rating.rating == "up" else None,
            tags={
                "feedback": rating.rating,
                "outcome": "answered" if answered else "abstained",
                "label": ("candidate_right" if rating.rating == "up" else "candidate_wrong") if answered else "review",
                "request_id": record.request_id,
                "rated_at": rating.timestamp().isoformat(timespec="seconds"),
                "index": str(record.versions.index),
            },
        )

    def build(self) -> tuple[list[EvalSample], dict[str, int]]:
        feedback = FeedbackLog(self.feedback_log).latest_by_request()
        if not feedback:
            raise InvalidInputError(
                f"no feedback in {self.feedback_log}", hint="users rate answers with POST /v1/feedback"
            )
        records = [r for r in read_query_log(self.query_log).records if r.request_id in feedback]
        counts = {"rated": len(records), "no_text": 0, "duplicate": 0}
        latest: dict[str, tuple[QueryLogRecord, FeedbackRecord]] = {}
        for record in records:
            if record.question is None:
                counts["no_text"] += 1
                continue
            if record.question_hash in latest:
                counts["duplicate"] += 1
            latest[record.question_hash] = (record, feedback[record.request_id])
        if records and not latest:
            raise InvalidInputError(
                f"{len(records)} rated answers, but the query log kept no question text",
                hint="the API must run with RAG_LOG_QUESTIONS=text for feedback to become evaluation data "
                "(hash or none keep only a hash of the question)",
            )
        if not latest:
            raise InvalidInputError(
                f"none of the {len(feedback)} rated request ids is in {self.query_log}",
                hint="rotate the feedback log together with the query log",
            )
        samples = [self.sample_for(record, rating) for record, rating in latest.values()]
        return samples, counts

    def write(self, output: Path) -> FeedbackDatasetSummary:
        samples, counts = self.build()
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8") as handle:
            for sample in samples:
                handle.write(sample.model_dump_json(exclude_defaults=True) + "\n")
        return FeedbackDatasetSummary(
            output=output,
            samples=len(samples),
            rated=counts["rated"],
            by_label=dict(Counter(s.tags["label"] for s in samples)),
            skipped_no_text=counts["no_text"],
            skipped_duplicate=counts["duplicate"],
        )


def default_output(settings: Settings) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.data_dir / "eval" / "feedback" / f"feedback-{stamp}.jsonl"


def dataset_from_feedback(settings: Settings, output: Path | None = None) -> FeedbackDatasetSummary:
    """The `rag eval --from-feedback` entry: the configured query log and its feedback log → ``output``."""
    return FeedbackDatasetBuilder(settings.query_log_path).write(output or default_output(settings))
