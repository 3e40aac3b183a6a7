"""Token log-probabilities: the local backend (xllamacpp) returns them per generated token, and they line up with
the text, so the answer verifier can read each sentence's mean and minimum."""

from __future__ import annotations

from rag.answering.generation.answerer import Answerer
from rag.answering.generation.backends import LocalBackend
from rag.answering.verify import AnswerVerifier, token_spans
from tests.rag.answering.generation.conftest import make_contexts


def test_local_completion_carries_one_logprob_per_token_that_rebuild_the_text(smol: LocalBackend) -> None:
    completion = smol.chat([{"role": "user", "content": "Say hello to Mara."}], max_tokens=12)
    assert completion.logprobs is not None and len(completion.logprobs) == completion.completion_tokens
    assert "".join(token for token, _ in completion.logprobs) == completion.text
    assert all(logprob <= 0.0 for _, logprob in completion.logprobs)


def test_answers_carry_logprobs_into_the_verification_features(smol: LocalBackend) -> None:
    answer = Answerer(smol, max_tokens=24).answer("What port does Quillstream listen on?", make_contexts("c-config"))
    assert answer.logprobs and token_spans(answer) is not None
    report = AnswerVerifier().run(answer, {})
    assert report.features["lp_min"] <= report.features["lp_mean"] <= 0.0
