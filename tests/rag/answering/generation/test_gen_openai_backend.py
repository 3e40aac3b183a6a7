"""OpenAIBackend against a real loopback HTTP server speaking the chat-completions protocol (JSON and SSE)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from rag.answering.generation.answerer import make_answerer
from rag.answering.generation.backends import LLMBackend, OpenAIBackend, make_backend
from rag.errors import ConfigError, GenerationTimeoutError, ModelError
from rag.settings import Settings

KEY = "sk-test-very-secret-0123"
MESSAGES = [{"role": "user", "content": "Which port?"}]


def backend_for(server: Any, model: str = "ok", **kwargs: Any) -> OpenAIBackend:
    kwargs.setdefault("timeout_s", 5.0)
    return OpenAIBackend(server.base_url, model, api_key=KEY, **kwargs)


def test_chat_returns_text_usage_and_sends_the_openai_request(fake_openai: Any) -> None:
    backend = backend_for(fake_openai, temperature=0.0, max_tokens=77, seed=7)
    assert isinstance(backend, LLMBackend)
    completion = backend.chat(MESSAGES)
    assert completion.text == fake_openai.reply
    assert (completion.prompt_tokens, completion.completion_tokens) == (42, 9)
    assert completion.finish_reason == "stop" and completion.model == "ok" and completion.seconds > 0
    sent = fake_openai.requests[-1]
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["body"]["messages"] == MESSAGES
    assert (sent["body"]["max_tokens"], sent["body"]["temperature"], sent["body"]["seed"]) == (77, 0.0, 7)
    assert sent["body"]["stream"] is False and "response_format" not in sent["body"]


def test_stream_yields_deltas_that_add_up_to_the_chat_text(fake_openai: Any) -> None:
    backend = backend_for(fake_openai)
    stream = backend.stream(MESSAGES, max_tokens=5)
    deltas = list(stream)
    assert len(deltas) > 1
    assert "".join(deltas) == backend.chat(MESSAGES).text
    assert stream.result is not None
    assert stream.result.text == "".join(deltas)
    assert stream.result.prompt_tokens == 42 and stream.result.finish_reason == "stop"
    sent = [r["body"] for r in fake_openai.requests if r["body"].get("stream")][-1]
    assert sent["stream_options"] == {"include_usage": True}


def test_json_schema_is_sent_as_response_format(fake_openai: Any) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    completion = backend_for(fake_openai).chat(MESSAGES, json_schema=schema)
    assert json.loads(completion.text)["answer"] == "7420"
    sent = fake_openai.requests[-1]["body"]
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


@pytest.mark.parametrize("streaming", [False, True])
def test_http_errors_name_url_and_status_but_never_the_key(fake_openai: Any, streaming: bool) -> None:
    backend = backend_for(fake_openai, "fail-500")
    with pytest.raises(ModelError) as caught:
        if streaming:
            list(backend.stream(MESSAGES))
        else:
            backend.chat(MESSAGES)
    message = str(caught.value)
    assert f"{fake_openai.base_url}/chat/completions" in message and "HTTP 500" in message
    assert "upstream exploded" in message
    assert KEY not in message and "***" in message


@pytest.mark.parametrize("streaming", [False, True])
def test_a_hanging_server_times_out(fake_openai: Any, streaming: bool) -> None:
    backend = backend_for(fake_openai, "hang", timeout_s=0.5)
    started = time.perf_counter()
    with pytest.raises(GenerationTimeoutError, match=r"did not answer within 0\.5s"):
        if streaming:
            list(backend.stream(MESSAGES))
        else:
            backend.chat(MESSAGES)
    assert time.perf_counter() - started < 5


def test_an_error_event_mid_stream_is_a_model_error(fake_openai: Any) -> None:
    stream = backend_for(fake_openai, "sse-error").stream(MESSAGES)
    received: list[str] = []
    with pytest.raises(ModelError, match="model crashed mid-stream"):
        for delta in stream:
            received.append(delta)
    assert received  # the deltas before the error were delivered


def test_an_unreachable_server_is_a_model_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "ok", api_key=KEY, timeout_s=2)
    with pytest.raises(ModelError, match=rf"cannot reach http://127.0.0.1:{port}/v1/chat/completions") as caught:
        backend.chat(MESSAGES)
    assert KEY not in str(caught.value)


def test_settings_pick_the_openai_backend_and_the_answerer_parses_its_citations(
    fake_openai: Any, make_settings: Callable[..., Settings], contexts_for: Any
) -> None:
    settings = make_settings(
        generator="openai", openai_base_url=fake_openai.base_url, openai_model="ok", openai_api_key=KEY
    )
    backend = make_backend(settings)
    assert isinstance(backend, OpenAIBackend) and backend.model_id == "ok"
    answerer = make_answerer(settings, backend=backend)
    result = answerer.answer("What is the default port?", contexts_for("c-config", "c-backup"))
    assert result.text == fake_openai.reply and result.cited == [1] and result.cited_chunk_ids == ["c-config"]
    assert result.generator == "openai:ok" and result.prompt_tokens == 42
    sent = fake_openai.requests[-1]["body"]["messages"]
    assert sent[0]["role"] == "system" and "[1] Configuring Quillstream" in sent[1]["content"]
    config = answerer.to_dict()
    assert config["backend"] == "openai" and KEY not in json.dumps(config)


def test_missing_url_or_bad_url_is_a_config_error(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="RAG_OPENAI_BASE_URL"):
        make_backend(make_settings(generator="openai"))
    with pytest.raises(ConfigError, match="http"):
        OpenAIBackend("localhost:8000/v1", "m")
