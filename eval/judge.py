"""RAGAS scored by our own LLM backend: faithfulness, answer relevancy, context precision, context recall.

Why an adapter instead of ``evaluate()``: ``evaluate()`` turns every failure into an anonymous NaN. Here each
(sample, metric) is scored on its own with ragas' legacy metric classes (``single_turn_ascore``), so a failure
keeps its reason in an error column, a NaN is counted apart from a score, and each verdict can be cached.

Robustness, in layers:
- ``BackendRagasLLM`` is a ``BaseRagasLLM`` around ``rag.answering.generation.backends.LLMBackend``: every ragas prompt
  states its output's JSON schema, which the adapter lifts out of the prompt and passes as ``json_schema``
  (llama.cpp grammar locally, ``response_format`` for OpenAI servers), so the judge can only emit valid JSON.
  A server that rejects the schema is retried once without it, and the schema is not sent again.
- Calls that fail or time out (``ModelError``, incl. ``GenerationTimeoutError``) are retried
  ``judge_retries`` times (ragas' tenacity wrapper, short waits); each call has ``judge_timeout_s``.
- Output that still does not parse goes through ragas' own fix-the-format prompt, then counts as an error.
- One (sample, metric) may take at most ``METRIC_CALLS_BUDGET`` call time-outs in total.
- Deterministic: temperature 0 for every call (ragas asks for 0.01/0.3), one generation per answer-relevancy
  question (``strictness=1``: the backend protocol has no per-call seed, so more would be identical copies).
- Cost: metric by metric over all rows, so consecutive prompts share that metric's instructions, and a local
  model reuses their KV cache (``judge_cache_prompt``).

Cache: verdicts are stored in sqlite under ``data_dir/eval/judge-cache.sqlite`` keyed by (metric, hash of the
fields that metric reads, judge id); errors are not cached, so a rerun retries exactly the failures.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rag.answering.generation.backends import DEFAULT_GGUF_NAME, LLMBackend, LocalBackend, OpenAIBackend
from rag.errors import ConfigError, GenerationTimeoutError, ModelError
from rag.indexing.embedding import Embedder
from rag.settings import Settings

log = logging.getLogger(__name__)

ADAPTER_VERSION = "judge-v1"
JUDGE_METRICS = ("faithfulness", "answer_relevancy", "context_precision", "context_recall")
METRIC_CALLS_BUDGET = 4  # timeouts per (sample, metric): faithfulness needs 2 calls, plus format fixes
_SCHEMA_MARKER = "following schema as specified in JSON Schema:\n"
_FINISHED = {None, "stop", "eos", "eos_token", "STOP", "end_turn"}
Status = Literal["ok", "nan", "error", "n/a"]

# Which sample fields each metric reads (the cache key hashes only these).
METRIC_FIELDS: dict[str, tuple[str, ...]] = {
    "faithfulness": ("question", "answer", "contexts"),
    "answer_relevancy": ("question", "answer"),
    "context_precision": ("question", "contexts", "reference"),
    "context_recall": ("question", "contexts", "reference"),
}


def extract_schema(prompt: str) -> dict[str, Any] | None:
    """The JSON schema a ragas ``PydanticPrompt`` embeds in its text, or None."""
    start = prompt.find(_SCHEMA_MARKER)
    if start < 0:
        return None
    try:
        schema, _ = json.JSONDecoder().raw_decode(prompt, start + len(_SCHEMA_MARKER))
    except ValueError:
        return None
    return schema if isinstance(schema, dict) else None


@dataclass
class MetricUsage:
    """Cost of one metric over the run: LLM calls, tokens, seconds, cache hits and outcomes."""

    calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_seconds: float = 0.0
    seconds: float = 0.0
    scored: int = 0
    cached: int = 0
    ok: int = 0
    nan: int = 0
    errors: int = 0
    not_applicable: int = 0

    @property
    def attempted(self) -> int:
        return self.ok + self.nan + self.errors

    def count(self, status: Status) -> None:
        if status == "ok":
            self.ok += 1
        elif status == "nan":
            self.nan += 1
        elif status == "error":
            self.errors += 1
        else:
            self.not_applicable += 1

    @property
    def failure_rate(self) -> float:
        """(errors + NaN verdicts) / attempted; NaN when nothing was attempted."""
        return (self.errors + self.nan) / self.attempted if self.attempted else math.nan

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["attempted"] = self.attempted
        data["failure_rate"] = self.failure_rate
        return data


class UsageMeter:
    """Counts LLM calls per metric; the judge sets ``current`` before scoring a metric (one at a time)."""

    def __init__(self) -> None:
        self.current = "unattributed"
        self.by_metric: dict[str, MetricUsage] = {}
        self._lock = threading.Lock()

    def usage(self, metric: str | None = None) -> MetricUsage:
        return self.by_metric.setdefault(metric or self.current, MetricUsage())

    def record_call(self, prompt_tokens: int | None, completion_tokens: int | None, seconds: float) -> None:
        with self._lock:
            usage = self.usage()
            usage.calls += 1
            usage.prompt_tokens += prompt_tokens or 0
            usage.completion_tokens += completion_tokens or 0
            usage.llm_seconds += seconds

    def record_failure(self, seconds: float) -> None:
        with self._lock:
            usage = self.usage()
            usage.calls += 1
            usage.failed_calls += 1
            usage.llm_seconds += seconds


def _ragas_base() -> tuple[type, type, type]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ragas.embeddings.base import BaseRagasEmbeddings
        from ragas.llms.base import BaseRagasLLM
        from ragas.run_config import RunConfig
    return BaseRagasLLM, BaseRagasEmbeddings, RunConfig


def make_ragas_llm(
    backend: LLMBackend,
    *,
    max_tokens: int,
    timeout_s: float,
    retries: int,
    meter: UsageMeter,
    seed: int = 42,
    use_schema: bool = True,
) -> Any:
    """A ``BaseRagasLLM`` that sends ragas' prompts to ``backend`` (defined lazily: ragas imports slowly).

    Over 80 lines because it is one class body: the class can only be defined after the lazy ragas import.
    """
    base_llm, _, run_config_cls = _ragas_base()
    from langchain_core.outputs import Generation, LLMResult

    class BackendRagasLLM(base_llm):  # type: ignore[misc, valid-type]
        """ragas → ``LLMBackend.chat``: one user message, schema-constrained, temperature 0, usage metered."""

        def __init__(self) -> None:
            super().__init__(run_config=self.run_config_for())
            self.backend = backend
            self.max_tokens = max_tokens
            self.timeout_s = timeout_s
            self.meter = meter
            self.use_schema = use_schema

        @staticmethod
        def run_config_for() -> Any:
            return run_config_cls(
                timeout=int(timeout_s * METRIC_CALLS_BUDGET),
                max_retries=retries + 1,  # tenacity counts attempts
                max_wait=2,
                max_workers=1,
                exception_types=(ModelError,),
                seed=seed,
            )

        def set_run_config(self, run_config: Any) -> None:  # metrics pass theirs; ours carries the retry policy
            self.run_config = self.run_config_for()

        def get_temperature(self, n: int) -> float:
            return 0.0

        def is_finished(self, response: Any) -> bool:
            return all(
                (g.generation_info or {}).get("finish_reason") in _FINISHED
                for gens in response.generations
                for g in gens
            )

        def _chat(self, text: str, temperature: float | None) -> Any:
            messages = [{"role": "user", "content": text}]
            schema = extract_schema(text) if self.use_schema else None
            started = time.perf_counter()
            try:
                completion = self.backend.chat(
                    messages,
                    max_tokens=self.max_tokens,
                    temperature=0.0,  # greedy whatever ragas asks for: reproducible, cacheable verdicts
                    json_schema=schema,
                    timeout_s=self.timeout_s,
                )
            except GenerationTimeoutError:
                self.meter.record_failure(time.perf_counter() - started)
                raise
            except ModelError as exc:
                self.meter.record_failure(time.perf_counter() - started)
                if schema is not None and "HTTP 400" in str(exc):  # a server without structured output
                    log.warning("judge server rejected the JSON schema; continuing without it: %s", exc)
                    self.use_schema = False
                    return self._chat(text, temperature)
                raise
            self.meter.record_call(
                completion.prompt_tokens, completion.completion_tokens, time.perf_counter() - started
            )
            return completion

        def generate_text(
            self, prompt: Any, n: int = 1, temperature: float | None = 0.0, stop: Any = None, callbacks: Any = None
        ) -> Any:
            completions = [self._chat(prompt.to_string(), temperature) for _ in range(n)]
            return self._result(completions)

        async def agenerate_text(
            self, prompt: Any, n: int = 1, temperature: float | None = 0.0, stop: Any = None, callbacks: Any = None
        ) -> Any:
            text = prompt.to_string()
            completions = [await asyncio.to_thread(self._chat, text, temperature) for _ in range(n)]
            return self._result(completions)

        @staticmethod
        def _result(completions: Sequence[Any]) -> Any:
            return LLMResult(
                generations=[
                    [Generation(text=c.text, generation_info={"finish_reason": c.finish_reason}) for c in completions]
                ]
            )

        def __repr__(self) -> str:
            return f"BackendRagasLLM({backend.model_id})"

    return BackendRagasLLM()


def make_ragas_embeddings(embedder: Embedder) -> Any:
    """ragas embeddings backed by our ``Embedder`` (the bundled default encoder, offline).

    Symmetric on purpose: ragas compares a question with questions generated from the answer (answer relevancy),
    so both sides are embedded as plain text, without the retrieval query prefix that ``embed_query`` adds for
    asymmetric encoders such as bge-small.
    """
    _, base_embeddings, run_config_cls = _ragas_base()

    class EmbedderRagasEmbeddings(base_embeddings):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.run_config = run_config_cls(max_retries=1)

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [list(map(float, row)) for row in embedder.embed(list(texts))]

        def embed_query(self, text: str) -> list[float]:
            return [float(x) for x in embedder.embed([text])[0]]

        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            return await asyncio.to_thread(self.embed_documents, texts)

        async def aembed_query(self, text: str) -> list[float]:
            return await asyncio.to_thread(self.embed_query, text)

    return EmbedderRagasEmbeddings()


class JudgeCache:
    """Verdicts on disk (sqlite): key = sha256(metric, sample-fields hash, judge id) → value (NULL = NaN)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, metric TEXT NOT NULL, "
                "judge_id TEXT NOT NULL, value REAL, created REAL NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    @staticmethod
    def key(metric: str, sample_hash: str, judge_id: str) -> str:
        return hashlib.sha256(json.dumps([metric, sample_hash, judge_id]).encode()).hexdigest()

    def get(self, key: str) -> tuple[bool, float]:
        with self._connect() as db:
            row = db.execute("SELECT value FROM verdicts WHERE key = ?", (key,)).fetchone()
        if row is None:
            return False, math.nan
        return True, math.nan if row[0] is None else float(row[0])

    def put(self, key: str, metric: str, judge_id: str, value: float) -> None:
        stored = None if not math.isfinite(value) else float(value)
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO verdicts (key, metric, judge_id, value, created) VALUES (?, ?, ?, ?, ?)",
                (key, metric, judge_id, stored, time.time()),
            )

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])


@dataclass(frozen=True)
class JudgeInput:
    """What the judge sees of one evaluated sample."""

    question: str
    answer: str | None
    contexts: list[str]
    reference: str | None
    abstained: bool = False

    def applicable(self, metric: str) -> bool:
        """Faithfulness and relevancy judge an answer (not an abstention); context metrics need a reference."""
        if metric in ("faithfulness", "answer_relevancy"):
            has_context = bool(self.contexts) or metric == "answer_relevancy"
            return bool(self.answer) and not self.abstained and has_context
        return bool(self.reference) and bool(self.contexts)

    def fields_hash(self, metric: str) -> str:
        payload = {name: getattr(self, name) for name in METRIC_FIELDS[metric]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass
class Verdict:
    value: float
    status: Status
    error: str | None = None
    seconds: float = 0.0
    cached: bool = False


@dataclass
class JudgeReport:
    """Per-metric verdicts (one per input, in order) and cost."""

    verdicts: dict[str, list[Verdict]]
    usage: dict[str, MetricUsage] = field(default_factory=dict)
    judge_id: str = ""


def describe_error(exc: BaseException, timeout_s: float, max_tokens: int) -> str:
    """A short, stable reason for the error column."""
    name = type(exc).__name__
    if isinstance(exc, GenerationTimeoutError | asyncio.TimeoutError | TimeoutError):
        return f"timeout: judge call exceeded {timeout_s:g}s ({exc})"[:300]
    if name == "LLMDidNotFinishException":
        return f"truncated: judge output hit judge_max_tokens={max_tokens}"
    if name in {"RagasOutputParserException", "OutputParserException", "ValidationError", "JSONDecodeError"}:
        return f"unparseable: judge output is not valid JSON for the verdict schema ({name})"
    if isinstance(exc, ModelError):
        return f"model_error: {exc}"[:300]
    return f"{name}: {exc}"[:300]


class RagasJudge:
    """Scores ``JudgeInput`` rows with the four RAGAS metrics through one ``LLMBackend``."""

    def __init__(
        self,
        backend: LLMBackend,
        embedder: Embedder,
        *,
        cache: JudgeCache | None = None,
        timeout_s: float = 180.0,
        retries: int = 1,
        max_tokens: int = 512,
        seed: int = 42,
        cache_prompt: bool = True,
    ) -> None:
        self.backend = backend
        self.embedder = embedder
        self.cache_prompt = cache_prompt
        self.cache = cache
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_tokens = max_tokens
        self.seed = seed
        self.meter = UsageMeter()
        self._llm: Any = None
        self._metrics: dict[str, Any] = {}

    @property
    def judge_id(self) -> str:
        """Identifies the verdicts: model (and its hash), decoding, ragas and adapter versions."""
        info = self.backend.to_dict()
        sha = str(info.get("model_sha256") or "")[:12]
        try:
            from importlib.metadata import version

            ragas_version = version("ragas")
        except Exception:  # pragma: no cover - ragas is a dependency
            ragas_version = "unknown"
        config = f"t0-max{self.max_tokens}-s1-ragas{ragas_version}-{ADAPTER_VERSION}"
        return f"{info.get('backend')}:{self.backend.model_id}{'@' + sha if sha else ''}:{config}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "judge_id": self.judge_id,
            "backend": self.backend.to_dict(),
            "timeout_s": self.timeout_s,
            "retries": self.retries,
            "max_tokens": self.max_tokens,
            "metrics": list(JUDGE_METRICS),
            "embeddings": self.embedder.name,
            "strictness": 1,
            "temperature": 0.0,
            "cache_prompt": self.cache_prompt,
        }

    def _metric(self, name: str) -> Any:
        if name in self._metrics:
            return self._metrics[name]
        if self._llm is None:
            self._llm = make_ragas_llm(
                self.backend,
                max_tokens=self.max_tokens,
                timeout_s=self.timeout_s,
                retries=self.retries,
                meter=self.meter,
                seed=self.seed,
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from ragas.metrics import (
                Faithfulness,
                LLMContextPrecisionWithReference,
                LLMContextRecall,
                ResponseRelevancy,
            )
        if name == "faithfulness":
            metric = Faithfulness(llm=self._llm)
        elif name == "answer_relevancy":
            metric = ResponseRelevancy(llm=self._llm, embeddings=make_ragas_embeddings(self.embedder), strictness=1)
        elif name == "context_precision":
            metric = LLMContextPrecisionWithReference(llm=self._llm)
        elif name == "context_recall":
            metric = LLMContextRecall(llm=self._llm)
        else:
            raise ConfigError(f"unknown judge metric {name!r}", hint=f"choose from {', '.join(JUDGE_METRICS)}")
        metric.init(self._llm.run_config)
        self._metrics[name] = metric
        return metric

    async def _score_one(self, metric_name: str, row: JudgeInput) -> Verdict:
        from ragas.dataset_schema import SingleTurnSample

        metric = self._metric(metric_name)
        sample = SingleTurnSample(
            user_input=row.question,
            response=row.answer,
            retrieved_contexts=list(row.contexts),
            reference=row.reference,
        )
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = await metric.single_turn_ascore(sample, timeout=self.timeout_s * METRIC_CALLS_BUDGET)
        except Exception as exc:
            log.info("judge %s failed: %s", metric_name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return Verdict(
                math.nan, "error", describe_error(exc, self.timeout_s, self.max_tokens), time.perf_counter() - started
            )
        value = float(value) if value is not None else math.nan
        if not math.isfinite(value):
            return Verdict(math.nan, "nan", "undetermined: the judge returned no verdict (NaN)",
                           time.perf_counter() - started)
        return Verdict(float(np.clip(value, 0.0, 1.0)), "ok", None, time.perf_counter() - started)

    def score(
        self,
        rows: Sequence[JudgeInput],
        metrics: Sequence[str] = JUDGE_METRICS,
        *,
        progress: Callable[[str, int], Any] | None = None,
    ) -> JudgeReport:
        """Score every row with every metric, metric by metric (consecutive prompts share a cached prefix)."""
        unknown = [m for m in metrics if m not in JUDGE_METRICS]
        if unknown:
            raise ConfigError(f"unknown judge metrics {unknown}", hint=f"choose from {', '.join(JUDGE_METRICS)}")
        judge_id = self.judge_id
        verdicts: dict[str, list[Verdict]] = {}

        async def run_all() -> None:
            for name in metrics:
                self.meter.current = name
                usage = self.meter.usage(name)
                results: list[Verdict] = []
                bar = progress(f"judge {name}", len(rows)) if progress else None
                for row in rows:
                    tick = time.perf_counter()
                    if not row.applicable(name):
                        usage.not_applicable += 1
                        results.append(Verdict(math.nan, "n/a"))
                    else:
                        key = JudgeCache.key(name, row.fields_hash(name), judge_id)
                        hit, cached_value = self.cache.get(key) if self.cache is not None else (False, math.nan)
                        if hit:
                            usage.cached += 1
                            status: Status = "ok" if math.isfinite(cached_value) else "nan"
                            error = None if status == "ok" else "undetermined: the judge returned no verdict (NaN)"
                            verdict = Verdict(cached_value, status, error, 0.0, cached=True)
                        else:
                            verdict = await self._score_one(name, row)
                            usage.scored += 1
                            if self.cache is not None and verdict.status in ("ok", "nan"):
                                self.cache.put(key, name, judge_id, verdict.value)
                        usage.count(verdict.status)
                        results.append(verdict)
                    usage.seconds += time.perf_counter() - tick
                    if bar is not None:
                        bar.update(1)
                if bar is not None:
                    bar.close()
                verdicts[name] = results

        # Verdict prompts of one metric share long instructions: a local model reuses their KV cache. The
        # generator may run without it (bit-exact answers); the judge switches it on for its own calls only.
        previous = getattr(self.backend, "cache_prompt", None)
        if isinstance(self.backend, LocalBackend):
            self.backend.cache_prompt = self.cache_prompt
        try:
            asyncio.run(run_all())
        finally:
            if isinstance(self.backend, LocalBackend) and previous is not None:
                self.backend.cache_prompt = previous
        return JudgeReport(verdicts=verdicts, usage=dict(self.meter.by_metric), judge_id=judge_id)


def make_judge_backend(settings: Settings, kind: str, *, share: LLMBackend | None = None) -> LLMBackend:
    """The judge's backend: ``local`` (a GGUF; reuses ``share`` when it is the same local model) or ``openai``."""
    if kind == "openai":
        base_url = settings.judge_base_url or settings.openai_base_url
        if not base_url:
            raise ConfigError(
                "the openai judge needs a server URL", hint="set RAG_JUDGE_BASE_URL or RAG_OPENAI_BASE_URL"
            )
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIBackend(
            base_url,
            settings.judge_model or settings.openai_model,
            api_key=key,
            timeout_s=settings.judge_timeout_s,
            temperature=0.0,
            max_tokens=settings.judge_max_tokens,
            seed=settings.seed,
        )
    if kind != "local":
        raise ConfigError(f"unknown judge {kind!r}", hint="use local, openai or none")
    wanted = settings.judge_model_path or settings.generator_model_path
    if isinstance(share, LocalBackend) and _same_model(share, wanted):
        return share  # one copy of the model in memory: answers first, then verdicts
    return LocalBackend(
        wanted,
        models_dir=settings.models_dir,
        threads=settings.generator_threads,
        context=settings.generator_context,
        seed=settings.seed,
        temperature=0.0,
        max_tokens=settings.judge_max_tokens,
    )


def _same_model(backend: LocalBackend, wanted: Path | None) -> bool:
    if wanted is None:
        return backend.model_id == DEFAULT_GGUF_NAME.removesuffix(".gguf")
    return backend.model_path is not None and backend.model_path.resolve() == Path(wanted).resolve()
