"""The generation step the query pipeline calls: budget the context, prompt the generator, check citations."""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rag.answering.generation.backends import (
    Completion,
    CompletionStream,
    LLMBackend,
    LocalBackend,
    OpenAIBackend,
    ResultStream,
    make_backend,
)
from rag.answering.generation.citations import check_citations, infer_citations, is_unknown_answer
from rag.answering.generation.extractive import ExtractiveGenerator
from rag.answering.generation.prompt import (
    PROMPT_VERSION,
    UNKNOWN_ANSWER,
    Context,
    EmbedFn,
    build_messages,
    select_context,
)
from rag.errors import InvalidInputError
from rag.settings import Settings


@dataclass(frozen=True)
class GeneratedAnswer:
    """An answer with its provenance. ``cited`` are the [n] numbers the model wrote, into ``contexts`` (the
    sources as shown to it); ``inferred_citations`` are the sources that contain an uncited answer's words
    (empty when the model cited something or said it does not know).
    """

    text: str
    contexts: list[Context]
    cited: list[int]
    invalid_citations: list[int]
    model_said_unknown: bool
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float
    generator: str
    prompt_version: str
    finish_reason: str | None = None
    cached_tokens: int | None = None
    first_token_seconds: float | None = None
    inferred_citations: list[int] = field(default_factory=list)
    # (token, logprob) of each generated token as the backend returned them (None: not reported, or no LLM);
    # their texts join to the raw completion, of which ``text`` is the stripped form
    logprobs: list[tuple[str, float]] | None = None

    @property
    def cited_contexts(self) -> list[Context]:
        by_index = {c.index: c for c in self.contexts}
        return [by_index[n] for n in self.cited]

    @property
    def cited_chunk_ids(self) -> list[str]:
        return list(dict.fromkeys(c.chunk_id for c in self.cited_contexts))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cited_chunk_ids"] = self.cited_chunk_ids
        return data


AnswerStream = ResultStream[GeneratedAnswer]


def generator_id(generator: LLMBackend | ExtractiveGenerator) -> str:
    """``local:<model>``, ``openai:<model>`` or ``extractive``: the generator part of a response's versions."""
    if isinstance(generator, ExtractiveGenerator):
        return "extractive"
    kind = {LocalBackend: "local", OpenAIBackend: "openai"}.get(type(generator), type(generator).__name__)
    return f"{kind}:{generator.model_id}"


class Answerer:
    """Answers a question from retrieved contexts with an LLM backend or the extractive generator."""

    def __init__(
        self,
        generator: LLMBackend | ExtractiveGenerator,
        *,
        context_chars: int = 1500,
        max_tokens: int = 256,
        temperature: float = 0.0,
        timeout_s: float | None = None,
        embed: EmbedFn | None = None,
    ) -> None:
        self.generator = generator
        self.context_chars = context_chars
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout_s = timeout_s
        self.embed = embed
        self.generator_id = generator_id(generator)

    def _prepare(self, question: str, contexts: Sequence[Context]) -> list[Context]:
        if not isinstance(question, str) or not question.strip():
            raise InvalidInputError("the question is empty")
        if any(not isinstance(c, Context) for c in contexts):
            raise InvalidInputError("contexts must be rag.answering.generation.prompt.Context records")
        return select_context(question, contexts, self.context_chars, embed=self.embed)

    def _finish(self, text: str, shown: list[Context], usage: Completion | None, started: float) -> GeneratedAnswer:
        text = text.strip()
        report = check_citations(text, len(shown))
        unknown = is_unknown_answer(text)
        inferred = [] if report.cited or unknown else infer_citations(text, shown)
        return GeneratedAnswer(
            text=text,
            contexts=shown,
            cited=report.cited,
            invalid_citations=report.invalid,
            model_said_unknown=unknown,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            seconds=time.perf_counter() - started,
            generator=self.generator_id,
            prompt_version=PROMPT_VERSION,
            finish_reason=usage.finish_reason if usage else None,
            cached_tokens=usage.cached_tokens if usage else None,
            first_token_seconds=usage.first_token_seconds if usage else None,
            inferred_citations=inferred,
            logprobs=usage.logprobs if usage else None,
        )

    def _run(self, question: str, contexts: Sequence[Context]) -> Generator[str, None, GeneratedAnswer]:
        started = time.perf_counter()
        shown = self._prepare(question, contexts)
        if not shown:  # nothing retrieved: no model call, the fixed abstention
            yield UNKNOWN_ANSWER
            return self._finish(UNKNOWN_ANSWER, shown, None, started)
        if isinstance(self.generator, ExtractiveGenerator):
            text = self.generator.answer(question, shown)
            yield text
            return self._finish(text, shown, None, started)
        deltas: CompletionStream = self.generator.stream(
            build_messages(question, shown),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            timeout_s=self.timeout_s,
        )
        try:
            parts = []
            for delta in deltas:
                parts.append(delta)
                yield delta
        finally:
            deltas.close()
        return self._finish("".join(parts), shown, deltas.result, started)

    def stream(self, question: str, contexts: Sequence[Context]) -> AnswerStream:
        """Text deltas as they are generated; the stream's ``result`` is the full answer afterwards."""
        return AnswerStream(self._run(question, contexts))

    def answer(self, question: str, contexts: Sequence[Context]) -> GeneratedAnswer:
        return self.stream(question, contexts).collect()

    def to_dict(self) -> dict[str, Any]:
        """Run config: which generator and model (with its sha256 where known), prompt and budgets."""
        backend = self.generator.to_dict()
        return {
            "backend": backend["backend"],
            "generator": self.generator_id,
            "model_id": self.generator.model_id,
            "model_sha256": backend.get("model_sha256"),
            "prompt_version": PROMPT_VERSION,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "context_chars": self.context_chars,
            "context_selection": "lexical+embedding" if self.embed else "lexical",
            "timeout_s": self.timeout_s,
            "generator_config": backend,
        }


def make_answerer(settings: Settings, *, embed: EmbedFn | None = None, backend: LLMBackend | None = None) -> Answerer:
    """The answerer named by ``settings.generator``; pass ``backend`` to share an already loaded model."""
    generator: LLMBackend | ExtractiveGenerator
    if settings.generator == "extractive":
        generator = ExtractiveGenerator()
    else:
        generator = backend if backend is not None else make_backend(settings)
    return Answerer(
        generator,
        context_chars=settings.context_chars,
        max_tokens=settings.max_answer_tokens,
        temperature=settings.temperature,
        timeout_s=settings.request_timeout_s if settings.generator == "local" else None,
        embed=embed,
    )
