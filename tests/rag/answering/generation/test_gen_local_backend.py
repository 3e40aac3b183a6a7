"""LocalBackend (xllamacpp) with the tiny SmolLM2 model, model assembly, backend selection, and one slow test
with the default Qwen2.5-Coder-1.5B answering from a two-chunk context."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rag.answering.generation.answerer import make_answerer
from rag.answering.generation.backends import (
    DEFAULT_GGUF_NAME,
    DEFAULT_GGUF_SHA256,
    LLMBackend,
    LocalBackend,
    assemble_default_model,
    assemble_parts,
    make_backend,
    smollm2_path,
)
from rag.answering.generation.prompt import PROMPT_VERSION, UNKNOWN_ANSWER
from rag.errors import ConfigError, GenerationTimeoutError, ModelError
from rag.hashing import file_sha256
from rag.settings import Settings

STORY = [{"role": "user", "content": "Write one sentence about a lighthouse keeper."}]


def test_greedy_generation_is_deterministic(smol: LocalBackend) -> None:
    assert isinstance(smol, LLMBackend)
    first = smol.chat(STORY, max_tokens=24)
    second = smol.chat(STORY, max_tokens=24)
    assert first.text and first.text == second.text
    assert first.prompt_tokens and first.prompt_tokens > 5
    assert first.completion_tokens and 0 < first.completion_tokens <= 24
    assert first.finish_reason in {"stop", "length"} and first.model == "SmolLM2-135M-Instruct.Q4_1"


def test_streaming_yields_the_same_text_as_chat(smol: LocalBackend) -> None:
    stream = smol.stream(STORY, max_tokens=24)
    deltas = list(stream)
    assert len(deltas) > 1
    assert stream.result is not None
    assert "".join(deltas) == stream.result.text == smol.chat(STORY, max_tokens=24).text
    # and the same as llama.cpp's own non-streaming response for the same request
    plain = smol._server.handle_chat_completions(
        {"messages": STORY, "max_tokens": 24, "temperature": 0.0, "seed": smol.seed, "cache_prompt": False}
    )
    assert plain["choices"][0]["message"]["content"] == stream.result.text


def test_json_schema_output_parses(smol: LocalBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population_known": {"type": "boolean"}},
        "required": ["city", "population_known"],
    }
    messages = [{"role": "user", "content": "Name the capital of France as JSON."}]
    completion = smol.chat(messages, max_tokens=40, json_schema=schema)
    data = json.loads(completion.text)
    assert isinstance(data["city"], str) and isinstance(data["population_known"], bool)


def test_closing_a_stream_early_frees_the_model(smol: LocalBackend) -> None:
    stream = smol.stream(STORY, max_tokens=32)
    next(stream)
    stream.close()
    assert smol.chat(STORY, max_tokens=4).completion_tokens == 4  # the lock was released


def test_concurrent_calls_are_serialised_and_identical(smol: LocalBackend) -> None:
    results: list[str] = []

    def worker() -> None:
        results.append(smol.chat(STORY, max_tokens=12).text)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 3 and len(set(results)) == 1


def test_deadline_stops_generation(smol: LocalBackend) -> None:
    with pytest.raises(GenerationTimeoutError, match="did not finish within"):
        smol.chat(STORY, max_tokens=200, timeout_s=0.001)
    assert smol.chat(STORY, max_tokens=3).text  # still usable afterwards


def test_a_prompt_larger_than_the_context_is_a_model_error() -> None:
    small = LocalBackend(smollm2_path(), context=512)
    with pytest.raises(ModelError, match="exceeds the available context size"):
        small.chat([{"role": "user", "content": "word " * 1200}], max_tokens=4)


def test_bad_messages_and_missing_files_fail_clearly(smol: LocalBackend, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="non-empty list"):
        smol.chat([])
    with pytest.raises(ConfigError, match="does not exist"):
        LocalBackend(tmp_path / "missing.gguf")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    with pytest.raises(ModelError, match="cannot load GGUF model"):
        LocalBackend(broken).load()


def test_answerer_with_the_local_model_fills_every_field(
    smol: LocalBackend, contexts_for: Any, make_settings: Callable[..., Settings]
) -> None:
    answerer = make_answerer(
        make_settings(generator="local", max_answer_tokens=24, context_chars=400), backend=smol
    )
    contexts = contexts_for("c-config", "c-backup", "c-history")
    result = answerer.answer("What is the default port?", contexts)
    assert result.text and result.prompt_tokens and result.completion_tokens
    assert result.generator == "local:SmolLM2-135M-Instruct.Q4_1" and result.prompt_version == PROMPT_VERSION
    assert sum(len(c.text) for c in result.contexts) <= 400
    assert {c.chunk_id for c in result.contexts} <= {"c-config", "c-backup", "c-history"}
    assert all(1 <= n <= len(result.contexts) for n in result.cited)
    streamed = answerer.stream("What is the default port?", contexts)
    assert "".join(streamed) == result.text and streamed.result is not None
    assert streamed.result.text == result.text  # same config, same answer
    nothing = answerer.answer("What is the default port?", [])
    assert nothing.text == UNKNOWN_ANSWER and nothing.model_said_unknown and nothing.prompt_tokens is None
    config = answerer.to_dict()
    assert config["model_sha256"] == file_sha256(smollm2_path())
    assert (config["prompt_version"], config["max_tokens"], config["context_chars"]) == (PROMPT_VERSION, 24, 400)


def test_parts_are_joined_in_order_and_a_wrong_hash_leaves_nothing(tmp_path: Path) -> None:
    parts = []
    for i, payload in enumerate([b"first-", b"second-", b"third"]):
        parts.append(tmp_path / f"part{i}.bin")
        parts[-1].write_bytes(payload)
    good = hashlib.sha256(b"first-second-third").hexdigest()
    target = assemble_parts(parts, tmp_path / "models" / "joined.gguf", good)
    assert target.read_bytes() == b"first-second-third"
    with pytest.raises(ModelError, match=r"expected 0{64}"):
        assemble_parts(parts, tmp_path / "models" / "other.gguf", "0" * 64)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["joined.gguf"]


def test_make_backend_follows_settings(make_settings: Callable[..., Settings]) -> None:
    local = make_backend(make_settings(generator="local", generator_model_path=smollm2_path()))
    assert isinstance(local, LocalBackend) and not local.loaded and local.cache_prompt is False
    default = make_backend(make_settings(generator="local"))
    assert isinstance(default, LocalBackend) and default.model_id == DEFAULT_GGUF_NAME.removesuffix(".gguf")
    assert default.sha256 == DEFAULT_GGUF_SHA256 and not default.loaded  # nothing assembled or loaded yet
    with pytest.raises(ConfigError, match="no LLM backend"):
        make_backend(make_settings(generator="extractive"))


@pytest.mark.slow
def test_default_qwen_model_answers_with_a_citation(models_dir: Path, contexts_for: Any) -> None:
    path = assemble_default_model(models_dir)
    assert file_sha256(path) == DEFAULT_GGUF_SHA256
    settings = Settings(data_dir=models_dir.parent, generator="local", generator_model_path=path, context_chars=1000)
    answerer = make_answerer(settings)
    contexts = contexts_for("c-config", "c-backup")
    result = answerer.answer("What is the default HTTP port of Quillstream?", contexts)
    assert "7420" in result.text and not result.model_said_unknown
    assert result.cited_chunk_ids == ["c-config"] and not result.invalid_citations
    off = answerer.answer("Which cloud providers does Quillstream integrate with?", contexts)
    assert off.model_said_unknown
