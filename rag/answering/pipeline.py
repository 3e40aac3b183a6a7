"""The query pipeline shared by the API, ``rag ask`` and the evaluation: sanitize → retrieve → generate → decide.

Abstention rules, in order: nothing retrieved (``no_context``); the cross-encoder's best logit over the returned
chunks is below ``min_rerank_score`` (or, where no reranker scores exist, the best cosine similarity is below
``min_relevance``): ``weak_retrieval``, no model call at all; the model says the sources do not contain the
answer (``model_unknown``); the answer verifier (rag/answering/verify.py) finds a sentence without a valid citation
(``uncited``) or a claim its cited source does not support (``unsupported``), under ``unsupported_policy``; the
calibrated confidence is below the model's threshold (``low_confidence``). An abstention always carries the same
fixed answer, ``ABSTAIN_ANSWER``.

Invariant, enforced in ``_result`` (one place): a response with ``abstained: false`` has a valid citation with a
supporting quote for every sentence; anything else is turned into an ``uncited`` abstention.

Confidence comes from ``ConfidenceModel`` (rag/answering/calibration.py) over ``PipelineResult.features``: the
retrieval and generation signals plus the verification features (prefixed ``verify.``).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from rag.answering.calibration import ConfidenceModel, signal_features
from rag.answering.generation.answerer import Answerer, GeneratedAnswer, make_answerer
from rag.answering.generation.citations import parse_citations
from rag.answering.generation.prompt import PROMPT_VERSION, UNKNOWN_ANSWER, Context
from rag.answering.rerank import CrossEncoder, Reranker
from rag.answering.retrieval import RetrievalResult, Retriever
from rag.answering.sanitize import find_injection, redact_injections, sanitize_question
from rag.answering.verify import AnswerVerifier, Quote, VerificationReport, answer_spans, is_claim
from rag.hashing import sha256_json
from rag.indexing.embedding import Embedder
from rag.indexing.store import VectorStore
from rag.settings import RetrievalMode, Settings

ABSTAIN_ANSWER = UNKNOWN_ANSWER
AbstainReason = Literal["no_context", "weak_retrieval", "model_unknown", "uncited", "unsupported", "low_confidence"]


class Citation(BaseModel):
    index: int = Field(description="The [n] used in the answer.")
    doc_id: str
    source: str
    title: str
    section: str = Field("", description='Heading path of the chunk ("Honeybees › The waggle dance"); "" if none.')
    chunk_id: str
    score: float = Field(description="Cosine similarity of the chunk to the question.")
    text: str
    cited_in_answer: bool = True
    flagged_instructions: bool = Field(False, description="The chunk contains instruction-like text.")
    quote: Quote | None = Field(
        None, description="The span of `text` supporting the answer sentence citing it: text[start:end] == quote.text."
    )


class Versions(BaseModel):
    index: str | None
    embedding_model: str
    generator: str
    prompt: str
    config: str = Field(description="Hash of the pipeline configuration that produced the answer.")
    calibration: str = Field("uncalibrated", description="Version (content hash) of the confidence model.")


class QueryResponse(BaseModel):
    answer: str
    abstained: bool
    confidence: float = Field(ge=0, le=1)
    citations: list[Citation]
    request_id: str
    versions: Versions
    abstain_reason: AbstainReason | None = None
    confidence_meaning: str | None = Field(None, description="What this confidence meant on the held-out test set.")
    mode: RetrievalMode
    flagged_chunk_ids: list[str] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    usage: dict[str, int | None] = Field(default_factory=dict)


@dataclass(frozen=True)
class PipelineResult:
    """Everything one question produced: the response sent to the client, the retrieval behind it and the
    generated answer with the contexts the generator was actually shown (``None`` when it abstained before
    generating). The API logs from it and the evaluation judges exactly what the generator saw.
    """

    question: str
    response: QueryResponse
    retrieval: RetrievalResult
    generated: GeneratedAnswer | None
    verification: VerificationReport | None = None
    features: dict[str, float] = field(default_factory=dict)

    @property
    def query_embedding(self) -> np.ndarray:
        return self.retrieval.query_embedding

    @property
    def top_score(self) -> float | None:
        return self.retrieval.top_dense

    @property
    def shown_contexts(self) -> list[Context]:
        """The (budgeted) source texts in the prompt, numbered as the generator saw them."""
        return list(self.generated.contexts) if self.generated is not None else []


@dataclass(frozen=True)
class TokenEvent:
    """A text delta while the answer is generated."""

    delta: str


@dataclass(frozen=True)
class ResultEvent:
    """The last event of a stream: the full result."""

    result: PipelineResult

    @property
    def response(self) -> QueryResponse:
        return self.result.response


StreamEvent = TokenEvent | ResultEvent


def confidence_score(top_cosine: float | None, cited: bool, settings: Settings) -> float:
    if top_cosine is None:
        return 0.0
    value = 1.0 / (1.0 + math.exp(-settings.confidence_slope * (top_cosine - settings.confidence_center)))
    return round(value * (1.0 if cited else settings.uncited_factor), 4)


class QueryPipeline:
    """One instance per process; thread-safe for retrieval, and generation is serialised by the backend."""

    def __init__(
        self,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        store: VectorStore | None = None,
        answerer: Answerer | None = None,
        cross_encoder: CrossEncoder | None = None,
    ) -> None:
        self.settings = settings
        # one cross-encoder per process: pipelines of several collections share its ONNX session
        reranker = Reranker(settings, cross_encoder) if cross_encoder is not None else None
        self.retriever = Retriever(settings, embedder=embedder, store=store, reranker=reranker)
        # Lexical sentence selection only: embedding every candidate sentence cost about 1 s per query on this
        # CPU and did not change answers on the labelled set (docs/PERFORMANCE.md).
        self.answerer = answerer or make_answerer(settings)
        # the retriever's cross-encoder is shared: one ONNX session scores both retrieval and verification pairs
        self.verifier = AnswerVerifier.from_settings(settings, encoder=self.retriever.reranker.encoder)
        self.confidence_model = ConfidenceModel.from_settings(settings)

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "retrieval": self.retriever.to_dict(),
            "generation": self.answerer.to_dict(),
            "embedding_model": self.retriever.embedder.to_dict(),
            "chunker": {"chunk_size": s.chunk_size, "chunk_overlap": s.chunk_overlap, "embed_titles": s.embed_titles},
            "abstention": {"min_relevance": s.min_relevance, "min_rerank_score": s.min_rerank_score},
            "verification": self.verifier.to_dict(),
            "calibration": self.confidence_model.to_dict(),
            "confidence": {
                "slope": s.confidence_slope,
                "center": s.confidence_center,
                "uncited_factor": s.uncited_factor,
            },
        }

    @property
    def config_version(self) -> str:
        return sha256_json(self.to_dict())[:12]

    def versions(self, index_version: str | None) -> Versions:
        return Versions(
            index=index_version,
            embedding_model=self.retriever.embedder.name,
            generator=self.answerer.generator_id,
            prompt=PROMPT_VERSION,
            config=self.config_version,
            calibration=self.confidence_model.version,
        )

    def retrieve(
        self,
        question: str,
        top_k: int | None = None,
        mode: RetrievalMode | None = None,
        filters: dict[str, Any] | None = None,
    ) -> RetrievalResult:
        return self.retriever.retrieve(question, top_k, mode, filters)

    def run(
        self,
        question: str,
        *,
        top_k: int | None = None,
        mode: RetrievalMode | None = None,
        filters: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> PipelineResult:
        """The whole result of one question (``.response`` is what the API returns)."""
        for event in self.stream(question, top_k=top_k, mode=mode, filters=filters, request_id=request_id):
            if isinstance(event, ResultEvent):
                return event.result
        raise RuntimeError("the pipeline ended without a result")  # pragma: no cover

    def weak_retrieval(self, retrieval: RetrievalResult) -> bool:
        """Too weak to answer from: the cross-encoder judges relevance far better than the bi-encoder's cosine
        (sample set: answerable top logit p5 -0.8, unanswerable p50 -10), so its score decides when it exists."""
        if retrieval.top_rerank is not None:
            return retrieval.top_rerank < self.settings.min_rerank_score
        return retrieval.top_dense is None or retrieval.top_dense < self.settings.min_relevance

    def stream(
        self,
        question: str,
        *,
        top_k: int | None = None,
        mode: RetrievalMode | None = None,
        filters: dict[str, Any] | None = None,
        request_id: str | None = None,
        generation_slot: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> Iterator[StreamEvent]:
        """Token events while the answer is generated, then one result event with the full response.

        ``generation_slot`` bounds concurrent generations (the API's queue); retrieval and abstentions on weak
        retrieval never wait for it.
        """
        started = time.perf_counter()
        request_id = request_id or uuid.uuid4().hex
        question = sanitize_question(question, self.settings.max_question_chars)
        retrieval = self.retrieve(question, top_k, mode, filters)
        flagged = [c.chunk_id for c in retrieval.chunks if find_injection(c.text)]
        timings = {"retrieval": retrieval.seconds * 1000}
        if not retrieval.chunks or self.weak_retrieval(retrieval):
            reason: AbstainReason = "no_context" if not retrieval.chunks else "weak_retrieval"
            yield self._result(question, request_id, retrieval, None, reason, flagged, timings, started)
            return

        contexts = [
            Context(
                index=i,
                chunk_id=c.chunk_id,
                doc_id=c.doc_id,
                title=c.title,
                source=c.source,
                # flagged instruction-like sentences never reach the model (the citation keeps the original)
                text=redact_injections(c.text) if c.chunk_id in flagged else c.text,
                score=c.dense_score,
            )
            for i, c in enumerate(retrieval.chunks, start=1)
        ]
        with (generation_slot or nullcontext)():
            tick = time.perf_counter()
            answer_stream = self.answerer.stream(question, contexts)
            try:
                for delta in answer_stream:
                    yield TokenEvent(delta)
            finally:
                answer_stream.close()
            timings["generation"] = (time.perf_counter() - tick) * 1000
        generated = answer_stream.result
        assert generated is not None
        reason_or_none: AbstainReason | None = "model_unknown" if generated.model_said_unknown else None
        verification: VerificationReport | None = None
        if reason_or_none is None:
            tick = time.perf_counter()
            verification = self.verifier.check_retrieved(generated, retrieval.chunks, question)
            timings["verification"] = (time.perf_counter() - tick) * 1000
            reason_or_none = verification.abstain_reason
        yield self._result(
            question, request_id, retrieval, generated, reason_or_none, flagged, timings, started, verification
        )

    def features(
        self,
        question: str,
        retrieval: RetrievalResult,
        generated: GeneratedAnswer | None,
        verification: VerificationReport | None,
    ) -> dict[str, float]:
        """What the confidence model reads: question-form, retrieval and generation signals plus ``verify.*``."""
        features = signal_features(question, retrieval, generated)
        if verification is not None:
            features.update({f"verify.{k}": v for k, v in verification.features.items()})
        return features

    def _citations(
        self, retrieval: RetrievalResult, generated: GeneratedAnswer, report: VerificationReport, flagged: list[str]
    ) -> list[Citation]:
        """The sources the final answer cites, each with its supporting quote (offsets into the stored chunk)."""
        by_chunk = {c.chunk_id: c for c in retrieval.chunks}
        by_index = {c.index: c for c in generated.contexts}
        citations = []
        for index, quote in sorted(report.quotes.items()):
            ctx = by_index[index]
            chunk = by_chunk.get(ctx.chunk_id)
            citations.append(
                Citation(
                    index=index,
                    doc_id=ctx.doc_id,
                    source=ctx.source,
                    title=ctx.title,
                    section=str(chunk.metadata.get("section") or "") if chunk else "",
                    chunk_id=ctx.chunk_id,
                    score=round(chunk.dense_score if chunk else ctx.score, 4),
                    text=chunk.text if chunk else ctx.text,
                    cited_in_answer=True,
                    flagged_instructions=ctx.chunk_id in flagged,
                    quote=quote,
                )
            )
        return citations

    def _result(
        self,
        question: str,
        request_id: str,
        retrieval: RetrievalResult,
        generated: GeneratedAnswer | None,
        reason: AbstainReason | None,
        flagged: list[str],
        timings: dict[str, float],
        started: float,
        verification: VerificationReport | None = None,
    ) -> ResultEvent:
        features = self.features(question, retrieval, generated, verification)
        answer: str | None = None
        citations: list[Citation] = []
        confidence = 0.0
        if reason is None and generated is not None and verification is not None:
            answer = verification.final_text
            citations = self._citations(retrieval, generated, verification, flagged)
            confidence = self.confidence_model.predict(features)
            if confidence < self.confidence_model.threshold:
                reason = "low_confidence"
        if reason is None and not honest_answer(answer, citations):  # the invariant, in this one place
            reason = "uncited"
        abstained = reason is not None
        timings["total"] = (time.perf_counter() - started) * 1000
        response = QueryResponse(
            answer=ABSTAIN_ANSWER if abstained or answer is None else answer,
            abstained=abstained,
            confidence=0.0 if abstained else confidence,
            citations=[] if abstained else citations,
            request_id=request_id,
            versions=self.versions(retrieval.index_version),
            abstain_reason=reason,
            confidence_meaning=None if abstained else self.confidence_model.meaning(confidence),
            mode=retrieval.mode,
            flagged_chunk_ids=flagged,
            timings_ms={k: round(v, 2) for k, v in timings.items()},
            usage={
                "prompt_tokens": generated.prompt_tokens if generated else None,
                "completion_tokens": generated.completion_tokens if generated else None,
            },
        )
        return ResultEvent(PipelineResult(question, response, retrieval, generated, verification, features))


def honest_answer(answer: str | None, citations: list[Citation]) -> bool:
    """True when every sentence of ``answer`` that states something cites only returned citations, at least one,
    and every citation carries a quote that is an exact span of its text."""
    if not answer or not citations:
        return False
    returned = {c.index for c in citations}
    for citation in citations:
        quote = citation.quote
        if quote is None or citation.text[quote.start : quote.end] != quote.text or not quote.text.strip():
            return False
    for start, end in answer_spans(answer):
        sentence = answer[start:end]
        cited = set(parse_citations(sentence))
        if cited - returned or (is_claim(sentence) and not cited):
            return False
    return True
