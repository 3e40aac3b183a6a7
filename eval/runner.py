"""``rag eval``: run the API's own ``QueryPipeline`` over a labelled dataset and score what it did.

Order of work: load and validate the dataset → ingest its corpus (the normal ``IngestionPipeline``; unchanged
documents are skipped) → per question, retrieve at depth ``eval_retrieval_depth`` in each compared mode
(retrieval metrics on documents, chunks aggregated by their best score) and, when answers are wanted, call
``QueryPipeline.run`` exactly as the API does → non-LLM answer metrics → RAGAS with the judge → slices with
bootstrap CIs → save everything locally → log to MLflow → optionally the release gate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from eval.datasets import Dataset, EvalSample, load_dataset
from eval.judge import JUDGE_METRICS, JudgeCache, JudgeInput, RagasJudge, make_judge_backend
from eval.metrics import (
    RETRIEVAL_METRICS,
    abstention_correct,
    decision_correct,
    extract_decision,
    ranked_documents,
    retrieval_scores,
    rouge_l,
    token_f1,
)
from rag.answering.conversation import ChatTurn, ConversationRewriter
from rag.answering.generation.answerer import make_answerer
from rag.answering.generation.backends import LLMBackend
from rag.answering.pipeline import PipelineResult, QueryPipeline
from rag.answering.sanitize import sanitize_question
from rag.errors import InvalidInputError, RagError
from rag.indexing.embedding import Embedder
from rag.ml.seed import set_seed
from rag.ml.slices import OVERALL, bootstrap_ci, bucketize, slice_table
from rag.settings import RetrievalMode, Settings

log = logging.getLogger(__name__)

JudgeKind = Literal["local", "openai", "none"]
ALL_MODES: tuple[RetrievalMode, ...] = get_args(RetrievalMode)
ANSWER_METRICS = ("answer_f1", "rouge_l", "abstention_accuracy", "decision_accuracy")
QUESTION_LENGTH_EDGES = (8, 12, 20)  # words; buckets <8, [8,12), [12,20), >=20
# Published nDCG@10 on the same test split, to print next to ours (see ../shared/data/*/SOURCE.md).
PUBLISHED: dict[str, dict[str, float]] = {
    "scifact": {
        "BM25 (BEIR paper, Table 2)": 0.665,
        "all-MiniLM-L6-v2 dense (MTEB)": 0.645,
        "BM25 + cross-encoder rerank (BEIR)": 0.688,
    }
}
# Which of our modes each published figure is comparable with.
PUBLISHED_MODE = {
    "BM25 (BEIR paper, Table 2)": "bm25",
    "all-MiniLM-L6-v2 dense (MTEB)": "dense",
    "BM25 + cross-encoder rerank (BEIR)": "hybrid",
}

ProgressFactory = Callable[[str, int], Any]


class EvalOptions(BaseModel):
    """What to evaluate and how; defaults come from ``Settings`` where one exists."""

    dataset: Path
    limit: int | None = Field(None, ge=1)
    judge: JudgeKind | None = Field(None, description="None: settings.eval_judge.")
    answers: bool | None = Field(None, description="Generate answers; None: when judged or references exist.")
    modes: list[RetrievalMode] = Field(default_factory=lambda: list(ALL_MODES))
    corpus: Path | None = None
    collection: str | None = None
    split: str = "test"
    experiment: str = "rag-eval"
    judge_metrics: list[str] = Field(default_factory=lambda: list(JUDGE_METRICS))
    log_to_mlflow: bool = True
    progress: bool = True


class MetricSummary(BaseModel):
    """One metric over the run: the mean of determined per-sample values and its bootstrap 95% CI."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int = Field(description="Samples with a value.")
    n_missing: int = Field(description="Samples where the metric was NaN (not applicable or undetermined).")


class EvalResult(BaseModel):
    """Everything a run produced except the per-sample table (saved next to it as samples.csv/jsonl)."""

    run_name: str
    local_dir: str
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    tracking_uri: str | None = None
    dataset: dict[str, Any]
    collection: str
    index_version: str | None
    config_version: str
    pipeline_config: dict[str, Any]
    generator_id: str
    judge: dict[str, Any] | None
    seed: int
    seed_report: dict[str, Any]
    answers_generated: bool
    primary_mode: str
    modes: list[str]
    retrieval_depth: int
    metrics: dict[str, MetricSummary]
    by_mode: dict[str, dict[str, MetricSummary]]
    published: dict[str, dict[str, Any]] = Field(default_factory=dict)
    judge_usage: dict[str, dict[str, Any]] = Field(default_factory=dict)
    cost: dict[str, dict[str, Any]] = Field(default_factory=dict)
    pipeline_errors: int = 0
    slice_columns: list[str] = Field(default_factory=list)
    skipped_slice_columns: dict[str, str] = Field(default_factory=dict)
    flagged_slices: list[dict[str, Any]] = Field(default_factory=list)
    ingestion: dict[str, Any] | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    git_commit: str | None = None
    started_at: str
    gate: dict[str, Any] | None = None
    warnings: list[str] = Field(default_factory=list)


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def progress_factory(enabled: bool) -> ProgressFactory:
    """tqdm bars on stderr (with ETA); disabled for ``--json`` or when asked."""

    def make(desc: str, total: int) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="q", disable=not enabled, file=sys.stderr, dynamic_ncols=True)

    return make


def eval_dir(settings: Settings) -> Path:
    return settings.data_dir / "eval"


def runs_dir(settings: Settings) -> Path:
    return eval_dir(settings) / "runs"


def summarize(values: pd.Series | np.ndarray, *, n_resamples: int, seed: int) -> MetricSummary:
    """Mean of the finite values with a percentile bootstrap CI (``rag.ml.slices.bootstrap_ci``)."""
    data = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return MetricSummary(value=None, ci_low=None, ci_high=None, n=0, n_missing=int(data.size))
    low, high = bootstrap_ci(finite, np.mean, n_resamples=n_resamples, seed=seed)
    return MetricSummary(
        value=float(finite.mean()),
        ci_low=None if math.isnan(low) else low,
        ci_high=None if math.isnan(high) else high,
        n=int(finite.size),
        n_missing=int(data.size - finite.size),
    )


def _question_words(question: str) -> int:
    return len(re.findall(r"\w+", question))


class EvalRunner:
    """One evaluation run. Components can be injected (tests share a loaded embedder and model)."""

    def __init__(
        self,
        settings: Settings,
        options: EvalOptions,
        *,
        embedder: Embedder | None = None,
        generator_backend: LLMBackend | None = None,
        judge_backend: LLMBackend | None = None,
    ) -> None:
        bad = [m for m in options.modes if m not in ALL_MODES]
        if bad or not options.modes:
            raise InvalidInputError(f"unknown retrieval modes {bad or '[]'}", hint="use dense, bm25 and/or hybrid")
        self.settings = settings
        self.options = options
        self.judge_kind: JudgeKind = options.judge or settings.eval_judge
        self._embedder = embedder
        self._generator_backend = generator_backend
        self._judge_backend = judge_backend
        self.progress = progress_factory(options.progress)

    # ------------------------------------------------------------------ phases

    def load(self) -> Dataset:
        return load_dataset(
            self.options.dataset,
            limit=self.options.limit,
            seed=self.settings.seed,
            split=self.options.split,
            corpus=self.options.corpus,
            work_dir=eval_dir(self.settings),
        )

    def collection_for(self, dataset: Dataset) -> str:
        if self.options.collection:
            return self.options.collection
        if dataset.corpus:
            return f"eval-{dataset.name}"[:63].rstrip("-._")
        return self.settings.collection

    def ingest(self, settings: Settings, dataset: Dataset, embedder: Embedder) -> dict[str, Any] | None:
        """The normal ingestion into the eval collection: idempotent, so a rerun only checks hashes."""
        if not dataset.corpus:
            return None
        from ingest.pipeline import IngestionPipeline

        summary = IngestionPipeline(settings, embedder=embedder, progress=self.options.progress).run(
            dataset.corpus, prune=True
        )
        if summary.documents_failed:
            log.warning("%d corpus documents failed to load", len(summary.documents_failed))
        return summary.model_dump(exclude={"report", "documents_failed", "files_ignored"}) | {
            "documents_failed": len(summary.documents_failed)
        }

    def wants_answers(self, dataset: Dataset) -> bool:
        if self.options.answers is not None:
            return self.options.answers
        if self.judge_kind != "none":
            return True
        return any(s.reference or s.answerable is not None or s.decision for s in dataset.samples)

    def run(self) -> tuple[EvalResult, pd.DataFrame, pd.DataFrame]:
        """Evaluate; returns the result, the per-sample frame and the slice table (nothing saved or logged)."""
        started_at = datetime.now(UTC)
        commit = git_commit()  # the code that runs: read now, as a long run may outlive HEAD
        tick = time.perf_counter()
        seed_report = set_seed(self.settings.seed)
        dataset = self.load()
        collection = self.collection_for(dataset)
        settings = self.settings.with_overrides(collection=collection)
        embedder = self._embedder or Embedder(settings)
        warnings: list[str] = []

        t0 = time.perf_counter()
        ingestion = self.ingest(settings, dataset, embedder)
        ingest_s = time.perf_counter() - t0

        answers = self.wants_answers(dataset)
        if self.judge_kind != "none" and not answers:
            warnings.append("--no-answers with a judge: RAGAS metrics need answers and are skipped")
        pipeline, index_version = self._pipeline(settings, embedder, collection)
        rows, contexts_by_row, stage_seconds = self._run_pipeline(pipeline, dataset, answers)
        frame = pd.DataFrame(rows)

        judge_info = None
        judge_usage: dict[str, dict[str, Any]] = {}
        judge_s = 0.0
        if self.judge_kind != "none" and answers:
            t0 = time.perf_counter()
            judge_info, judge_usage = self._judge(settings, pipeline, embedder, dataset, frame, contexts_by_row)
            judge_s = time.perf_counter() - t0

        metric_columns = [c for c in self.metric_columns(frame) if frame[c].notna().any()]
        slice_columns, skipped = self._slice_columns(frame)
        slices = slice_table(
            frame,
            metric_columns,
            slice_columns,
            self.settings.eval_min_slice_size,
            n_resamples=self.settings.eval_bootstrap_resamples,
            seed=self.settings.seed,
        )
        metrics = self._overall(slices, frame, metric_columns)
        by_mode = self._by_mode(frame)
        flagged = slices.loc[slices["flagged"]].to_dict(orient="records")
        total_s = time.perf_counter() - tick
        cost = self._cost(frame, stage_seconds, judge_usage)
        result = EvalResult(
            run_name="",
            local_dir="",
            dataset=self._dataset_info(dataset),
            collection=collection,
            index_version=index_version,
            config_version=pipeline.config_version,
            pipeline_config=pipeline.to_dict(),
            generator_id=pipeline.answerer.generator_id if answers else "none (retrieval only)",
            judge=judge_info,
            seed=self.settings.seed,
            seed_report=seed_report,
            answers_generated=answers,
            primary_mode=settings.retrieval_mode,
            modes=list(self.options.modes),
            retrieval_depth=self.settings.eval_retrieval_depth,
            metrics=metrics,
            by_mode=by_mode,
            published=self._published(dataset, by_mode),
            judge_usage=judge_usage,
            cost=cost,
            pipeline_errors=int(frame["pipeline_error"].notna().sum()) if "pipeline_error" in frame else 0,
            slice_columns=slice_columns,
            skipped_slice_columns=skipped,
            flagged_slices=flagged,
            ingestion=ingestion,
            timings=_timings(ingest_s, stage_seconds, judge_s, total_s, max(len(frame), 1)),
            git_commit=commit,
            started_at=started_at.isoformat(timespec="seconds"),
            warnings=warnings,
        )
        result.run_name = self.run_name(result, started_at)
        return result, frame, slices

    def _pipeline(self, settings: Settings, embedder: Embedder, collection: str) -> tuple[QueryPipeline, str]:
        """The API's own construction, and the collection's index version (an empty collection is an error)."""
        # An injected backend (tests share a loaded model) goes through the same factory QueryPipeline uses,
        # with nothing else changed.
        answerer = make_answerer(settings, backend=self._generator_backend) if self._generator_backend else None
        pipeline = QueryPipeline(settings, embedder=embedder, answerer=answerer)
        index_version = pipeline.retriever.index_version()
        if index_version is None:
            raise InvalidInputError(
                f"collection {collection!r} is empty: nothing to evaluate",
                hint="pass --corpus PATH (JSONL datasets) or ingest documents first",
            )
        return pipeline, index_version

    def _by_mode(self, frame: pd.DataFrame) -> dict[str, dict[str, MetricSummary]]:
        """Retrieval metrics with CIs per retrieval mode (modes without any value are left out)."""
        n_resamples = self.settings.eval_bootstrap_resamples
        by_mode: dict[str, dict[str, MetricSummary]] = {
            mode: {
                m: summarize(frame[f"{mode}.{m}"], n_resamples=n_resamples, seed=self.settings.seed)
                for m in RETRIEVAL_METRICS
                if f"{mode}.{m}" in frame
            }
            for mode in self.options.modes
        }
        return {mode: values for mode, values in by_mode.items() if any(v.n for v in values.values())}

    def _dataset_info(self, dataset: Dataset) -> dict[str, Any]:
        return {
            "name": dataset.name,
            "kind": dataset.kind,
            "path": dataset.path,
            "sha256": dataset.sha256,
            "samples": len(dataset.samples),
            "total_samples": dataset.total_samples,
            "generated_samples": sum(bool(s.provenance.get("generator")) for s in dataset.samples),
            "limit": dataset.limit,
            "split": dataset.split,
            "min_slice_size": self.settings.eval_min_slice_size,
        }

    # ------------------------------------------------------------------ per-sample work

    def _run_pipeline(
        self, pipeline: QueryPipeline, dataset: Dataset, answers: bool
    ) -> tuple[list[dict[str, Any]], list[list[str]], dict[str, float]]:
        depth = self.settings.eval_retrieval_depth
        primary: RetrievalMode = pipeline.settings.retrieval_mode
        modes = list(dict.fromkeys([primary, *self.options.modes]))
        rows: list[dict[str, Any]] = []
        contexts_by_row: list[list[str]] = []
        seconds = {"retrieval": 0.0, "answer": 0.0}
        for mode in modes:
            seconds[f"retrieval.{mode}"] = 0.0
        bar = self.progress("answer" if answers else "retrieve", len(dataset.samples))
        for sample in dataset.samples:
            row = self._base_row(sample)
            contexts: list[str] = []
            try:
                # the API's validation first: a question it rejects is never retrieved for
                question = sanitize_question(sample.question, pipeline.settings.max_question_chars)
                hidden = sample.hidden_filter
                if sample.history:
                    question = self._standalone(pipeline, sample, question, row)
                for mode in modes:
                    t0 = time.perf_counter()
                    retrieved = pipeline.retrieve(question, top_k=depth, mode=mode, filters=hidden)
                    elapsed = time.perf_counter() - t0
                    seconds[f"retrieval.{mode}"] += elapsed
                    seconds["retrieval"] += elapsed
                    ranked = ranked_documents(c.doc_id for c in retrieved.chunks)
                    scores = retrieval_scores(ranked, sample.relevance) if sample.relevance else {}
                    for name in RETRIEVAL_METRICS:
                        value = scores.get(name, math.nan)
                        if mode in self.options.modes:
                            row[f"{mode}.{name}"] = value
                        if mode == primary:
                            row[name] = value
                    if mode == primary:
                        row["retrieved_doc_ids"] = ranked[:10]
                        row["retrieval_ms"] = round(retrieved.seconds * 1000, 2)
                if answers:
                    t0 = time.perf_counter()
                    asked = question if sample.history else sample.question
                    result = pipeline.run(asked, filters=hidden, request_id=f"eval-{sample.id}")
                    seconds["answer"] += time.perf_counter() - t0
                    # the judge sees what the generator saw: the budgeted context of the prompt, or, when the
                    # pipeline abstained before generating, the chunks it retrieved
                    shown = result.shown_contexts
                    contexts = [c.text for c in shown] or [c.text for c in result.retrieval.chunks]
                    row["contexts"] = contexts
                    self._answer_columns(row, sample, result)
            except RagError as exc:  # one bad question must not sink the run
                row["pipeline_error"] = f"{exc.code}: {exc}"[:300]
                if answers and isinstance(exc, InvalidInputError):
                    self._rejected_columns(row, sample, exc)
            rows.append(row)
            contexts_by_row.append(contexts)
            bar.update(1)
        bar.close()
        return rows, contexts_by_row, seconds

    @staticmethod
    def _standalone(pipeline: QueryPipeline, sample: EvalSample, question: str, row: dict[str, Any]) -> str:
        """The chat route's rewrite of a follow-up (same rewriter, cheap check and retrieval probe)."""
        generator = getattr(pipeline.answerer, "generator", None)
        rewriter = ConversationRewriter(pipeline.settings, generator if isinstance(generator, LLMBackend) else None)
        history = [ChatTurn(turn.role, turn.content) for turn in sample.history]
        rewrite = rewriter.rewrite(question, history, probe=lambda q: pipeline.retrieve(q).top_dense)
        row.update({
            "rewritten_question": rewrite.standalone_question,
            "rewrite_method": rewrite.method,
            "rewrite_fallback": rewrite.fallback,
            "rewrite_ms": round(rewrite.seconds * 1000, 2),
        })
        return rewrite.standalone_question

    @staticmethod
    def _base_row(sample: EvalSample) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": sample.id,
            "question": sample.question,
            "question_sha": hashlib.sha256(sample.question.encode()).hexdigest()[:16],
            "question_words": _question_words(sample.question),
            "source": sample.reference_doc_ids[0] if sample.reference_doc_ids else None,
            "reference": sample.reference,
            "reference_doc_ids": sample.reference_doc_ids,
            "answerable": sample.answerable,
            "gold_decision": sample.decision,
            "pipeline_error": None,
        }
        for key, value in sorted(sample.tags.items()):
            row[f"tag.{key}"] = value
        return row

    @staticmethod
    def _answer_columns(row: dict[str, Any], sample: EvalSample, result: PipelineResult) -> None:
        response = result.response
        chunks = result.shown_contexts or result.retrieval.chunks
        predicted = extract_decision(response.answer, abstained=response.abstained) if sample.decision else None
        row.update(
            {
                "answer": response.answer,
                "abstained": response.abstained,
                "abstain_reason": response.abstain_reason,
                "confidence": response.confidence,
                "context_chunk_ids": [c.chunk_id for c in chunks],
                "context_doc_ids": [c.doc_id for c in chunks],
                "cited_doc_ids": [c.doc_id for c in response.citations if c.cited_in_answer],
                "generation_ms": response.timings_ms.get("generation"),
                "total_ms": response.timings_ms.get("total"),
                "prompt_tokens": response.usage.get("prompt_tokens"),
                "completion_tokens": response.usage.get("completion_tokens"),
                "config_version": response.versions.config,
                "predicted_decision": predicted,
                "answer_f1": token_f1(response.answer, sample.reference) if not response.abstained else (
                    0.0 if sample.reference else math.nan
                ),
                "rouge_l": rouge_l(response.answer, sample.reference) if not response.abstained else (
                    0.0 if sample.reference else math.nan
                ),
                "abstention_accuracy": abstention_correct(response.abstained, sample.answerable),
                "decision_accuracy": decision_correct(predicted, sample.decision),
            }
        )

    @staticmethod
    def _rejected_columns(row: dict[str, Any], sample: EvalSample, exc: RagError) -> None:
        """The API answers a rejected question (422) with no answer: scored like an abstention."""
        row.update(
            {
                "answer": None,
                "abstained": True,
                "abstain_reason": f"rejected:{exc.code}",
                "confidence": 0.0,
                "predicted_decision": None,
                "answer_f1": 0.0 if sample.reference else math.nan,
                "rouge_l": 0.0 if sample.reference else math.nan,
                "abstention_accuracy": abstention_correct(True, sample.answerable),
                "decision_accuracy": decision_correct(None, sample.decision),
            }
        )

    def _judge(
        self,
        settings: Settings,
        pipeline: QueryPipeline,
        embedder: Embedder,
        dataset: Dataset,
        frame: pd.DataFrame,
        contexts_by_row: list[list[str]],
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        share = getattr(pipeline.answerer, "generator", None)
        backend = self._judge_backend or make_judge_backend(self.settings, self.judge_kind, share=share)
        judge = RagasJudge(
            backend,
            embedder,
            cache=JudgeCache(eval_dir(self.settings) / "judge-cache.sqlite"),
            timeout_s=self.settings.judge_timeout_s,
            retries=self.settings.judge_retries,
            max_tokens=self.settings.judge_max_tokens,
            seed=self.settings.seed,
            cache_prompt=self.settings.judge_cache_prompt,
        )
        inputs = []
        for i, sample in enumerate(dataset.samples):
            row = frame.iloc[i]
            failed = isinstance(row.get("pipeline_error"), str)
            inputs.append(
                JudgeInput(
                    question=sample.question,
                    answer=None if failed else row.get("answer"),
                    contexts=contexts_by_row[i],
                    reference=sample.reference,
                    abstained=bool(row.get("abstained")) if not failed else True,
                )
            )
        report = judge.score(inputs, self.options.judge_metrics, progress=self.progress)
        for metric, verdicts in report.verdicts.items():
            frame[metric] = [v.value for v in verdicts]
            frame[f"judge_status.{metric}"] = [v.status for v in verdicts]
            frame[f"judge_error.{metric}"] = [v.error for v in verdicts]
            frame[f"judge_seconds.{metric}"] = [round(v.seconds, 3) for v in verdicts]
        return judge.to_dict(), {m: u.to_dict() for m, u in report.usage.items()}

    # ------------------------------------------------------------------ tables

    def metric_columns(self, frame: pd.DataFrame) -> list[str]:
        wanted = [*RETRIEVAL_METRICS, *ANSWER_METRICS, *JUDGE_METRICS]
        return [c for c in wanted if c in frame.columns]

    def _slice_columns(self, frame: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
        """Tags, source document and question-length bucket; a column where no slice reaches the minimum size
        is skipped (listed in the result), since every one of its rows would say ``too_small``."""
        frame["question_length"] = bucketize(frame["question_words"], QUESTION_LENGTH_EDGES)
        candidates = [c for c in frame.columns if c.startswith("tag.")] + ["source", "question_length"]
        minimum = self.settings.eval_min_slice_size
        kept: list[str] = []
        skipped: dict[str, str] = {}
        for column in candidates:
            counts = frame[column].dropna().astype(str).value_counts()
            if counts.empty or counts.max() < minimum:
                largest = int(counts.max()) if not counts.empty else 0
                skipped[column] = f"no value has {minimum} questions (largest: {largest})"
            elif len(counts) < 2 and frame[column].notna().all():
                skipped[column] = "a single value: the slice is the whole set"
            else:
                kept.append(column)
        return kept, skipped

    @staticmethod
    def _overall(slices: pd.DataFrame, frame: pd.DataFrame, metric_columns: list[str]) -> dict[str, MetricSummary]:
        out: dict[str, MetricSummary] = {}
        overall = slices.loc[slices["slice_column"] == OVERALL].set_index("metric")
        for metric in metric_columns:
            row = overall.loc[metric]
            n_finite = int(pd.to_numeric(frame[metric], errors="coerce").notna().sum())
            out[metric] = MetricSummary(
                value=None if pd.isna(row["value"]) else float(row["value"]),
                ci_low=None if pd.isna(row["ci_low"]) else float(row["ci_low"]),
                ci_high=None if pd.isna(row["ci_high"]) else float(row["ci_high"]),
                n=n_finite,
                n_missing=len(frame) - n_finite,
            )
        return out

    def _published(self, dataset: Dataset, by_mode: dict[str, dict[str, MetricSummary]]) -> dict[str, dict[str, Any]]:
        figures = PUBLISHED.get(dataset.name) if dataset.kind == "beir" and dataset.split == "test" else None
        if not figures:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for label, value in figures.items():
            mode = PUBLISHED_MODE[label]
            ours = by_mode.get(mode, {}).get("ndcg_at_10")
            out[label] = {"published_ndcg_at_10": value, "our_mode": mode, "ours": ours.value if ours else None}
        return out

    def _cost(
        self, frame: pd.DataFrame, stage_seconds: dict[str, float], judge_usage: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """Seconds and tokens per metric family, for the report's cost plot."""
        cost: dict[str, dict[str, Any]] = {}
        for key, value in stage_seconds.items():
            if key.startswith("retrieval."):
                cost[f"retrieval[{key.split('.', 1)[1]}]"] = {
                    "seconds": round(value, 3), "prompt_tokens": 0, "completion_tokens": 0, "calls": len(frame)
                }
        if "answer" in frame:
            cost["generation"] = {
                "seconds": round(stage_seconds.get("answer", 0.0), 3),
                "prompt_tokens": int(pd.to_numeric(frame.get("prompt_tokens"), errors="coerce").fillna(0).sum()),
                "completion_tokens": int(
                    pd.to_numeric(frame.get("completion_tokens"), errors="coerce").fillna(0).sum()
                ),
                "calls": int((~frame["abstained"].fillna(True).astype(bool)).sum()),
            }
        for metric, usage in judge_usage.items():
            cost[metric] = {
                "seconds": round(usage["seconds"], 3),
                "prompt_tokens": usage["prompt_tokens"],
                "completion_tokens": usage["completion_tokens"],
                "calls": usage["calls"],
            }
        return cost

    @staticmethod
    def run_name(result: EvalResult, started_at: datetime) -> str:
        stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
        return f"{stamp}-{result.dataset['name']}-{result.config_version[:8]}-{uuid.uuid4().hex[:4]}"


def dumps_cell(value: Any) -> Any:
    """Lists and dicts as JSON strings for CSV; everything else unchanged."""
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return value


def _timings(
    ingest_s: float, stage_seconds: dict[str, float], judge_s: float, total_s: float, n: int
) -> dict[str, float]:
    """Seconds per stage and per sample, rounded for the report."""
    return {
        "ingest_s": round(ingest_s, 2),
        "retrieval_s": round(stage_seconds.get("retrieval", 0.0), 2),
        "answer_s": round(stage_seconds.get("answer", 0.0), 2),
        "judge_s": round(judge_s, 2),
        "total_s": round(total_s, 2),
        "seconds_per_sample": round((total_s - ingest_s) / n, 3),
        "judge_seconds_per_sample": round(judge_s / n, 3),
    }
