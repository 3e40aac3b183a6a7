"""End to end: a real index (real embedder, real Chroma), a real HTTP server on 127.0.0.1 speaking the OpenAI
chat-completions protocol (SSE, with logprobs) in place of a remote LLM, and the whole query pipeline.

Whatever the "model" answers, a response with ``abstained: false`` must carry a valid citation with a supporting
quote (an exact span of the chunk text) for every sentence; answers without citations, with a wrong number or with an
invalid ``[n]`` must come back as abstentions with the reason saying why.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ingest.pipeline import IngestionPipeline
from rag.answering.pipeline import ABSTAIN_ANSWER, PipelineResult, QueryPipeline
from rag.indexing.embedding import Embedder
from rag.settings import Settings

DOCS = {
    "printing.md": (
        "# The printing press\n\nJohannes Gutenberg was born in the German city of Mainz around 1400. He trained as "
        "a goldsmith before he turned to printing. His press used movable metal type cast from an alloy of lead, tin "
        "and antimony. Forty-nine copies of his Bible are known to survive.\n"
    ),
    "bees.md": (
        "# Honeybees\n\nA worker bee takes about 21 days to develop from egg to adult. Foragers tell their sisters "
        "where flowers are with the waggle dance, which Karl von Frisch decoded.\n"
    ),
}
QUESTION = "Which city was Johannes Gutenberg born in?"
_SOURCE_HEADER = re.compile(r"^\[(\d+)\][^\n]*\n", re.MULTILINE)


def shown_sources(prompt: str) -> dict[int, str]:
    """The numbered sources in the user message, as the pipeline rendered them."""
    headers = list(_SOURCE_HEADER.finditer(prompt))
    return {
        int(h.group(1)): prompt[h.end() : headers[i + 1].start() if i + 1 < len(headers) else len(prompt)]
        for i, h in enumerate(headers)
    }


def render(template: str, prompt: str) -> str:
    """``{src:WORD}`` = the number of the first shown source containing WORD; ``{invalid}`` = one past the last."""
    sources = shown_sources(prompt)
    text = template.replace("{invalid}", str(max(sources, default=0) + 1))
    return re.sub(r"\{src:([^}]+)\}", lambda m: str(min(n for n, body in sources.items() if m.group(1) in body)), text)


class ScriptedOpenAI(ThreadingHTTPServer):
    """Streams ``template`` (rendered against the prompt it receives) as chat-completion chunks with logprobs."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.template = ""
        self.prompts: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedOpenAI

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _event(self, payload: dict[str, Any] | str) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        self.server.prompts.append(prompt)
        text = render(self.server.template, prompt)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        base = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": int(time.time()), "model": "m"}
        for i, piece in enumerate(re.findall(r"\s*\S+", text)):
            choice: dict[str, Any] = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [{"token": piece, "logprob": -0.05 * (i % 3), "top_logprobs": []}]}
            self._event({**base, "choices": [choice]})
        self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._event({**base, "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 12}})
        self._event("[DONE]")


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedOpenAI]:
    server = ScriptedOpenAI()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def honesty_data(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    corpus = tmp_path_factory.mktemp("honesty-corpus")
    for name, text in DOCS.items():
        (corpus / name).write_text(text)
    data_dir = tmp_path_factory.mktemp("honesty-data")
    summary = IngestionPipeline(Settings(data_dir=data_dir), embedder=embedder, progress=False).run([corpus])
    assert summary.documents_added == 2
    return data_dir


@pytest.fixture
def ask(honesty_data: Path, embedder: Embedder, scripted: ScriptedOpenAI) -> Callable[..., PipelineResult]:
    def run(template: str, question: str = QUESTION, **overrides: Any) -> PipelineResult:
        overrides.setdefault("target_error_rate", 1.0)  # the confidence threshold is part B's, not tested here
        settings = Settings(
            data_dir=honesty_data,
            generator="openai",
            openai_base_url=scripted.base_url,
            openai_model="scripted",
            **overrides,
        )
        scripted.template = template
        return QueryPipeline(settings, embedder=embedder).run(question)

    return run


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        # (a) no citation at all, and no single source holds the claim, so no repair applies
        ("He was born in a large trading town on a river, famous for its wine markets.", "uncited"),
        # (b) a cited sentence with the wrong year
        ("Johannes Gutenberg was born in Mainz around 1450 [{src:Mainz}].", "unsupported"),
        # (c) a citation of a source that was not shown
        ("Johannes Gutenberg was born in Mainz [{invalid}].", "uncited"),
        # (d) a decision the source contradicts: every word is in it, the "no" is not
        ("No, Johannes Gutenberg was not born in Mainz [{src:Mainz}].", "unsupported"),
        # a supported first sentence does not carry an unsupported second one (default policy: abstain)
        ("Gutenberg was born in Mainz [{src:Mainz}]. He later moved to Paris [{src:Mainz}].", "unsupported"),
    ],
)
def test_dishonest_answers_abstain_with_the_reason(
    ask: Callable[..., PipelineResult], template: str, reason: str
) -> None:
    result = ask(template)
    response = result.response
    assert response.abstained is True and response.abstain_reason == reason
    assert response.answer == ABSTAIN_ANSWER and response.citations == [] and response.confidence == 0.0
    assert result.verification is not None and result.verification.final_text is None
    assert result.features["verify.frac_supported"] < 1.0


def test_a_true_fact_about_someone_else_abstains_as_unsupported(ask: Callable[..., PipelineResult]) -> None:
    """The near-miss failure end to end: every word of the answer is in its source, but the source never names
    the person asked about, so the answer is about someone else."""
    question = "In which city was the printer Peter Schoeffer born?"
    result = ask("Mainz [{src:Mainz}].", question, min_rerank_score=-100.0)  # past the weak-retrieval gate
    assert result.response.abstained is True and result.response.abstain_reason == "unsupported"
    assert result.verification is not None and result.verification.subject_missing == ["Peter Schoeffer"]
    assert all(s.supported for s in result.verification.sentences)  # each sentence passed on its own
    asked_about_gutenberg = ask("Mainz [{src:Mainz}].", "In which city was the printer Johannes Gutenberg born?")
    assert asked_about_gutenberg.response.abstained is False


def test_a_decision_a_source_states_is_answered(ask: Callable[..., PipelineResult]) -> None:
    result = ask("Yes, Johannes Gutenberg was born in Mainz [{src:Mainz}].", "Was Johannes Gutenberg born in Mainz?")
    assert result.response.abstained is False and result.response.citations[0].quote is not None
    assert "born in the German city of Mainz" in result.response.citations[0].quote.text


def test_a_supported_answer_returns_quotes_that_are_exact_spans_of_the_chunks(
    ask: Callable[..., PipelineResult],
) -> None:
    result = ask("Johannes Gutenberg was born in Mainz around 1400 [{src:Mainz}].")
    response = result.response
    assert response.abstained is False and response.abstain_reason is None
    assert response.answer.startswith("Johannes Gutenberg was born in Mainz around 1400 [")
    assert len(response.citations) == 1
    citation = response.citations[0]
    assert citation.quote is not None and citation.doc_id == "printing.md"
    assert citation.text[citation.quote.start : citation.quote.end] == citation.quote.text
    assert citation.quote.text == "Johannes Gutenberg was born in the German city of Mainz around 1400."
    stored = {c.chunk_id: c.text for c in result.retrieval.chunks}
    assert stored[citation.chunk_id] == citation.text
    # the features the confidence model reads, logprobs from the OpenAI stream included
    assert result.features["verify.frac_supported"] == 1.0 and "verify.lp_mean" in result.features
    assert "verify.ce_min" in result.features and "retrieval.top_dense" in result.features
    assert response.versions.calibration and response.confidence_meaning
    assert "verification" in response.timings_ms


def test_cut_policy_returns_only_the_supported_sentence(ask: Callable[..., PipelineResult]) -> None:
    result = ask(
        "Gutenberg was born in Mainz [{src:Mainz}]. He later moved to Paris [{src:Mainz}].",
        unsupported_policy="cut",
    )
    response = result.response
    assert response.abstained is False and response.answer.startswith("Gutenberg was born in Mainz [")
    assert "Paris" not in response.answer and all(c.quote is not None for c in response.citations)
    assert result.verification is not None and result.verification.verdict == "cut"


def test_a_wrongly_numbered_but_true_claim_is_recited_to_its_source(ask: Callable[..., PipelineResult]) -> None:
    result = ask("A worker bee takes about 21 days to develop [{src:Gutenberg}].", "How long does a worker bee take?")
    response = result.response
    assert response.abstained is False, result.verification and result.verification.to_dict()
    assert [c.doc_id for c in response.citations] == ["bees.md"]
    assert f"[{response.citations[0].index}]" in response.answer
    assert result.verification is not None and result.verification.features["n_repaired"] == 1.0


def test_the_model_saying_it_does_not_know_is_still_model_unknown(ask: Callable[..., PipelineResult]) -> None:
    response = ask("I don't know based on the provided documents.").response
    assert response.abstained is True and response.abstain_reason == "model_unknown"
