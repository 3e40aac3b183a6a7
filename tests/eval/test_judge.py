"""The RAGAS judge path against a real HTTP server speaking the OpenAI chat-completions protocol.

The server (tests/eval/conftest.py) returns valid verdicts, malformed JSON, time-outs, a transient HTTP 500,
truncated output and empty statement lists; the judge must keep each outcome apart: scores, an error column,
NaN counted as undetermined and excluded from means, retries and the on-disk cache.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from eval.judge import JudgeCache, JudgeInput, RagasJudge, extract_schema
from eval.runner import summarize
from rag.answering.generation.backends import OpenAIBackend
from rag.indexing.embedding import Embedder
from tests.eval.conftest import JudgeServer

CONTEXT = ["Paris is the capital of France."]
# Markers steer the server; each is in the question and the answer (answer relevancy sees only the answer).
ROWS = {
    "valid": JudgeInput("What is the capital of France?", "Paris is the capital of France [1].", CONTEXT, "Paris."),
    "malformed": JudgeInput("MALFORMED capital?", "MALFORMED Paris [1].", CONTEXT, "Paris."),
    "slow": JudgeInput("SLOW capital?", None, CONTEXT, "Paris.", abstained=True),
    "flaky": JudgeInput("FLAKY capital of France?", "FLAKY Paris is the capital [1].", CONTEXT, "Paris."),
    "empty": JudgeInput("EMPTY capital?", "Paris [1].", CONTEXT, "Paris."),
    "truncate": JudgeInput("TRUNCATE capital?", "TRUNCATE Paris [1].", CONTEXT, "Paris."),
    "not_applicable": JudgeInput("Anything?", "I don't know.", [], None, abstained=True),
}


def make_judge(server: JudgeServer, embedder: Embedder, cache: JudgeCache) -> RagasJudge:
    backend = OpenAIBackend(server.url, "fake-judge", timeout_s=1.0, max_tokens=64)
    return RagasJudge(backend, embedder, cache=cache, timeout_s=1.0, retries=1, max_tokens=64)


def test_schema_is_lifted_from_ragas_prompts() -> None:
    prompt = 'Do X.\nfollowing schema as specified in JSON Schema:\n{"properties": {"a": {"type": "integer"}}}Do not'
    assert extract_schema(prompt) == {"properties": {"a": {"type": "integer"}}}
    assert extract_schema("no schema here") is None


def test_judge_outcomes_errors_nan_retries_and_cache(
    judge_server: JudgeServer, embedder: Embedder, tmp_path: Path
) -> None:
    cache = JudgeCache(tmp_path / "cache.sqlite")
    judge = make_judge(judge_server, embedder, cache)
    names = list(ROWS)
    report = judge.score(list(ROWS.values()))
    v = {metric: dict(zip(names, verdicts, strict=True)) for metric, verdicts in report.verdicts.items()}

    # valid verdicts become scores (hand-checkable: every verdict is 1, the generated question is the question)
    assert v["faithfulness"]["valid"].value == 1.0
    assert v["answer_relevancy"]["valid"].value == pytest.approx(1.0, abs=1e-3)
    assert v["context_precision"]["valid"].value == pytest.approx(1.0)
    assert v["context_recall"]["valid"].value == 1.0
    # every prompt was sent with the verdict's JSON schema (constrained output)
    assert all(r["response_format"]["type"] == "json_schema" for r in judge_server.requests)

    for metric in v:  # malformed JSON, even after ragas' fix-the-format prompts: an error, with its reason
        assert v[metric]["malformed"].status == "error" and math.isnan(v[metric]["malformed"].value)
        assert "unparseable" in (v[metric]["malformed"].error or "")
        assert v[metric]["truncate"].status == "error" and "truncated" in (v[metric]["truncate"].error or "")
        assert v[metric]["flaky"].status == "ok"  # HTTP 500 once, then retried
        assert v[metric]["not_applicable"].status == "n/a"
    for metric in ("context_precision", "context_recall"):  # time-outs: retried once, then an error
        assert v[metric]["slow"].status == "error" and "timeout" in (v[metric]["slow"].error or "")
    assert v["faithfulness"]["slow"].status == "n/a"  # an abstention has no answer to judge
    assert judge_server.by_marker["SLOW"] == 4  # 2 metrics x (1 try + 1 retry)
    assert judge_server.by_marker["FLAKY"] >= 5  # the 500, its retry, and the other metrics' calls

    # NaN (no statements) is undetermined: counted apart from errors, and excluded from the mean
    assert v["faithfulness"]["empty"].status == "nan" and math.isnan(v["faithfulness"]["empty"].value)
    usage = report.usage["faithfulness"].to_dict()
    assert (usage["ok"], usage["nan"], usage["errors"], usage["not_applicable"]) == (2, 1, 2, 2)
    assert usage["failure_rate"] == pytest.approx(3 / 5)
    assert usage["calls"] > 0 and usage["prompt_tokens"] > 0
    summary = summarize(np.array([x.value for x in report.verdicts["faithfulness"]]), n_resamples=200, seed=0)
    assert summary.value == 1.0 and summary.n == 2 and summary.n_missing == 5

    # a rerun pays only for what failed: ok and NaN verdicts come from the cache
    before = dict(judge_server.by_marker)
    again = make_judge(judge_server, embedder, cache).score(list(ROWS.values()))
    w = {metric: dict(zip(names, verdicts, strict=True)) for metric, verdicts in again.verdicts.items()}
    assert judge_server.by_marker["VALID"] == before["VALID"]
    assert w["faithfulness"]["valid"].cached and w["faithfulness"]["valid"].value == 1.0
    assert w["faithfulness"]["empty"].cached and w["faithfulness"]["empty"].status == "nan"
    assert judge_server.by_marker["MALFORMED"] > before["MALFORMED"]  # errors are not cached
    assert again.usage["context_recall"].cached == 3  # valid, flaky, empty
